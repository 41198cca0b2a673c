//! The SigLIP / SigLIP2 vision tower as a frozen RAE encoder (§2.3): HuggingFace
//! `SiglipVisionModel` names (`SiglipModel(...).vision_model`), forward only.
//!
//! `google/siglip2-base-patch16-256`: width 768, 12 layers, 12 heads, MLP 3072 with GELU-tanh,
//! patch 16 on a 256² input → a learned 16×16 position table (256 rows, no CLS), pre-LN
//! layers with LayerNorm eps 1e-6, and `post_layernorm` whose affine RAE removes. All 256
//! tokens are kept; the attention-pooling head is not used.
//!
//! The NaFlex SigLIP2 checkpoints (`model_type: siglip2`) embed patches with a linear map
//! over channel-last patches; they are read here by permuting that weight into the conv
//! layout, and work at the table's own grid only (their position resize is bilinear).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::config::Cfg;
use crate::backend::{Backend, Unary};
use crate::error::{Error, Result};
use crate::json::JsonValue;
use crate::nn::tables::{bicubic_matrix, integer_sqrt, resize_grid_rows};
use crate::nn::{
    load_module, HostTensor, HostTensors, Init, LayerNorm, LoadReport, Module, Param, ParamKind,
    PatchEmbed, VitBlock, VitBlockConfig, VitNames,
};
use crate::tensor::Tensor;

/// HuggingFace SigLIP layer names, relative to `encoder.layers.{l}` (the attention names are
/// set separately, see [`SiglipEncoder::new`]).
const SIGLIP_NAMES: VitNames = VitNames {
    norm1: "layer_norm1",
    norm2: "layer_norm2",
    fc: ("mlp.fc1", "mlp.fc2"),
    layer_scale: None,
    attn: [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.out_proj",
    ],
};

/// How the checkpoint embeds patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiglipPatch {
    /// A stride-`p` conv, weight `[D, 3, p, p]` (`SiglipVisionModel`).
    Conv,
    /// A linear map over channel-last patches, weight `[D, p·p·3]` (NaFlex `Siglip2VisionModel`);
    /// permuted into the conv layout when loaded.
    Linear,
}

/// Configuration of a SigLIP vision tower (the fields of its `config.json`, or of the
/// `vision_config` of a full `SiglipConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipConfig {
    /// Width `D` (768).
    pub hidden_size: usize,
    /// Layers (12).
    pub num_hidden_layers: usize,
    /// Heads (12).
    pub num_attention_heads: usize,
    /// MLP hidden width (3072).
    pub intermediate_size: usize,
    /// Patch size (16).
    pub patch_size: usize,
    /// Pretraining image size; the position table covers `(image_size/patch_size)²` patches.
    pub image_size: usize,
    /// LayerNorm epsilon (1e-6).
    pub layer_norm_eps: f32,
    /// MLP activation (`gelu_pytorch_tanh`).
    pub act: Unary,
    /// Patch embedding layout of the checkpoint.
    pub patch: SiglipPatch,
}

impl SiglipConfig {
    /// `google/siglip2-base-patch16-256` (§2.3).
    pub fn base() -> Self {
        SiglipConfig {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            patch_size: 16,
            image_size: 256,
            layer_norm_eps: 1e-6,
            act: Unary::GeluTanh,
            patch: SiglipPatch::Conv,
        }
    }

