//! diffusers' `AutoencoderRAE` folders (`config.json` whose `_class_name` is
//! `AutoencoderRAE`, and `diffusion_pytorch_model.safetensors` holding the encoder under
//! `encoder.`, the decoder under `decoder.`, `encoder_mean`/`encoder_std` and
//! `_latents_mean`/`_latents_std`), read as a RAE here and written by `export` below.
//!
//! What differs from a RAE folder of ours:
//!
//! - The encoder is built from four numbers (`encoder_type`, `encoder_hidden_size`,
//!   `encoder_patch_size`, `encoder_num_hidden_layers`) with heads of width 64 and
//!   transformers' defaults otherwise; `encoder_type` is `dinov2` (DINOv2 with registers),
//!   `siglip2` (a SigLIP vision tower) or `mae` (see [`encoders`] for each, and for the
//!   parameter names of transformers 4 and 5).
//! - The decoder attention is diffusers' `Attention`: `to_q`, `to_k`, `to_v`, `to_out.0`;
//!   LayerNorm eps 1e-12, exact GELU, as ours.
//! - Latents: `z' = (z − mean)/(std + 1e-5) · scaling_factor` (ours, §2.4:
//!   `(z − mean)/sqrt(var + eps)`); read here as `eps = 0`, `var = ((std + 1e-5)/s)²`, which
//!   gives back the same denominator `std + 1e-5` exactly (a square root of a rounded square
//!   is the number itself). Encoding runs in eval mode: `noise_tau` adds nothing.
//! - Image mean/std come from `encoder_norm_mean`/`encoder_norm_std` (ImageNet by default).
//!
pub mod encoders;
mod export;

use std::path::{Path, PathBuf};

use rae_core::json::JsonValue;
use rae_core::models::{Cfg, DecoderConfig, Encoder, LatentStats, Rae, RaeDecoder};
use rae_core::nn::{HostTensor, HostTensors, Init};
use rae_core::Backend;

pub use export::save_diffusers_rae;

use super::tensor_file::{load_json, load_tensor_file};
use crate::errors::{CliError, CliResult, Context};
use crate::presets::assemble_rae;
use crate::store::encoders::EncoderConfig;

/// The weights file of a diffusers model folder.
pub const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
/// diffusers' constant inside the latent denominator `std + 1e-5`.
pub const STD_EPS: f32 = 1e-5;
/// The attention head width diffusers builds every encoder with.
pub const HEAD_DIM: usize = 64;

/// Decoder attention names: ours and diffusers' `Attention`.
const DECODER_ATTN: [(&str, &str); 4] = [
    ("attention.attention.query.", "attention.to_q."),
    ("attention.attention.key.", "attention.to_k."),
    ("attention.attention.value.", "attention.to_v."),
    ("attention.output.dense.", "attention.to_out.0."),
];

/// Renames `t` with `(ours, theirs)` pairs in the direction `to_theirs`.
fn rename(t: HostTensors, table: &[(&str, &str)], to_theirs: bool) -> CliResult<HostTensors> {
    let mut out = HostTensors::new();
    for (name, v) in t.iter() {
        let mut n = name.to_string();
        for (ours, theirs) in table {
            let (from, to) = if to_theirs {
                (ours, theirs)
            } else {
                (theirs, ours)
            };
            n = n.replace(from, to);
        }
        out.insert(n, HostTensor::new(v.shape.clone(), v.data.clone())?);
    }
    Ok(out)
}

/// The grid size at which diffusers' decoder position table equals ours (its `base_size`).
pub const POS_BASE: usize = 16;

/// diffusers' decoder position table `[1 + g², cd]` (a zero CLS row, then the sin-cos table
/// of §2.6.3 at positions scaled by `16/g`): ours when `g = 16`, another table otherwise.
pub fn diffusers_pos_table(cd: usize, g: usize) -> Vec<f32> {
    let k = cd / 4;
    let scale = POS_BASE as f64 / g as f64;
    let mut out = vec![0.0f32; (1 + g * g) * cd];
    for i in 0..g {
        for j in 0..g {
            let row = &mut out[(1 + i * g + j) * cd..(2 + i * g + j) * cd];
            for (half, pos) in [(0usize, j as f64 * scale), (1, i as f64 * scale)] {
                for kk in 0..k {
                    let a = pos / 10000f64.powf(kk as f64 / k as f64);
                    row[half * 2 * k + kk] = a.sin() as f32;
                    row[half * 2 * k + k + kk] = a.cos() as f32;
                }
            }
        }
    }
    out
}

