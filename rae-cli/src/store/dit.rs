//! DiT-DH weights on disk: checkpoints written by `train` (EMA weights preferred, the
//! configuration in the metadata) or the reference's weights with an explicit
//! configuration, and the training checkpoints a run resumes from.

use std::path::Path;

use rae_core::models::{DitConfig, DitDh};
use rae_core::nn::Init;
use rae_core::train::TrainCheckpoint;
use rae_core::Backend;

use super::tensor_file::{
    load_json, load_tensor_file, pick_weights, safetensors_header, TensorFile,
};
use crate::errors::{CliError, CliResult, Context};
use crate::presets;

/// Loads a DiT checkpoint written by `train` (EMA weights preferred), or reference weights
/// with an explicit configuration.
pub fn load_dit<B: Backend>(
    b: &B,
    path: &Path,
    model: Option<&str>,
    latent: [usize; 3],
    classes: Option<usize>,
) -> CliResult<DitDh<B>> {
    load_dit_from(b, &load_tensor_file(path)?, path, model, latent, classes)
}

/// [`load_dit`] from a file already read from `path`.
pub fn load_dit_from<B: Backend>(
    b: &B,
    f: &TensorFile,
    path: &Path,
    model: Option<&str>,
    latent: [usize; 3],
    classes: Option<usize>,
) -> CliResult<DitDh<B>> {
    let source = path.display().to_string();
    let cfg = match (f.meta("config"), model) {
        (_, Some(m)) if m.ends_with(".json") => {
            DitConfig::from_json(&load_json(Path::new(m))?, m)?
        }
        (Some(text), None) => {
            let v = rae_core::json::parse_named(text, &format!("{source} (metadata config)"))?;
            let m = v.get("model").cloned().unwrap_or(v);
            DitConfig::from_json(&m, &source)?
        }
        (_, Some(name)) => {
            let classes = classes.unwrap_or(1000);
            presets::dit_preset(name, latent, classes)?
        }
        (None, None) => {
            return Err(CliError::new(format!(
                "{source} carries no model configuration: pass --model (a DiT config .json, or S, B, L, XL)"
            )))
        }
    };
    dit_from_file(b, f, path, cfg)
}

/// A DiT-DH of configuration `cfg` with the weights of `f` (read from `path`; the EMA half
/// when the file holds both).
pub fn dit_from_file<B: Backend>(
    b: &B,
    f: &TensorFile,
    path: &Path,
    cfg: DitConfig,
) -> CliResult<DitDh<B>> {
    let weights = pick_weights(&f.tensors, true);
    rae_core::limits::check_params_against_file(
        &path.display().to_string(),
        cfg.min_params(),
        weights.total_values(),
    )?;
    let mut m = DitDh::new(b, &mut Init::new(0), cfg)?;
    m.load(b, &weights)
        .context(format!("loading {}", path.display()))?;
    Ok(m)
}

/// An error unless `path` holds DiT weights (`t_embedder.W`, possibly under `ema.` or
/// `model.`), naming the file and what it holds instead. A safetensors file is checked by
/// its header alone; any other file has to be read whole, and is returned so that the
/// caller does not read it again.
pub fn check_dit_checkpoint(path: &Path) -> CliResult<Option<TensorFile>> {
    let (names, file): (Vec<String>, _) = match safetensors_header(path) {
        Some((names, _)) => (names, None),
        None => {
            let f = load_tensor_file(path)?;
            (f.tensors.names().map(str::to_string).collect(), Some(f))
        }
    };
    let has = ["t_embedder.W", "ema.t_embedder.W", "model.t_embedder.W"]
        .iter()
        .any(|n| names.iter().any(|m| m == n));
    if !has {
        return Err(CliError::new(format!(
            "{} is not a DiT-DH checkpoint: it has no t_embedder.W (its {} tensors include {})",
            path.display(),
            names.len(),
            names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(file)
}

/// Loads DiT weights (`.safetensors` or `.pt`; the `ema` half of a training checkpoint when
/// present, §3.8) into a model of the explicit configuration `cfg`.
pub fn load_dit_with<B: Backend>(b: &B, path: &Path, cfg: DitConfig) -> CliResult<DitDh<B>> {
    dit_from_file(b, &load_tensor_file(path)?, path, cfg)
}

/// The metadata of a safetensors checkpoint, from its header alone; `None` for a `.pt` file
/// or an unreadable header.
pub fn checkpoint_metadata(path: &Path) -> Option<Vec<(String, String)>> {
    safetensors_header(path).map(|(_, meta)| meta)
}

/// Reads the training checkpoint at `path` (to resume from).
pub fn read_train_checkpoint(path: &Path) -> CliResult<TrainCheckpoint> {
    let f = load_tensor_file(path)?;
    Ok(TrainCheckpoint {
        tensors: f.tensors,
        metadata: f.metadata,
    })
}
