//! The frozen representation encoder: DINOv2 with registers (§2.2), HuggingFace
//! `Dinov2WithRegistersModel` names (§2.2.4), forward only.

use alloc::format;
use alloc::vec::Vec;

use super::config::Cfg;
use super::Mode;
use crate::backend::{Backend, Unary};
use crate::error::{Error, Result};
use crate::json::JsonValue;
use crate::nn::tables::{bicubic_aa_matrix, integer_sqrt, resize_cls_grid_rows};
use crate::nn::{
    load_module, HostTensors, Init, LayerNorm, LoadReport, Module, Param, PatchEmbed, VitBlock,
    VitBlockConfig, VitNames,
};
use crate::tensor::Tensor;

/// Configuration of a DINOv2-with-registers ViT (the fields of its `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dinov2Config {
    /// Width `D` (768 for ViT-B).
    pub hidden_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// MLP width is `mlp_ratio · D` (DINOv2 ignores `intermediate_size`).
    pub mlp_ratio: f64,
    /// Patch size (14).
    pub patch_size: usize,
    /// Pretraining image size; the position table covers `(image_size/patch_size)²` patches.
    pub image_size: usize,
    /// Register tokens (4).
    pub num_register_tokens: usize,
    /// LayerNorm epsilon (1e-6).
    pub layer_norm_eps: f32,
    /// Initial LayerScale value (only matters for a model built from scratch).
    pub layerscale_value: f32,
    /// MLP activation (`"gelu"` exact).
    pub act: Unary,
}

impl Dinov2Config {
    /// `facebook/dinov2-with-registers-base` (§2.2.1).
    pub fn base() -> Self {
        Dinov2Config {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            mlp_ratio: 4.0,
            patch_size: 14,
            image_size: 518,
            num_register_tokens: 4,
            layer_norm_eps: 1e-6,
            layerscale_value: 1.0,
            act: Unary::GeluErf,
        }
    }

    /// Reads a HuggingFace `config.json` (`source` names the file in errors).
    pub fn from_json(v: &JsonValue, source: &str) -> Result<Self> {
        let c = Cfg::new(v, source)?;
        let act = match c.str_or("hidden_act", "gelu")? {
            "gelu" => Unary::GeluErf,
            "gelu_pytorch_tanh" | "gelu_new" => Unary::GeluTanh,
            other => {
                return Err(Error::config(
                    format!("{source}: hidden_act"),
                    format!("unsupported activation {other:?}"),
                ))
            }
        };
        if c.bool_or("use_swiglu_ffn", false)? {
            return Err(Error::config(
                format!("{source}: use_swiglu_ffn"),
                "SwiGLU DINOv2 variants are not supported",
            ));
        }
        let cfg = Dinov2Config {
            hidden_size: c.usize("hidden_size")?,
            num_hidden_layers: c.usize("num_hidden_layers")?,
            num_attention_heads: c.usize("num_attention_heads")?,
            mlp_ratio: c.f64_or("mlp_ratio", 4.0)?,
            patch_size: c.usize_or("patch_size", 14)?,
            image_size: c.usize_or("image_size", 518)?,
            num_register_tokens: c.usize_or("num_register_tokens", 4)?,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-6)? as f32,
            layerscale_value: c.f64_or("layerscale_value", 1.0)? as f32,
            act,
        };
        cfg.validate(source)?;
        Ok(cfg)
    }

    fn validate(&self, source: &str) -> Result<()> {
        super::encoder::check_vit_geometry(
            source,
            self.hidden_size,
            self.num_attention_heads,
            self.patch_size,
            self.image_size,
            self.num_hidden_layers,
            self.hidden_size as f64 * self.mlp_ratio,
        )
    }

    /// Side of the pretraining position grid (37 for 518/14).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// MLP hidden width.
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }
}

