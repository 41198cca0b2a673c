//! A RAE on disk: the layout of a RAE folder, and loading and saving its encoder, decoder
//! and latent statistics.
//!
//! A RAE folder holds `encoder/config.json` + `encoder/model.safetensors` (a HuggingFace
//! DINOv2-with-registers, SigLIP or MAE folder), `decoder.safetensors` (or `.pt`) with its
//! configuration in the metadata key `config` or in `decoder_config.json`, and
//! `stats.safetensors` (or the reference `stat.pt`) with `mean` and `var`. A diffusers
//! `AutoencoderRAE` folder is accepted in its place ([`super::diffusers`]).

use std::path::{Path, PathBuf};

use rae_core::models::{DecoderConfig, Encoder, LatentStats, Rae, RaeDecoder};
use rae_core::nn::{save_module, HostTensor, HostTensors, Init};
use rae_core::Backend;

use super::atomic::save_safetensors;
use super::tensor_file::{load_json, load_tensor_file, pick_weights};
use crate::errors::{CliError, CliResult, Context};
use crate::presets::{assemble_rae, decoder_config, STATS_EPS};

/// Where the parts of a RAE are.
#[derive(Debug, Clone, PartialEq)]
pub struct RaePaths {
    /// HuggingFace encoder folder (`config.json`, `model.safetensors`).
    pub encoder: PathBuf,
    /// Decoder weights.
    pub decoder: PathBuf,
    /// Decoder configuration: a JSON file, a preset name (`B`, `L`, `XL`), or `None` to
    /// read it from the weights' metadata.
    pub decoder_config: Option<String>,
    /// Latent statistics (`None`: latents are not normalised).
    pub stats: Option<PathBuf>,
    /// Encoder input size (224 for DINOv2 at 256²).
    pub encoder_input_size: Option<usize>,
}

impl RaePaths {
    /// The standard layout of a RAE folder.
    pub fn in_dir(dir: &Path) -> Self {
        if super::diffusers::is_diffusers_dir(dir) {
            let weights = dir.join(super::diffusers::WEIGHTS);
            return RaePaths {
                encoder: dir.to_path_buf(),
                decoder: weights.clone(),
                decoder_config: None,
                stats: Some(weights),
                encoder_input_size: None,
            };
        }
        let pick = |names: &[&str]| -> PathBuf {
            names
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.exists())
                .unwrap_or_else(|| dir.join(names[0]))
        };
        let stats = pick(&["stats.safetensors", "stat.pt"]);
        RaePaths {
            encoder: dir.join("encoder"),
            decoder: pick(&["decoder.safetensors", "decoder.pt", "model.pt"]),
            decoder_config: None,
            stats: Some(stats),
            encoder_input_size: None,
        }
    }
}

/// Loads the encoder folder, of the family its `config.json` names (DINOv2 with registers,
/// SigLIP/SigLIP2 or MAE; see [`super::encoders`]).
pub fn load_encoder<B: Backend>(b: &B, dir: &Path) -> CliResult<Encoder<B>> {
    if super::diffusers::is_diffusers_dir(dir) {
        return super::diffusers::load_diffusers_encoder(b, dir);
    }
    super::encoders::load_encoder_dir(b, dir)
}

/// Loads decoder weights and configuration (`config`: a `--decoder-config` value; else the
/// weights' metadata, else `decoder_config.json` beside them).
pub fn load_decoder<B: Backend>(
    b: &B,
    path: &Path,
    config: Option<&str>,
) -> CliResult<RaeDecoder<B>> {
    let file = load_tensor_file(path)?;
    let source = path.display().to_string();
    let cfg = match config {
        Some(spec) => decoder_config(spec)?,
        None => match file.meta("config") {
            Some(text) => {
                let v = rae_core::json::parse_named(text, &format!("{source} (metadata config)"))?;
                let v = v.get("decoder").cloned().unwrap_or(v);
                DecoderConfig::from_json(&v, &source)?
            }
            None => {
                let side = path.with_file_name("decoder_config.json");
                if side.exists() {
                    DecoderConfig::from_json(&load_json(&side)?, &side.display().to_string())?
                } else {
                    return Err(CliError::new(format!(
                        "{source} carries no decoder configuration: pass --decoder-config (a config.json or B, L, XL)"
                    )));
                }
            }
        },
    };
    let weights = pick_weights(&file.tensors, true);
    rae_core::limits::check_params_against_file(&source, cfg.min_params(), weights.total_values())?;
    let mut dec = RaeDecoder::new(b, &mut Init::new(0), cfg)?;
    dec.load(b, &weights)
        .context(format!("loading the decoder from {source}"))?;
    Ok(dec)
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

/// Loads `mean`/`var` statistics (safetensors or the reference `stat.pt`).
pub fn load_stats<B: Backend>(b: &B, path: &Path) -> CliResult<LatentStats<B>> {
    let file = load_tensor_file(path)?;
    let get = |k: &str| {
        file.tensors.get(k).ok_or_else(|| {
            CliError::new(format!(
                "the statistics file {} has no tensor {k:?}",
                path.display()
            ))
        })
    };
    let (mean, var) = (get("mean")?, get("var")?);
    LatentStats::new(b, &mean.data, &var.data, STATS_EPS)
        .context(format!("statistics {}", path.display()))
}

/// Writes `mean` and `var` of shape `[C, h, w]`.
pub fn save_stats(path: &Path, mean: &[f32], var: &[f32], dims: [usize; 3]) -> CliResult<()> {
    let mut t = HostTensors::new();
    t.insert("mean", HostTensor::new(dims.to_vec(), mean.to_vec())?);
    t.insert("var", HostTensor::new(dims.to_vec(), var.to_vec())?);
    save_safetensors(path, &t, &[("format".into(), "rae-stats".into())])
}

/// Loads a RAE from its parts.
pub fn load_rae<B: Backend>(b: &B, paths: &RaePaths) -> CliResult<Rae<B>> {
    // A diffusers AutoencoderRAE folder holds all three parts in one file.
    let weights = paths.encoder.join(super::diffusers::WEIGHTS);
    if paths.decoder == weights && super::diffusers::is_diffusers_dir(&paths.encoder) {
        let mut rae =
            super::diffusers::load_diffusers_rae(b, &paths.encoder, paths.encoder_input_size)?;
        if let Some(p) = paths.stats.as_ref().filter(|p| **p != weights) {
            rae.stats = Some(load_stats(b, p)?);
            crate::presets::check_rae(&rae)?;
        }
        return Ok(rae);
    }
    let encoder = load_encoder(b, &paths.encoder)?;
    let decoder = load_decoder(b, &paths.decoder, paths.decoder_config.as_deref())?;
    let stats = match &paths.stats {
        Some(p) if p.exists() => Some(load_stats(b, p)?),
        Some(p) => {
            return Err(CliError::new(format!(
                "latent statistics {} not found (compute them with `rae-cli stats`)",
                p.display()
            )))
        }
        None => None,
    };
    assemble_rae(encoder, decoder, stats, paths.encoder_input_size)
}
