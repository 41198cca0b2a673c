//! The three encoders diffusers' `AutoencoderRAE` builds (`encoder_type`), as ours: their
//! configuration from diffusers' four numbers, and their parameter names both ways.
//!
//! | `encoder_type` | transformers model diffusers builds | ours |
//! |---|---|---|
//! | `dinov2` | `Dinov2WithRegistersModel`, image size 518 | [`Dinov2Encoder`] |
//! | `siglip2` | `SiglipVisionModel`, image size 256 (conv patches, bicubic table resize) | [`SiglipEncoder`] |
//! | `mae` | `ViTMAEModel`, image size 224, mask ratio 0 | [`MaeEncoder`] |
//!
//! Every head is 64 wide; everything else is the transformers config default: DINOv2's MLP
//! ratio 4, 4 registers, eps 1e-6; SigLIP's MLP 3072 with GELU-tanh, eps 1e-6; MAE's MLP 3072
//! with exact GELU, eps 1e-12. The final LayerNorm has no affine in all three.
//!
//! - SigLIP2: all tokens are kept (no CLS), and the table is resized with the non-antialiased
//!   bicubic when the input grid is not 256/patch (`interpolate_pos_encoding=True`), as ours.
//!   transformers 4 puts the tower under `vision_model.` (the released checkpoints, and the
//!   only layout diffusers 0.42.1 can build: under transformers 5 it fails on
//!   `SiglipVisionModel.vision_model`); transformers 5's flat layout is read too. The
//!   attention-pooling `head.*` is not used by RAE: it is skipped when read and written as
//!   zeros on export (diffusers' model has it).
//! - MAE: diffusers passes `noise = arange(N)` with mask ratio 0, the identity shuffle, so every
//!   patch is kept in order, as ours; the table (a parameter, so saved) is read from the file
//!   and resized with the non-antialiased bicubic; the CLS token is dropped. Layers are
//!   `layers.{i}.attention.{q,k,v,o}_proj`, `layers.{i}.mlp.fc{1,2}` (transformers 5) or
//!   `encoder.layer.{i}.attention.attention.{query,key,value}`, `.attention.output.dense`,
//!   `.intermediate.dense`, `.output.dense` (transformers 4, ours).

use rae_core::backend::Unary;
use rae_core::models::{
    Dinov2Config, Dinov2Encoder, Encoder, MaeConfig, MaeEncoder, SiglipConfig, SiglipEncoder,
    SiglipPatch,
};
use rae_core::nn::{save_module, HostTensor, HostTensors, Init};
use rae_core::Backend;

use super::{rename, HEAD_DIM};
use crate::errors::{CliError, CliResult, Context};
use crate::store::encoders::EncoderConfig;

/// DINOv2 attention names: ours (transformers 4) and transformers 5's.
pub(super) const DINOV2_ATTN: [(&str, &str); 4] = [
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
];

/// MAE layer names below `encoder.layer.{i}.` (ours, transformers 4) and `layers.{i}.`
/// (transformers 5).
const MAE_LAYER: [(&str, &str); 6] = [
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
];

/// The transformers default MLP width of SigLIP and ViT-MAE configs, which diffusers keeps.
pub const DEFAULT_MLP: usize = 3072;
/// The pretraining image size diffusers gives each encoder (it fixes the position table).
const IMAGE_SIZE: [(&str, usize); 3] = [("dinov2", 518), ("siglip2", 256), ("mae", 224)];

/// What export says when the encoder heads are not 64 wide.
const HEAD_WIDTH: &str = "the encoder head width at 64";

/// The `encoder_type` values diffusers knows.
pub const ENCODER_TYPES: [&str; 3] = ["dinov2", "siglip2", "mae"];

fn image_size_of(kind: &str) -> usize {
    IMAGE_SIZE
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, s)| *s)
}