/// How the position table is resized to the input grid (§2.2.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PosInterp {
    /// `interpolate(size = grid)`: scale `in/out` (the spec's reading).
    Size,
    /// `interpolate(scale_factor = (grid + 0.1)/in)`: the original DINOv2 trick, whose kernel
    /// scale is `in/(grid + 0.1)`.
    ScaleFactor,
}

/// DINOv2 with registers, forward only (frozen, §1).
#[derive(Debug, Clone)]
pub struct Dinov2Encoder<B: Backend> {
    /// Configuration.
    pub config: Dinov2Config,
    /// `embeddings.cls_token` `[1, 1, D]`.
    pub cls_token: Param<B>,
    /// `embeddings.register_tokens` `[1, R, D]`.
    pub register_tokens: Param<B>,
    /// `embeddings.mask_token` `[1, D]` (unused; kept so checkpoints round-trip).
    pub mask_token: Param<B>,
    /// `embeddings.position_embeddings` `[1, 1 + g², D]`.
    pub position_embeddings: Param<B>,
    /// `embeddings.patch_embeddings.projection`.
    pub patch_embed: PatchEmbed<B>,
    /// `encoder.layer.{l}`.
    pub layers: Vec<VitBlock<B>>,
    /// `layernorm` (its affine is ignored by RAE, §2.2.1).
    pub layernorm: LayerNorm<B>,
    /// The position-table resize rule.
    pub pos_interp: PosInterp,
}

