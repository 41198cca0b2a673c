//! The MAE ViT encoder as a frozen RAE encoder (§2.3): HuggingFace `ViTMAEModel` names
//! (`ViTMAEForPreTraining(...).vit`), forward only, masking disabled.
//!
//! `facebook/vit-mae-base`: width 768, 12 layers, 12 heads, MLP 3072 with exact GELU, patch
//! 16, LayerNorm eps 1e-12, a CLS token, and a fixed 2-D sin-cos position table for the
//! 14×14 pretraining grid plus a CLS row, resized to the input grid (16×16 at 256²) with the
//! non-antialiased bicubic of §2.1.1. RAE sets the mask ratio to 0 with the identity
//! shuffle, so every patch is kept in order; the CLS token is dropped after the final
//! LayerNorm, whose affine RAE removes.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::config::Cfg;
use crate::backend::{Backend, Unary};
use crate::error::{Error, Result};
use crate::json::JsonValue;
use crate::nn::tables::{bicubic_matrix, integer_sqrt, resize_cls_grid_rows, sincos_2d};
use crate::nn::{
    load_module, HostTensors, Init, LayerNorm, LoadReport, Module, Param, ParamKind, PatchEmbed,
    VitBlock, VitBlockConfig, VitNames,
};
use crate::tensor::Tensor;

/// Configuration of a ViT-MAE encoder (the encoder fields of its `config.json`; the
/// `decoder_*` fields are not used).
#[derive(Debug, Clone, PartialEq)]
pub struct MaeConfig {
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
    /// Pretraining image size (224 → a 14×14 table).
    pub image_size: usize,
    /// LayerNorm epsilon (1e-12).
    pub layer_norm_eps: f32,
    /// MLP activation (`"gelu"` exact).
    pub act: Unary,
}

impl MaeConfig {
    /// `facebook/vit-mae-base` (§2.3).
    pub fn base() -> Self {
        MaeConfig {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            patch_size: 16,
            image_size: 224,
            layer_norm_eps: 1e-12,
            act: Unary::GeluErf,
        }
    }

    /// Reads a HuggingFace `config.json` (`model_type: vit_mae`); `source` names the file.
    pub fn from_json(v: &JsonValue, source: &str) -> Result<Self> {
        let c = Cfg::new(v, source)?;
        let act = match c.str_or("hidden_act", "gelu")? {
            "gelu" => Unary::GeluErf,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Unary::GeluTanh,
            other => {
                return Err(Error::config(
                    format!("{source}: hidden_act"),
                    format!("unsupported activation {other:?}"),
                ))
            }
        };
        if !c.bool_or("qkv_bias", true)? {
            return Err(Error::config(
                format!("{source}: qkv_bias"),
                "only qkv_bias = true is supported (as in facebook/vit-mae-base)",
            ));
        }
        if c.usize_or("num_channels", 3)? != 3 {
            return Err(Error::config(
                format!("{source}: num_channels"),
                "only RGB (3-channel) encoders are supported",
            ));
        }
        let cfg = MaeConfig {
            hidden_size: c.usize_or("hidden_size", 768)?,
            num_hidden_layers: c.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: c.usize_or("num_attention_heads", 12)?,
            intermediate_size: c.usize_or("intermediate_size", 3072)?,
            patch_size: c.usize_or("patch_size", 16)?,
            image_size: c.usize_or("image_size", 224)?,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-12)? as f32,
            act,
        };
        cfg.validate(source)?;
        Ok(cfg)
    }

    /// This configuration as a HuggingFace `config.json` (`model_type: vit_mae`).
    pub fn to_json(&self) -> JsonValue {
        JsonValue::object([
            ("model_type", JsonValue::from("vit_mae")),
            ("hidden_size", self.hidden_size.into()),
            ("num_hidden_layers", self.num_hidden_layers.into()),
            ("num_attention_heads", self.num_attention_heads.into()),
            ("intermediate_size", self.intermediate_size.into()),
            ("patch_size", self.patch_size.into()),
            ("image_size", self.image_size.into()),
            ("num_channels", 3usize.into()),
            ("qkv_bias", true.into()),
            ("layer_norm_eps", (self.layer_norm_eps as f64).into()),
            (
                "hidden_act",
                if self.act == Unary::GeluErf {
                    "gelu"
                } else {
                    "gelu_pytorch_tanh"
                }
                .into(),
            ),
            ("mask_ratio", 0.0f64.into()),
        ])
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
        )?;
        if !self.hidden_size.is_multiple_of(4) {
            return Err(Error::config(
                format!("{source}: hidden_size"),
                String::from("must be a multiple of 4 (2-D sin-cos position table)"),
            ));
        }
        Ok(())
    }

    /// Side of the pretraining position grid (14 for 224/16).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// The MAE ViT encoder, forward only (frozen, §1).
#[derive(Debug, Clone)]
pub struct MaeEncoder<B: Backend> {
    /// Configuration.
    pub config: MaeConfig,
    /// `embeddings.cls_token` `[1, 1, D]`.
    pub cls_token: Param<B>,
    /// `embeddings.position_embeddings` `[1, 1 + g², D]`: CLS row, then the grid rows.
    pub position_embeddings: Param<B>,
    /// `embeddings.patch_embeddings.projection`.
    pub patch_embed: PatchEmbed<B>,
    /// `encoder.layer.{l}` (ViT-MAE names).
    pub layers: Vec<VitBlock<B>>,
    /// `layernorm` (its affine is ignored by RAE, §2.3).
    pub layernorm: LayerNorm<B>,
}

