//! Model presets and how a RAE (encoder + decoder + statistics) is found on disk.
//!
//! A RAE folder holds `encoder/config.json` + `encoder/model.safetensors` (a HuggingFace
//! DINOv2-with-registers, SigLIP or MAE folder), `decoder.safetensors` (or `.pt`) with its
//! configuration in the metadata key `config` or in `decoder_config.json`, and
//! `stats.safetensors` (or the reference `stat.pt`) with `mean` and `var`.

use std::path::{Path, PathBuf};

use rae_core::models::{
    DecoderConfig, Dinov2Config, DitConfig, Encoder, LatentStats, Rae, RaeDecoder,
};
use rae_core::nn::{Init, Module};
use rae_core::Backend;

use crate::errors::{CliError, CliResult, Context};
use crate::files::{load_json, load_tensor_file, pick_weights};

/// The tiny encoder of the built-in default: DINOv2-style, 32×32 input, patch 4 (8×8
/// tokens), width 32, one layer, 4 registers. Random and frozen (seeded).
pub fn tiny_encoder() -> Dinov2Config {
    Dinov2Config {
        hidden_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        mlp_ratio: 2.0,
        patch_size: 4,
        image_size: 32,
        num_register_tokens: 4,
        layer_norm_eps: 1e-6,
        layerscale_value: 0.1,
        act: rae_core::Unary::GeluErf,
    }
}

/// The tiny decoder of the built-in default: width 64, 2 layers, patch 4, 32×32 output.
pub fn tiny_decoder() -> DecoderConfig {
    DecoderConfig {
        hidden_size: 32,
        decoder_hidden_size: 64,
        decoder_num_hidden_layers: 2,
        decoder_num_attention_heads: 4,
        decoder_intermediate_size: 128,
        patch_size: 4,
        image_size: 32,
        layer_norm_eps: 1e-12,
        num_channels: 3,
    }
}

/// The tiny DiT-DH of the built-in default: 8×8×32 latents, backbone 64 wide × 2, head
/// 128 wide × 1 (the head is wider than the token dimension, as the paper requires).
pub fn tiny_dit(num_classes: usize) -> DitConfig {
    DitConfig {
        input_size: 8,
        patch_size: 1,
        in_channels: 32,
        hidden_enc: 64,
        hidden_dec: 128,
        depth_enc: 2,
        depth_dec: 1,
        heads_enc: 4,
        heads_dec: 4,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes,
        use_pos_embed: true,
    }
}

/// A DiT configuration from a preset name (`tiny`, `S`, `B`, `L`, `XL`) adapted to the
/// latent shape `[C, g, g]` and the number of classes.
pub fn dit_preset(name: &str, latent: [usize; 3], num_classes: usize) -> CliResult<DitConfig> {
    let mut cfg = if name.eq_ignore_ascii_case("tiny") {
        tiny_dit(num_classes)
    } else {
        DitConfig::by_name(name).ok_or_else(|| {
            CliError::new(format!(
                "--model {name:?}: unknown preset (use tiny, S, B, L or XL)"
            ))
        })?
    };
    cfg.in_channels = latent[0];
    cfg.input_size = latent[1];
    cfg.num_classes = num_classes;
    cfg.validate("--model").map_err(CliError::from)?;
    Ok(cfg)
}

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
/// SigLIP/SigLIP2 or MAE; see [`crate::encoders`]).
pub fn load_encoder<B: Backend>(b: &B, dir: &Path) -> CliResult<Encoder<B>> {
    crate::encoders::load_encoder_dir(b, dir)
}

/// A decoder configuration from a `--decoder-config` value: a `config.json` path, a preset
/// (B, L, XL, tiny), or inline JSON (what a reference YAML's `decoder_config_path` resolves
/// to, `config.rs`).
pub fn decoder_config(spec: &str) -> CliResult<DecoderConfig> {
    if spec.trim_start().starts_with('{') {
        let v = rae_core::json::parse_named(spec, "--decoder-config")?;
        return Ok(DecoderConfig::from_json(&v, "--decoder-config")?);
    }
    if spec.ends_with(".json") {
        return Ok(DecoderConfig::from_json(
            &load_json(Path::new(spec))?,
            spec,
        )?);
    }
    if spec.eq_ignore_ascii_case("tiny") {
        return Ok(tiny_decoder());
    }
    DecoderConfig::by_name(spec).ok_or_else(|| {
        CliError::new(format!(
            "--decoder-config {spec:?}: neither a .json file nor a preset (B, L, XL, tiny)"
        ))
    })
}

/// Loads decoder weights and configuration.
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

/// The epsilon under the square root of the latent variance when normalising (§2.4).
pub const STATS_EPS: f32 = 1e-5;

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

/// Assembles a RAE from its parts.
pub fn load_rae<B: Backend>(b: &B, paths: &RaePaths) -> CliResult<Rae<B>> {
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

/// A RAE from its parts: the encoder family's image-processor constants (§2.1), the encoder
/// input size (the one that gives the decoder's token grid unless `encoder_input_size`), and
/// the check that the parts fit together.
pub fn assemble_rae<B: Backend>(
    encoder: Encoder<B>,
    decoder: RaeDecoder<B>,
    stats: Option<LatentStats<B>>,
    encoder_input_size: Option<usize>,
) -> CliResult<Rae<B>> {
    let input = encoder_input_size
        .unwrap_or_else(|| default_encoder_input(encoder.patch_size(), &decoder.config));
    let (image_mean, image_std) = encoder.image_mean_std();
    let rae = Rae {
        encoder_input_size: input,
        image_mean,
        image_std,
        encoder,
        decoder,
        stats,
    };
    check_rae(&rae)?;
    Ok(rae)
}

/// The encoder input size that gives the decoder's token grid: `grid · patch` (224 for
/// DINOv2/14 with a 256² decoder of patch 16).
pub fn default_encoder_input(patch: usize, dec: &DecoderConfig) -> usize {
    patch * dec.grid()
}

/// Checks that encoder, decoder and statistics agree on the latent shape.
pub fn check_rae<B: Backend>(rae: &Rae<B>) -> CliResult<()> {
    let [c, g, _] = rae.latent_dims();
    let dec = &rae.decoder.config;
    if dec.hidden_size != c || dec.grid() != g {
        return Err(CliError::new(format!(
            "the encoder gives {g}×{g} tokens of width {c} but the decoder expects {}×{} tokens of width {}",
            dec.grid(),
            dec.grid(),
            dec.hidden_size
        )));
    }
    if let Some(s) = &rae.stats {
        if s.len() != c * g * g {
            return Err(CliError::new(format!(
                "the latent statistics hold {} values but latents are [{c}, {g}, {g}] ({} values)",
                s.len(),
                c * g * g
            )));
        }
    }
    Ok(())
}

/// Number of parameters, for logs.
pub fn count<B: Backend, M: Module<B>>(m: &M) -> String {
    let n = m.num_params(false) as f64;
    if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else {
        format!("{:.1} k", n / 1e3)
    }
}
