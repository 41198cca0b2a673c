//! Model presets (the tiny built-in encoder, decoder and DiT-DH; the paper's sizes by
//! name), decoder configurations from a `--decoder-config` value, and assembling a RAE from
//! its parts. Files are read and written by [`crate::store`].

use std::path::Path;

use rae_core::models::{
    DecoderConfig, Dinov2Config, DitConfig, Encoder, LatentStats, Rae, RaeDecoder,
};
use rae_core::nn::Module;
use rae_core::Backend;

use crate::errors::{CliError, CliResult};
use crate::store::tensor_file::load_json;

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

/// The epsilon under the square root of the latent variance when normalising (§2.4).
pub const STATS_EPS: f32 = 1e-5;

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