impl<B: Backend> MaeEncoder<B> {
    /// A model with random weights (for tests) and the fixed sin-cos position table with a
    /// zero CLS row, as `ViTMAEModel` initialises it; every parameter is a frozen buffer.
    pub fn new(b: &B, init: &mut Init, config: MaeConfig) -> Result<Self> {
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
            "encoder.layer",
            config.num_hidden_layers,
            VitNames::VIT_MAE,
            &vit,
        )?;
        let mut table = alloc::vec![0.0f32; d];
        table.extend(sincos_2d(d, g)?);
        let mut enc = MaeEncoder {
            cls_token: Param::new("embeddings.cls_token", init.normal(b, &[1, 1, d], 0.02)?),
            position_embeddings: Param::buffer(
                "embeddings.position_embeddings",
                b.upload(&table, &[1, 1 + g * g, d])?,
            ),
            patch_embed: PatchEmbed::new(
                b,
                init,
                "embeddings.patch_embeddings.projection",
                3,
                d,
                config.patch_size,
            )?,
            layers,
            layernorm: LayerNorm::new(b, "layernorm", d, config.layer_norm_eps)?,
            config,
        };
        // The encoder is frozen: nothing in it is trained.
        enc.visit_mut(&mut |p| p.kind = ParamKind::Buffer);
        Ok(enc)
    }

    /// Loads HuggingFace weights by name. A `ViTMAEForPreTraining` checkpoint is accepted: its
    /// `vit.` half is used and the MAE decoder (`decoder.*`) is ignored.
    pub fn load(&mut self, b: &B, src: &HostTensors) -> Result<LoadReport> {
        let vit = src.sub("vit.");
        let src = if vit.is_empty() { src.clone() } else { vit };
        load_module(
            b,
            self,
            &src,
            "MAE encoder",
            &["layernorm.weight", "layernorm.bias"],
            false,
        )
    }

    /// The position table for a `gh × gw` patch grid, `[1 + gh·gw, D]`: the CLS row as is
    /// and the grid rows resized with the non-antialiased bicubic of §2.1.1 (HuggingFace
    /// `interpolate_pos_encoding`) unless the grid already matches.
    pub fn position_table(&self, b: &B, gh: usize, gw: usize) -> Result<Tensor<B>> {
        let d = self.config.hidden_size;
        let value = &self.position_embeddings.value;
        let total = value.numel() / d;
        let rows = total.saturating_sub(1);
        let g = integer_sqrt(rows).filter(|_| total >= 2).ok_or_else(|| {
            Error::bad_shape(
                "embeddings.position_embeddings",
                value.shape(),
                "needs a CLS row followed by a square grid of rows",
            )
        })?;
        let table = value.reshape(&[1, total, d])?;
        if gh == g && gw == g {
            return table.reshape(&[total, d]);
        }
        let (mh, mw) = (bicubic_matrix(g, gh), bicubic_matrix(g, gw));
        resize_cls_grid_rows(b, &table, g, d, &mh, &mw, gh, gw)
    }

    /// Standardised images `[B, 3, H, W]` (H, W multiples of the patch) → all final tokens
    /// `[B, 1 + N, D]` (CLS first, patches in row-major order) after the final LayerNorm
    /// *without* affine.
    pub fn forward_all(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let d = self.config.hidden_size;
        let p = self.config.patch_size;
        let (bs, gh, gw) = super::encoder::image_grid("MAE encoder", x, p)?;
        let n = gh * gw;
        let (patches, _) = self.patch_embed.forward(b, x)?;
        let pos = self.position_table(b, gh, gw)?;
        let pos3 = pos.reshape(&[1, 1 + n, d])?;
        let grid_pos = b.slice_mid(&pos3, [1, 1 + n, d], 1, n)?;
        let patches = b.bcast_affine(
            &patches,
            None,
            Some(&grid_pos.reshape(&[n * d])?),
            [bs, n * d, 1],
        )?;
        // Mask ratio 0 with the identity shuffle keeps every patch in order; the CLS token
        // gets the table's first row.
        let cls_pos = b.slice_mid(&pos3, [1, 1 + n, d], 0, 1)?;
        let cls = b.binary(
            crate::backend::Binary::Add,
            &self.cls_token.value.reshape(&[1, d])?,
            &cls_pos.reshape(&[1, d])?,
        )?;
        let cls = b.gather_rows(&cls, &alloc::vec![0u32; bs])?;
        let mut h = b.concat_mid(&[&cls, &patches], bs, d)?;
        for layer in &self.layers {
            h = layer.forward(b, &h)?.0;
        }
        let (h, _) = b.layernorm(&h, None, None, self.config.layer_norm_eps)?;
        Ok(h)
    }

    /// Standardised images → patch tokens `[B, N, D]` (CLS dropped, §2.3).
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let all = self.forward_all(b, x)?;
        let d = self.config.hidden_size;
        let dims = all.dims();
        b.slice_mid(&all, [dims[0], dims[1], d], 1, dims[1] - 1)
    }
}

impl<B: Backend> Module<B> for MaeEncoder<B> {
    crate::module_params!(
        cls_token,
        position_embeddings,
        patch_embed,
        layers,
        layernorm
    );
}