/// The encoder configuration diffusers builds for `kind` (one of [`ENCODER_TYPES`]).
pub fn encoder_config(
    kind: &str,
    hidden: usize,
    patch: usize,
    layers: usize,
    source: &str,
) -> CliResult<EncoderConfig> {
    let source = format!("{source} (encoder_*)");
    let heads = hidden / HEAD_DIM;
    Ok(match kind {
        "dinov2" => {
            let json = rae_core::json::JsonValue::object([
                (
                    "model_type",
                    rae_core::json::JsonValue::from("dinov2_with_registers"),
                ),
                ("hidden_size", hidden.into()),
                ("num_hidden_layers", layers.into()),
                ("num_attention_heads", heads.into()),
                ("patch_size", patch.into()),
                ("image_size", image_size_of(kind).into()),
            ]);
            EncoderConfig::Dinov2(Dinov2Config::from_json(&json, &source)?)
        }
        "siglip2" => {
            let json = rae_core::json::JsonValue::object([
                (
                    "model_type",
                    rae_core::json::JsonValue::from("siglip_vision_model"),
                ),
                ("hidden_size", hidden.into()),
                ("num_hidden_layers", layers.into()),
                ("num_attention_heads", heads.into()),
                ("intermediate_size", DEFAULT_MLP.into()),
                ("patch_size", patch.into()),
                ("image_size", image_size_of(kind).into()),
                ("layer_norm_eps", 1e-6f64.into()),
                ("hidden_act", "gelu_pytorch_tanh".into()),
            ]);
            EncoderConfig::Siglip(SiglipConfig::from_json(&json, &source)?)
        }
        "mae" => {
            let json = rae_core::json::JsonValue::object([
                ("model_type", rae_core::json::JsonValue::from("vit_mae")),
                ("hidden_size", hidden.into()),
                ("num_hidden_layers", layers.into()),
                ("num_attention_heads", heads.into()),
                ("intermediate_size", DEFAULT_MLP.into()),
                ("patch_size", patch.into()),
                ("image_size", image_size_of(kind).into()),
                ("layer_norm_eps", 1e-12f64.into()),
                ("hidden_act", "gelu".into()),
            ]);
            EncoderConfig::Mae(MaeConfig::from_json(&json, &source)?)
        }
        other => {
            return Err(CliError::new(format!(
                "{source}: encoder_type {other:?} is not one of {ENCODER_TYPES:?}"
            )))
        }
    })
}

/// The fewest parameter values the encoder's file must hold (checked before allocating).
pub fn min_params(cfg: &EncoderConfig) -> u128 {
    let (d, p, l, mlp, g) = match cfg {
        EncoderConfig::Dinov2(c) => (
            c.hidden_size,
            c.patch_size,
            c.num_hidden_layers,
            (c.hidden_size as f64 * c.mlp_ratio) as usize,
            c.image_size / c.patch_size,
        ),
        EncoderConfig::Siglip(c) => (
            c.hidden_size,
            c.patch_size,
            c.num_hidden_layers,
            c.intermediate_size,
            c.grid(),
        ),
        EncoderConfig::Mae(c) => (
            c.hidden_size,
            c.patch_size,
            c.num_hidden_layers,
            c.intermediate_size,
            c.grid(),
        ),
    };
    let (d, p, l, mlp, g) = (d as u128, p as u128, l as u128, mlp as u128, g as u128);
    g * g * d + 3 * p * p * d + l * (4 * d * d + 2 * d * mlp)
}

/// `layers.{i}.rest` ↔ `encoder.layer.{i}.rest'` with the MAE layer table.
fn mae_name(name: &str, to_theirs: bool) -> String {
    let (from_prefix, to_prefix) = if to_theirs {
        ("encoder.layer.", "layers.")
    } else {
        ("layers.", "encoder.layer.")
    };
    let Some(tail) = name.strip_prefix(from_prefix) else {
        return name.to_string();
    };
    let Some((idx, rest)) = tail.split_once('.') else {
        return name.to_string();
    };
    let rest = MAE_LAYER
        .iter()
        .find_map(|(ours, theirs)| {
            let (from, to) = if to_theirs {
                (ours, theirs)
            } else {
                (theirs, ours)
            };
            rest.strip_prefix(from).map(|r| format!("{to}{r}"))
        })
        .unwrap_or_else(|| rest.to_string());
    format!("{to_prefix}{idx}.{rest}")
}

