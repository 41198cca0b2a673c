//! Models on disk that several commands load or write: resolving the RAE location flags,
//! DiT-DH checkpoints (ours or the reference's), the decoder file, and decoding latents to
//! images. Commands import these from here, so no lower module depends on a command.

use std::path::Path;

use rae_core::models::{DitDh, Rae, RaeDecoder};
use rae_core::nn::{save_module, Init};
use rae_core::{Backend, Tensor};

use crate::ckpt::save_safetensors;
use crate::errors::{CliError, CliResult, Context};
use crate::files::{load_tensor_file, TensorFile};
use crate::image_io::from_chw;
use crate::presets::{self, RaePaths};

/// Resolves `--rae`, `--encoder`, `--decoder`, ... with `default_dir` as the fallback folder.
pub fn resolve_rae(r: &crate::cli::RaeArgs, default_dir: Option<&Path>) -> CliResult<RaePaths> {
    let dir = r.rae.clone().or_else(|| default_dir.map(Path::to_path_buf));
    let mut p = match &dir {
        Some(d) => RaePaths::in_dir(d),
        None => {
            let enc = r
                .encoder
                .clone()
                .ok_or_else(|| CliError::new("give --rae DIR or --encoder DIR"))?;
            RaePaths {
                encoder: enc,
                decoder: r.decoder.clone().unwrap_or_default(),
                decoder_config: None,
                stats: None,
                encoder_input_size: None,
            }
        }
    };
    if let Some(e) = &r.encoder {
        p.encoder = e.clone();
    }
    if let Some(d) = &r.decoder {
        p.decoder = d.clone();
    }
    if r.decoder_config.is_some() {
        p.decoder_config = r.decoder_config.clone();
    }
    if let Some(s) = &r.stats {
        p.stats = Some(s.clone());
    }
    if r.encoder_input_size.is_some() {
        p.encoder_input_size = r.encoder_input_size;
    }
    Ok(p)
}

/// Writes a decoder with its configuration in the metadata.
pub fn save_decoder<B: Backend>(b: &B, dec: &RaeDecoder<B>, path: &Path) -> CliResult<()> {
    let tensors = save_module(b, dec)?;
    let cfg = dec.config.to_json().to_json_string()?;
    save_safetensors(
        path,
        &tensors,
        &[
            ("format".into(), "rae-decoder".into()),
            ("config".into(), cfg),
        ],
    )
}

/// Decodes latents to RGB images.
pub fn decode_images<B: Backend>(
    b: &B,
    rae: &Rae<B>,
    z: &Tensor<B>,
) -> CliResult<Vec<image::RgbImage>> {
    let img = rae.decode(b, z)?;
    let d = img.dims().to_vec();
    let host = b.download(&img)?;
    let per = 3 * d[2] * d[3];
    Ok((0..d[0])
        .map(|i| from_chw(&host[i * per..(i + 1) * per], d[2], d[3]))
        .collect())
}

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
        (_, Some(m)) if m.ends_with(".json") => rae_core::models::DitConfig::from_json(&crate::files::load_json(Path::new(m))?, m)?,
        (Some(text), None) => {
            let v = rae_core::json::parse_named(text, &format!("{source} (metadata config)"))?;
            let m = v.get("model").cloned().unwrap_or(v);
            rae_core::models::DitConfig::from_json(&m, &source)?
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
    cfg: rae_core::models::DitConfig,
) -> CliResult<DitDh<B>> {
    let weights = crate::files::pick_weights(&f.tensors, true);
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
    let (names, file): (Vec<String>, _) = match crate::files::safetensors_header(path) {
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
pub fn load_dit_with<B: Backend>(
    b: &B,
    path: &Path,
    cfg: rae_core::models::DitConfig,
) -> CliResult<DitDh<B>> {
    dit_from_file(b, &load_tensor_file(path)?, path, cfg)
}