impl<B: Backend> Dinov2Encoder<B> {
    /// A model with random weights (for tests and the built-in tiny preset).
    pub fn new(b: &B, init: &mut Init, config: Dinov2Config) -> Result<Self> {
        let d = config.hidden_size;
        let g = config.grid();
        let vit = VitBlockConfig {
            c: d,
            heads: config.num_attention_heads,
            hidden: config.mlp_hidden(),
            eps: config.layer_norm_eps,
            act: config.act,
            layer_scale_init: config.layerscale_value,
        };
        let layers = VitBlock::stack(
            b,
            init,
            "encoder.layer",
            config.num_hidden_layers,
            VitNames::DINOV2,
            &vit,
        )?;
        let mut ln = LayerNorm::new(b, "layernorm", d, config.layer_norm_eps)?;
        for p in [&mut ln.weight, &mut ln.bias].into_iter().flatten() {
            p.kind = crate::nn::ParamKind::Buffer;
        }
        let mut enc = Dinov2Encoder {
            cls_token: Param::new("embeddings.cls_token", init.normal(b, &[1, 1, d], 0.02)?),
            register_tokens: Param::new(
                "embeddings.register_tokens",
                init.normal(b, &[1, config.num_register_tokens, d], 0.02)?,
            ),
            mask_token: Param::buffer("embeddings.mask_token", b.zeros(&[1, d])?),
            position_embeddings: Param::new(
                "embeddings.position_embeddings",
                init.normal(b, &[1, 1 + g * g, d], 0.02)?,
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
            layernorm: ln,
            pos_interp: PosInterp::Size,
            config,
        };
        // The encoder is frozen: nothing in it is trained.
        enc.visit_mut(&mut |p| p.kind = crate::nn::ParamKind::Buffer);
        Ok(enc)
    }

    /// Loads HuggingFace weights by name (a leading `dinov2_with_registers.` or `dinov2.`
    /// prefix is stripped).
    pub fn load(&mut self, b: &B, src: &HostTensors) -> Result<LoadReport> {
        let src = src
            .clone()
            .strip_prefix("dinov2_with_registers.")
            .strip_prefix("dinov2.");
        load_module(
            b,
            self,
            &src,
            "DINOv2 encoder",
            &[
                "embeddings.mask_token",
                "layernorm.weight",
                "layernorm.bias",
            ],
            false,
        )
    }

    /// The position table for a `gh × gw` patch grid, `[1 + gh·gw, D]`: the CLS row as is,
    /// the grid rows resized with antialiased bicubic (§2.2.3) unless the grid already
    /// matches.
    pub fn position_table(&self, b: &B, gh: usize, gw: usize) -> Result<Tensor<B>> {
        let d = self.config.hidden_size;
        let table = self
            .position_embeddings
            .value
            .reshape(&[self.position_embeddings.value.numel() / d, d])?;
        let rows = table.dims()[0] - 1;
        let g = integer_sqrt(rows).ok_or_else(|| {
            Error::bad_shape(
                "embeddings.position_embeddings",
                table.shape(),
                "the grid rows are not a square",
            )
        })?;
        if gh == g && gw == g {
            return Ok(table);
        }
        let (mh, mw) = match self.pos_interp {
            PosInterp::Size => (bicubic_aa_matrix(g, gh), bicubic_aa_matrix(g, gw)),
            PosInterp::ScaleFactor => (aa_matrix_scale(g, gh), aa_matrix_scale(g, gw)),
        };
        resize_cls_grid_rows(b, &table, g, d, &mh, &mw, gh, gw)
    }

    /// Standardised images `[B, 3, H, W]` (H, W multiples of the patch) → all final tokens
    /// `[B, 1 + R + N, D]` after the last layer and the final LayerNorm *without* affine
    /// (§2.2.2).
    pub fn forward_all(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let d = self.config.hidden_size;
        let p = self.config.patch_size;
        let (bs, gh, gw) = super::encoder::image_grid("DINOv2 encoder", x, p)?;
        let n = gh * gw;
        let (patches, _) = self.patch_embed.forward(b, x)?;
        let cls = b.gather_rows(
            &self.cls_token.value.reshape(&[1, d])?,
            &alloc::vec![0u32; bs],
        )?;
        let h = b.concat_mid(&[&cls, &patches], bs, d)?;
        let pos = self.position_table(b, gh, gw)?;
        let h = b.bcast_affine(
            &h,
            None,
            Some(&pos.reshape(&[(1 + n) * d])?),
            [bs, (1 + n) * d, 1],
        )?;
        let r = self.config.num_register_tokens;
        let idx: Vec<u32> = (0..bs).flat_map(|_| 0..r as u32).collect();
        let regs = b.gather_rows(&self.register_tokens.value.reshape(&[r, d])?, &idx)?;
        let first = b.slice_mid(&h, [bs, 1 + n, d], 0, 1)?;
        let rest = b.slice_mid(&h, [bs, 1 + n, d], 1, n)?;
        let mut h = b.concat_mid(&[&first, &regs, &rest], bs, d)?;
        for layer in &self.layers {
            h = layer.forward(b, &h)?.0;
        }
        let (h, _) = b.layernorm(&h, None, None, self.config.layer_norm_eps)?;
        Ok(h)
    }

    /// Standardised images → patch tokens `[B, N, D]` (CLS and registers dropped, §2.2.2).
    pub fn forward(&self, b: &B, x: &Tensor<B>, _mode: Mode) -> Result<Tensor<B>> {
        let all = self.forward_all(b, x)?;
        let d = self.config.hidden_size;
        let dims = all.dims();
        let skip = 1 + self.config.num_register_tokens;
        b.slice_mid(&all, [dims[0], dims[1], d], skip, dims[1] - skip)
    }
}

impl<B: Backend> Module<B> for Dinov2Encoder<B> {
    crate::module_params!(
        cls_token,
        register_tokens,
        mask_token,
        position_embeddings,
        patch_embed,
        layers,
        layernorm
    );
}

/// Antialiased bicubic weights when the resize is given as `scale_factor = (out + 0.1)/in`:
/// the kernel then uses the scale `in/(out + 0.1)` (PyTorch uses `1/scale_factor`).
fn aa_matrix_scale(inp: usize, out: usize) -> Vec<f32> {
    let sf = (out as f64 + 0.1) / inp as f64;
    let scale = (1.0 / sf) as f32;
    crate::nn::tables::bicubic_aa_matrix_with_scale(inp, out, scale)
}