fn map_names(t: &HostTensors, f: impl Fn(&str) -> Option<String>) -> CliResult<HostTensors> {
    let mut out = HostTensors::new();
    for (name, v) in t.iter() {
        if let Some(n) = f(name) {
            out.insert(n, HostTensor::new(v.shape.clone(), v.data.clone())?);
        }
    }
    Ok(out)
}

/// Builds the encoder of `cfg` from diffusers' `encoder.*` tensors (the prefix removed).
pub fn load_encoder<B: Backend>(
    b: &B,
    cfg: &EncoderConfig,
    tensors: &HostTensors,
    source: &str,
) -> CliResult<Encoder<B>> {
    let what = format!("loading the encoder (encoder.*) from {source}");
    let init = &mut Init::new(0);
    Ok(match cfg {
        EncoderConfig::Dinov2(c) => {
            let t = rename(tensors.clone(), &DINOV2_ATTN, false)?;
            let mut e = Dinov2Encoder::new(b, init, c.clone())?;
            e.load(b, &t).context(&what)?;
            e.into()
        }
        EncoderConfig::Siglip(c) => {
            // `vision_model.` (transformers 4) is removed and `head.*` skipped by the loader.
            let mut e = SiglipEncoder::new(b, init, c.clone())?;
            e.load(b, tensors).context(&what)?;
            e.into()
        }
        EncoderConfig::Mae(c) => {
            let t = map_names(tensors, |n| Some(mae_name(n, false)))?;
            let mut e = MaeEncoder::new(b, init, c.clone())?;
            e.load(b, &t).context(&what)?;
            e.into()
        }
    })
}

/// What diffusers needs to rebuild an encoder: its `encoder_type`, width, patch, depth and
/// its tensors under diffusers' names (without the `encoder.` prefix).
#[derive(Debug)]
pub struct Exported {
    /// `encoder_type`.
    pub kind: &'static str,
    /// `encoder_hidden_size`.
    pub hidden: usize,
    /// `encoder_patch_size`.
    pub patch: usize,
    /// `encoder_num_hidden_layers`.
    pub layers: usize,
    /// Tensors, diffusers' names below `encoder.`.
    pub tensors: HostTensors,
}