    /// Reads a HuggingFace `config.json`: a vision config (`siglip_vision_model`,
    /// `siglip2_vision_model`) or a full model config (`siglip`, `siglip2`) whose
    /// `vision_config` is used. `source` names the file in errors.
    pub fn from_json(v: &JsonValue, source: &str) -> Result<Self> {
        let top = Cfg::new(v, source)?;
        let top_type = top.str_or("model_type", "siglip_vision_model")?;
        let (vision, vsource): (&JsonValue, String) = match v.get("vision_config") {
            Some(vc) if !vc.is_null() => (vc, format!("{source}: vision_config")),
            _ => (v, String::from(source)),
        };
        let c = Cfg::new(vision, &vsource)?;
        let vis_type = c.str_or("model_type", top_type)?;
        let naflex = top_type.starts_with("siglip2") || vis_type.starts_with("siglip2");
        let act = match c.str_or("hidden_act", "gelu_pytorch_tanh")? {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Unary::GeluTanh,
            "gelu" => Unary::GeluErf,
            other => {
                return Err(Error::config(
                    format!("{vsource}: hidden_act"),
                    format!("unsupported activation {other:?}"),
                ))
            }
        };
        let patch_size = c.usize_or("patch_size", 16)?;
        // NaFlex configs state the table size as `num_patches` instead of an image size.
        let image_size = if naflex && !c.has("image_size") {
            let n = c.usize_or("num_patches", 256)?;
            let g = integer_sqrt(n).ok_or_else(|| {
                Error::config(
                    format!("{vsource}: num_patches"),
                    format!("{n} is not a square number of patches"),
                )
            })?;
            g * patch_size
        } else {
            c.usize_or("image_size", 224)?
        };
        if c.usize_or("num_channels", 3)? != 3 {
            return Err(Error::config(
                format!("{vsource}: num_channels"),
                "only RGB (3-channel) encoders are supported",
            ));
        }
        let cfg = SiglipConfig {
            hidden_size: c.usize_or("hidden_size", 768)?,
            num_hidden_layers: c.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: c.usize_or("num_attention_heads", 12)?,
            intermediate_size: c.usize_or("intermediate_size", 3072)?,
            patch_size,
            image_size,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-6)? as f32,
            act,
            patch: if naflex {
                SiglipPatch::Linear
            } else {
                SiglipPatch::Conv
            },
        };
        cfg.validate(&vsource)?;
        Ok(cfg)
    }

    /// This configuration as a HuggingFace vision `config.json` (`model_type:
    /// siglip_vision_model`, or `siglip2_vision_model` for the linear patch layout).
    pub fn to_json(&self) -> JsonValue {
        let act = if self.act == Unary::GeluErf {
            "gelu"
        } else {
            "gelu_pytorch_tanh"
        };
        let mut members: Vec<(&str, JsonValue)> = alloc::vec![
            (
                "model_type",
                match self.patch {
                    SiglipPatch::Conv => "siglip_vision_model",
                    SiglipPatch::Linear => "siglip2_vision_model",
                }
                .into(),
            ),
            ("hidden_size", self.hidden_size.into()),
            ("num_hidden_layers", self.num_hidden_layers.into()),
            ("num_attention_heads", self.num_attention_heads.into()),
            ("intermediate_size", self.intermediate_size.into()),
            ("patch_size", self.patch_size.into()),
            ("num_channels", 3usize.into()),
            ("layer_norm_eps", (self.layer_norm_eps as f64).into()),
            ("hidden_act", act.into()),
        ];
        match self.patch {
            SiglipPatch::Conv => members.push(("image_size", self.image_size.into())),
            SiglipPatch::Linear => {
                members.push(("num_patches", (self.grid() * self.grid()).into()))
            }
        }
        JsonValue::object(members)
    }

    fn validate(&self, source: &str) -> Result<()> {
        super::encoder::check_vit_geometry(
            source,
            self.hidden_size,
            self.num_attention_heads,
            self.patch_size,
            self.image_size,
            self.num_hidden_layers,
            self.intermediate_size as f64,
        )
    }

    /// Side of the position-table grid (16 for 256/16).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// The SigLIP vision tower, forward only (frozen, §1).
#[derive(Debug, Clone)]
pub struct SiglipEncoder<B: Backend> {
    /// Configuration.
    pub config: SiglipConfig,
    /// `embeddings.patch_embedding` (conv layout `[D, 3, p, p]`).
    pub patch_embed: PatchEmbed<B>,
    /// `embeddings.position_embedding.weight` `[g², D]`.
    pub position_embedding: Param<B>,
    /// `encoder.layers.{l}`.
    pub layers: Vec<VitBlock<B>>,
    /// `post_layernorm` (its affine is ignored by RAE, §2.3).
    pub post_layernorm: LayerNorm<B>,
}

impl<B: Backend> SiglipEncoder<B> {
    /// A model with random weights (for tests); every parameter is a frozen buffer.
    pub fn new(b: &B, init: &mut Init, config: SiglipConfig) -> Result<Self> {
        let d = config.hidden_size;
        let g = config.grid();
        let vit = VitBlockConfig {
            c: d,
            heads: config.num_attention_heads,
            hidden: config.intermediate_size,
            eps: config.layer_norm_eps,
            act: config.act,
            layer_scale_init: 1.0,
        };
        let layers = VitBlock::stack(
            b,
            init,
            "encoder.layers",
            config.num_hidden_layers,
            SIGLIP_NAMES,
            &vit,
        )?;
        let mut enc = SiglipEncoder {
            patch_embed: PatchEmbed::new(
                b,
                init,
                "embeddings.patch_embedding",
                3,
                d,
                config.patch_size,
            )?,
            position_embedding: Param::new(
                "embeddings.position_embedding.weight",
                init.normal(b, &[g * g, d], 0.02)?,
            ),
            layers,
            post_layernorm: LayerNorm::new(b, "post_layernorm", d, config.layer_norm_eps)?,
            config,
        };
        // The encoder is frozen: nothing in it is trained.
        enc.visit_mut(&mut |p| p.kind = ParamKind::Buffer);
        Ok(enc)
    }