/// Whether `dir` is a diffusers `AutoencoderRAE` folder (its `config.json` says so).
pub fn is_diffusers_dir(dir: &Path) -> bool {
    let path = dir.join("config.json");
    path.is_file()
        && load_json(&path).is_ok_and(|v| {
            v.get("_class_name").and_then(JsonValue::as_str) == Some("AutoencoderRAE")
        })
}

/// The settings of an `AutoencoderRAE` that matter at inference.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusersConfig {
    /// The encoder configuration diffusers builds (of its `encoder_type`).
    pub encoder: EncoderConfig,
    /// The decoder configuration.
    pub decoder: DecoderConfig,
    /// Square encoder input size.
    pub encoder_input_size: usize,
    /// Image mean of the encoder input and the decoder output.
    pub image_mean: [f32; 3],
    /// Image std of the encoder input and the decoder output.
    pub image_std: [f32; 3],
    /// Latents are multiplied by this after normalisation.
    pub scaling_factor: f32,
}

impl DiffusersConfig {
    /// Reads an `AutoencoderRAE` `config.json` (`source` names it in errors).
    pub fn from_json(v: &JsonValue, source: &str) -> CliResult<Self> {
        let c = Cfg::new(v, source)?;
        let bad = |k: &str, why: String| CliError::new(format!("{source}: {k}: {why}"));
        let class = c.str_or("_class_name", "")?;
        if class != "AutoencoderRAE" {
            return Err(bad(
                "_class_name",
                format!("{class:?} is not a diffusers AutoencoderRAE"),
            ));
        }
        let kind = c.str_or("encoder_type", "dinov2")?;
        if !encoders::ENCODER_TYPES.contains(&kind) {
            return Err(bad(
                "encoder_type",
                format!(
                    "{kind:?} is not supported (one of {:?})",
                    encoders::ENCODER_TYPES
                ),
            ));
        }
        if !c.bool_or("reshape_to_2d", true)? {
            return Err(bad(
                "reshape_to_2d",
                "false (token-shaped latents) is not supported".into(),
            ));
        }
        if c.usize_or("num_channels", 3)? != 3 {
            return Err(bad("num_channels", "only 3 (RGB) is supported".into()));
        }
        let hidden = c.usize_or("encoder_hidden_size", 768)?;
        if hidden == 0 || !hidden.is_multiple_of(HEAD_DIM) {
            return Err(bad(
                "encoder_hidden_size",
                format!("{hidden} is not a positive multiple of diffusers' head width {HEAD_DIM}"),
            ));
        }
        let patch = c.usize_or("encoder_patch_size", 14)?;
        let input = c.usize_or("encoder_input_size", 224)?;
        if patch == 0 || input == 0 || !input.is_multiple_of(patch) {
            return Err(bad(
                "encoder_input_size",
                format!("{input} is not a positive multiple of encoder_patch_size {patch}"),
            ));
        }
        let layers = c.usize_or("encoder_num_hidden_layers", 12)?;
        let encoder = encoders::encoder_config(kind, hidden, patch, layers, source)?;
        let grid = input / patch;
        let dec_patch = c.usize_or("patch_size", 16)?;
        let image_size = dec_patch
            .checked_mul(grid)
            .ok_or_else(|| bad("patch_size", format!("{dec_patch} × {grid} overflows")))?;
        if c.has("image_size") && c.usize("image_size")? != image_size {
            let given = c.usize("image_size")?;
            return Err(bad(
                "image_size",
                format!("{given} is not patch_size × encoder grid = {dec_patch} × {grid} = {image_size}"),
            ));
        }
        let decoder = DecoderConfig {
            hidden_size: hidden,
            decoder_hidden_size: c.usize_or("decoder_hidden_size", 512)?,
            decoder_num_hidden_layers: c.usize_or("decoder_num_hidden_layers", 8)?,
            decoder_num_attention_heads: c.usize_or("decoder_num_attention_heads", 16)?,
            decoder_intermediate_size: c.usize_or("decoder_intermediate_size", 2048)?,
            patch_size: dec_patch,
            image_size,
            layer_norm_eps: 1e-12,
            num_channels: 3,
        };
        decoder.validate(&format!("{source} (decoder_*)"))?;
        let triple = |k: &str, default: [f32; 3]| -> CliResult<[f32; 3]> {
            let Some(x) = v.get(k).filter(|x| !x.is_null()) else {
                return Ok(default);
            };
            let vals: Option<Vec<f32>> = x.as_array().and_then(|a| {
                a.iter()
                    .map(|e| e.as_f64().map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
            });
            match vals.as_deref() {
                Some(&[a, b, c]) if [a, b, c].iter().all(|x| x.is_finite()) => Ok([a, b, c]),
                _ => Err(bad(k, "expected a list of three finite numbers".into())),
            }
        };
        let image_mean = triple("encoder_norm_mean", rae_core::models::rae::IMAGENET_MEAN)?;
        let image_std = triple("encoder_norm_std", rae_core::models::rae::IMAGENET_STD)?;
        if let Some(i) = image_std.iter().position(|s| *s == 0.0) {
            return Err(bad("encoder_norm_std", format!("entry {i} is zero")));
        }
        let scaling_factor = c.f64_or("scaling_factor", 1.0)? as f32;
        if !scaling_factor.is_finite() || scaling_factor == 0.0 {
            return Err(bad(
                "scaling_factor",
                format!("{scaling_factor} is not a finite non-zero number"),
            ));
        }
        Ok(DiffusersConfig {
            encoder,
            decoder,
            encoder_input_size: input,
            image_mean,
            image_std,
            scaling_factor,
        })
    }

    /// Latent shape `[C, h, w]`.
    pub fn latent_dims(&self) -> [usize; 3] {
        let (c, p) = self.encoder.dims();
        let g = self.encoder_input_size / p;
        [c, g, g]
    }
}

/// A diffusers folder read from disk: its configuration and weights.
struct Folder {
    cfg: DiffusersConfig,
    config_json: JsonValue,
    weights: HostTensors,
    weights_path: PathBuf,
}

fn read_folder(dir: &Path) -> CliResult<Folder> {
    let path = dir.join("config.json");
    let config_json = load_json(&path)?;
    let cfg = DiffusersConfig::from_json(&config_json, &path.display().to_string())?;
    let weights_path = dir.join(WEIGHTS);
    if !weights_path.is_file() {
        return Err(CliError::new(format!(
            "the diffusers AutoencoderRAE folder {} has no {WEIGHTS}",
            dir.display()
        )));
    }
    let weights = load_tensor_file(&weights_path)?.tensors;
    Ok(Folder {
        cfg,
        config_json,
        weights,
        weights_path,
    })
}

fn encoder_of<B: Backend>(b: &B, f: &Folder) -> CliResult<Encoder<B>> {
    let source = f.weights_path.display().to_string();
    let tensors = f.weights.sub("encoder.");
    rae_core::limits::check_params_against_file(
        &format!("{source} (encoder.*)"),
        encoders::min_params(&f.cfg.encoder),
        tensors.total_values(),
    )?;
    encoders::load_encoder(b, &f.cfg.encoder, &tensors, &source)
}

fn decoder_of<B: Backend>(b: &B, f: &Folder) -> CliResult<RaeDecoder<B>> {
    let source = f.weights_path.display().to_string();
    let mut tensors = rename(f.weights.sub("decoder."), &DECODER_ATTN, false)?;
    let cfg = f.cfg.decoder.clone();
    // diffusers recomputes its table (a saved one is ignored); away from a 16×16 grid it is
    // not ours, so it is given to the decoder here.
    tensors.remove("decoder_pos_embed");
    let (cd, g) = (cfg.decoder_hidden_size, cfg.grid());
    if g != POS_BASE && cd.is_multiple_of(4) {
        tensors.insert(
            "decoder_pos_embed",
            HostTensor::new(vec![1, 1 + g * g, cd], diffusers_pos_table(cd, g))?,
        );
    }
    rae_core::limits::check_params_against_file(
        &format!("{source} (decoder.*)"),
        cfg.min_params(),
        tensors.total_values(),
    )?;
    let mut dec = RaeDecoder::new(b, &mut Init::new(0), cfg)?;
    dec.load(b, &tensors)
        .context(format!("loading the decoder (decoder.*) from {source}"))?;
    Ok(dec)
}

/// A latent statistic as `[C·h·w]` values: the tensor `name` of the weights, else the
/// config's list `key`, else `default` everywhere; broadcast as PyTorch would against
/// `[B, C, h, w]`.
fn statistic(f: &Folder, name: &str, key: &str, default: f32) -> CliResult<Vec<f32>> {
    let dims = f.cfg.latent_dims();
    let n: usize = dims.iter().product();
    let (shape, data, what) = match f.weights.get(name) {
        Some(t) => (
            t.shape.clone(),
            t.data.clone(),
            format!("{} tensor {name}", f.weights_path.display()),
        ),
        None => match f.config_json.get(key).filter(|x| !x.is_null()) {
            Some(v) => {
                let (shape, data) = nested_list(v).ok_or_else(|| {
                    CliError::new(format!(
                        "config.json: {key}: expected a (nested) list of numbers"
                    ))
                })?;
                (shape, data, format!("config.json {key}"))
            }
            None => return Ok(vec![default; n]),
        },
    };
    broadcast(&shape, &data, dims).ok_or_else(|| {
        CliError::new(format!(
            "{what} has shape {shape:?}, which does not broadcast to the latents [B, {}, {}, {}]",
            dims[0], dims[1], dims[2]
        ))
    })
}

/// A rectangular nested JSON list → shape and values.
fn nested_list(v: &JsonValue) -> Option<(Vec<usize>, Vec<f32>)> {
    if let Some(x) = v.as_f64() {
        return Some((Vec::new(), vec![x as f32]));
    }
    let items = v.as_array()?;
    let mut shape = None;
    let mut data = Vec::new();
    for it in items {
        let (s, d) = nested_list(it)?;
        if shape.get_or_insert_with(|| s.clone()) != &s {
            return None;
        }
        data.extend(d);
    }
    let mut out = vec![items.len()];
    out.extend(shape.unwrap_or_default());
    Some((out, data))
}

/// Broadcasts `data` of `shape` to `[C, h, w]` (a leading batch axis of 1 allowed).
fn broadcast(shape: &[usize], data: &[f32], dims: [usize; 3]) -> Option<Vec<f32>> {
    if shape.len() > 4 || shape.iter().product::<usize>() != data.len() {
        return None;
    }
    let mut s = vec![1usize; 4 - shape.len()];
    s.extend_from_slice(shape);
    let full = [1, dims[0], dims[1], dims[2]];
    if s.iter().zip(full).any(|(&a, b)| a != 1 && a != b) {
        return None;
    }
    let idx = |k: usize, i: usize| if s[k] == 1 { 0 } else { i };
    let mut out = Vec::with_capacity(dims.iter().product());
    for c in 0..dims[0] {
        for y in 0..dims[1] {
            for x in 0..dims[2] {
                out.push(data[(idx(1, c) * s[2] + idx(2, y)) * s[3] + idx(3, x)]);
            }
        }
    }
    Some(out)
}

fn stats_of<B: Backend>(b: &B, f: &Folder) -> CliResult<LatentStats<B>> {
    let mean = statistic(f, "_latents_mean", "latents_mean", 0.0)?;
    let std = statistic(f, "_latents_std", "latents_std", 1.0)?;
    let sf = f.cfg.scaling_factor;
    let mut var = Vec::with_capacity(std.len());
    for (i, s) in std.iter().enumerate() {
        let mut d = s + STD_EPS;
        if sf != 1.0 {
            d /= sf;
        }
        if !(d.is_finite() && d > 0.0) {
            return Err(CliError::new(format!(
                "{}: latents std[{i}] = {s} gives the denominator {d}, not a positive finite number",
                f.weights_path.display()
            )));
        }
        var.push(d * d);
    }
    LatentStats::new(b, &mean, &var, 0.0)
        .context(format!("latent statistics of {}", f.weights_path.display()))
}

/// The image mean or std diffusers uses: its buffer `name` (`[1, 3, 1, 1]`, saved with the
/// weights and loaded over the config's value), else `config` (`encoder_norm_*`).
fn image_stat(f: &Folder, name: &str, config: [f32; 3]) -> CliResult<[f32; 3]> {
    let Some(t) = f.weights.get(name) else {
        return Ok(config);
    };
    match t.data.as_slice() {
        &[a, b, c] if [a, b, c].iter().all(|x| x.is_finite()) => Ok([a, b, c]),
        _ => Err(CliError::new(format!(
            "{}: {name} has shape {:?}; expected three finite values",
            f.weights_path.display(),
            t.shape
        ))),
    }
}

/// Loads the encoder of a diffusers `AutoencoderRAE` folder.
pub fn load_diffusers_encoder<B: Backend>(b: &B, dir: &Path) -> CliResult<Encoder<B>> {
    encoder_of(b, &read_folder(dir)?)
}

/// Loads a diffusers `AutoencoderRAE` folder as a RAE (`encoder_input_size`: an override of
/// the config's).
pub fn load_diffusers_rae<B: Backend>(
    b: &B,
    dir: &Path,
    encoder_input_size: Option<usize>,
) -> CliResult<Rae<B>> {
    let f = read_folder(dir)?;
    let encoder = encoder_of(b, &f)?;
    let decoder = decoder_of(b, &f)?;
    let stats = stats_of(b, &f)?;
    let input = encoder_input_size.unwrap_or(f.cfg.encoder_input_size);
    let mut rae = assemble_rae(encoder, decoder, Some(stats), Some(input))?;
    rae.image_mean = image_stat(&f, "encoder_mean", f.cfg.image_mean)?;
    rae.image_std = image_stat(&f, "encoder_std", f.cfg.image_std)?;
    if let Some(i) = rae.image_std.iter().position(|s| *s == 0.0) {
        return Err(CliError::new(format!(
            "{}: encoder_std[{i}] is zero",
            f.weights_path.display()
        )));
    }
    Ok(rae)
}