/// Checks that diffusers can rebuild `enc` (as the encoder of `encoder_type` it is) and
/// returns it under diffusers' names; `input` is the encoder input size. Errors say what
/// diffusers fixes that `enc` does not have.
pub fn export_encoder<B: Backend>(b: &B, enc: &Encoder<B>, input: usize) -> CliResult<Exported> {
    // The first setting diffusers fixes that `enc` does not have, as an error.
    let unmet = |checks: &[(bool, &str)]| match checks.iter().find(|(ok, _)| !ok) {
        Some((_, what)) => Err(CliError::new(format!("diffusers fixes {what}"))),
        None => Ok(()),
    };
    let (kind, hidden, patch, layers) = match enc {
        Encoder::Dinov2(e) => {
            let c = &e.config;
            let checks = [
                (
                    c.num_attention_heads * HEAD_DIM == c.hidden_size,
                    HEAD_WIDTH,
                ),
                (c.mlp_ratio == 4.0, "the DINOv2 mlp_ratio at 4"),
                (c.num_register_tokens == 4, "4 DINOv2 register tokens"),
                (c.layer_norm_eps == 1e-6, "the DINOv2 LayerNorm eps at 1e-6"),
                (
                    c.act == Unary::GeluErf,
                    "the DINOv2 activation at exact GELU",
                ),
                (c.image_size == 518, "the DINOv2 image_size at 518"),
            ];
            unmet(&checks)?;
            ("dinov2", c.hidden_size, c.patch_size, c.num_hidden_layers)
        }
        Encoder::Siglip(e) => {
            let c = &e.config;
            let checks = [
                (
                    c.num_attention_heads * HEAD_DIM == c.hidden_size,
                    HEAD_WIDTH,
                ),
                (
                    c.intermediate_size == DEFAULT_MLP,
                    "the SigLIP MLP width at 3072",
                ),
                (c.layer_norm_eps == 1e-6, "the SigLIP LayerNorm eps at 1e-6"),
                (
                    c.act == Unary::GeluTanh,
                    "the SigLIP activation at GELU-tanh",
                ),
                (c.image_size == 256, "the SigLIP image_size at 256"),
            ];
            unmet(&checks)?;
            if c.patch == SiglipPatch::Linear && input != c.image_size {
                return Err(CliError::new(format!(
                    "this NaFlex SigLIP2 encoder is only used at its table's size ({} pixels), but diffusers would resize its table to the input {input} with another filter",
                    c.image_size
                )));
            }
            ("siglip2", c.hidden_size, c.patch_size, c.num_hidden_layers)
        }
        Encoder::Mae(e) => {
            let c = &e.config;
            let checks = [
                (
                    c.num_attention_heads * HEAD_DIM == c.hidden_size,
                    HEAD_WIDTH,
                ),
                (
                    c.intermediate_size == DEFAULT_MLP,
                    "the MAE MLP width at 3072",
                ),
                (c.layer_norm_eps == 1e-12, "the MAE LayerNorm eps at 1e-12"),
                (c.act == Unary::GeluErf, "the MAE activation at exact GELU"),
                (c.image_size == 224, "the MAE image_size at 224"),
            ];
            unmet(&checks)?;
            ("mae", c.hidden_size, c.patch_size, c.num_hidden_layers)
        }
    };
    let ours = save_module(b, enc)?;
    let tensors = match enc {
        Encoder::Dinov2(_) => map_names(&rename(ours, &DINOV2_ATTN, true)?, |n| {
            // diffusers' encoder has no final LayerNorm affine
            (!n.starts_with("layernorm.")).then(|| n.to_string())
        })?,
        Encoder::Siglip(_) => {
            let mut t = map_names(&ours, |n| {
                (!n.starts_with("post_layernorm.")).then(|| format!("vision_model.{n}"))
            })?;
            for (n, shape) in siglip_head_shapes(hidden) {
                let len = shape.iter().product();
                t.insert(
                    format!("vision_model.head.{n}"),
                    HostTensor::new(shape, vec![0.0; len])?,
                );
            }
            t
        }
        Encoder::Mae(_) => map_names(&ours, |n| {
            (!n.starts_with("layernorm.")).then(|| mae_name(n, true))
        })?,
    };
    Ok(Exported {
        kind,
        hidden,
        patch,
        layers,
        tensors,
    })
}

/// The tensors of SigLIP's attention-pooling head (unused by RAE), with their shapes.
fn siglip_head_shapes(d: usize) -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("probe", vec![1, 1, d]),
        ("attention.in_proj_weight", vec![3 * d, d]),
        ("attention.in_proj_bias", vec![3 * d]),
        ("attention.out_proj.weight", vec![d, d]),
        ("attention.out_proj.bias", vec![d]),
        ("layernorm.weight", vec![d]),
        ("layernorm.bias", vec![d]),
        ("mlp.fc1.weight", vec![DEFAULT_MLP, d]),
        ("mlp.fc1.bias", vec![DEFAULT_MLP]),
        ("mlp.fc2.weight", vec![d, DEFAULT_MLP]),
        ("mlp.fc2.bias", vec![d]),
    ]
}