    /// Loads HuggingFace weights by name. A full `SiglipModel` checkpoint is accepted: its
    /// `vision_model.` half is used and the text tower, `logit_scale`/`logit_bias` and the
    /// attention-pooling `head.*` are ignored (reported as unexpected). A NaFlex linear patch
    /// weight `[D, p·p·3]` is permuted into the conv layout.
    pub fn load(&mut self, b: &B, src: &HostTensors) -> Result<LoadReport> {
        let vision = src.sub("vision_model.");
        let src = if vision.is_empty() {
            src.clone()
        } else {
            vision
        };
        let mut own = HostTensors::new();
        let mut skipped = Vec::new();
        for (name, t) in src.iter() {
            if name.starts_with("head.") {
                skipped.push(String::from(name));
            } else if name == "embeddings.patch_embedding.weight" && t.shape.len() == 2 {
                own.insert(name, self.linear_patch_to_conv(t)?);
            } else {
                own.insert(name, t.clone());
            }
        }
        let mut report = load_module(
            b,
            self,
            &own,
            "SigLIP encoder",
            &["post_layernorm.weight", "post_layernorm.bias"],
            false,
        )?;
        report.unexpected.extend(skipped);
        Ok(report)
    }

    /// `[D, p·p·3]` with patches flattened as `(row, column, channel)` → `[D, 3, p, p]`.
    fn linear_patch_to_conv(&self, t: &HostTensor) -> Result<HostTensor> {
        let d = self.config.hidden_size;
        let p = self.config.patch_size;
        if t.shape != [d, p * p * 3] {
            return Err(Error::TensorShape {
                name: String::from("embeddings.patch_embedding.weight"),
                expected: crate::shape::Shape::new(&[d, p * p * 3])?,
                got: crate::shape::Shape::new(&t.shape)?,
            });
        }
        let mut out = alloc::vec![0.0f32; t.data.len()];
        for o in 0..d {
            for r in 0..p {
                for c in 0..p {
                    for ch in 0..3 {
                        out[((o * 3 + ch) * p + r) * p + c] =
                            t.data[o * p * p * 3 + (r * p + c) * 3 + ch];
                    }
                }
            }
        }
        HostTensor::new(alloc::vec![d, 3, p, p], out)
    }

    /// The position table for a `gh × gw` patch grid, `[gh·gw, D]`: the learned table as is
    /// when the grid matches, else resized with the non-antialiased bicubic of §2.1.1
    /// (HuggingFace `interpolate_pos_encoding`).
    pub fn position_table(&self, b: &B, gh: usize, gw: usize) -> Result<Tensor<B>> {
        let d = self.config.hidden_size;
        let table = &self.position_embedding.value;
        let rows = table.numel() / d;
        let g = integer_sqrt(rows).ok_or_else(|| {
            Error::bad_shape(
                "embeddings.position_embedding.weight",
                table.shape(),
                "the rows are not a square grid",
            )
        })?;
        let table = table.reshape(&[rows, d])?;
        if gh == g && gw == g {
            return Ok(table);
        }
        if self.config.patch == SiglipPatch::Linear {
            return Err(Error::invalid(
                "SigLIP2 (NaFlex) encoder",
                format!(
                    "the input gives a {gh}×{gw} patch grid but the position table is {g}×{g}; \
                     this checkpoint's table is only used at its own size (input {} pixels)",
                    g * self.config.patch_size
                ),
            ));
        }
        let (mh, mw) = (bicubic_matrix(g, gh), bicubic_matrix(g, gw));
        resize_grid_rows(b, &table, g, d, &mh, &mw, gh, gw)
    }

    /// Standardised images `[B, 3, H, W]` (H, W multiples of the patch) → tokens `[B, N, D]`
    /// after the last layer and `post_layernorm` *without* affine (§2.3); all tokens kept.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let d = self.config.hidden_size;
        let p = self.config.patch_size;
        let (bs, gh, gw) = super::encoder::image_grid("SigLIP encoder", x, p)?;
        let n = gh * gw;
        let (patches, _) = self.patch_embed.forward(b, x)?;
        let pos = self.position_table(b, gh, gw)?;
        let mut h = b.bcast_affine(
            &patches,
            None,
            Some(&pos.reshape(&[n * d])?),
            [bs, n * d, 1],
        )?;
        for layer in &self.layers {
            h = layer.forward(b, &h)?.0;
        }
        let (h, _) = b.layernorm(&h, None, None, self.config.layer_norm_eps)?;
        Ok(h)
    }
}

impl<B: Backend> Module<B> for SiglipEncoder<B> {
    crate::module_params!(patch_embed, position_embedding, layers, post_layernorm);
}
