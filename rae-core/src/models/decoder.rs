//! The RAE pixel decoder: a ViT-MAE-style decoder over all latent tokens (§2.6), with the
//! reference's parameter names (§2.6.4), forward and backward.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::config::Cfg;
use super::Mode;
use crate::backend::{Backend, NormStats, PatchOrder, Reduce, Unary};
use crate::error::{Error, Result};
use crate::json::JsonValue;
use crate::nn::tables::sincos_2d;
use crate::nn::{
    load_module, Grads, HostTensors, Init, LayerNorm, Linear, LoadReport, Module, Param, VitBlock,
    VitBlockConfig, VitBlockSaved, VitNames,
};
use crate::tensor::Tensor;

/// Decoder configuration (the reference's `config.json` fields, §2.6.1).
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Width of the input latent tokens (the encoder width, 768).
    pub hidden_size: usize,
    /// Decoder width `Cd`.
    pub decoder_hidden_size: usize,
    /// Layers.
    pub decoder_num_hidden_layers: usize,
    /// Heads.
    pub decoder_num_attention_heads: usize,
    /// MLP hidden width.
    pub decoder_intermediate_size: usize,
    /// Output patch size (16).
    pub patch_size: usize,
    /// Output image side (256); tokens = `(image_size/patch_size)²`.
    pub image_size: usize,
    /// LayerNorm epsilon (1e-12).
    pub layer_norm_eps: f32,
    /// Output channels (3).
    pub num_channels: usize,
}

impl DecoderConfig {
    fn preset(width: usize, layers: usize, heads: usize, mlp: usize) -> Self {
        DecoderConfig {
            hidden_size: 768,
            decoder_hidden_size: width,
            decoder_num_hidden_layers: layers,
            decoder_num_attention_heads: heads,
            decoder_intermediate_size: mlp,
            patch_size: 16,
            image_size: 256,
            layer_norm_eps: 1e-12,
            num_channels: 3,
        }
    }

    /// ViT-B decoder (768 / 12 layers / 12 heads / 3072).
    pub fn vit_b() -> Self {
        Self::preset(768, 12, 12, 3072)
    }

    /// ViT-L decoder (1024 / 24 / 16 / 4096).
    pub fn vit_l() -> Self {
        Self::preset(1024, 24, 16, 4096)
    }

    /// ViT-XL decoder (1152 / 28 / 16 / 4096), the released default.
    pub fn vit_xl() -> Self {
        Self::preset(1152, 28, 16, 4096)
    }

    /// A preset by name (`B`, `L`, `XL`, case-insensitive, optional `ViT-` prefix).
    pub fn by_name(name: &str) -> Option<Self> {
        let n = name.to_ascii_uppercase();
        match n.trim_start_matches("VIT-").trim_start_matches("VIT") {
            "B" => Some(Self::vit_b()),
            "L" => Some(Self::vit_l()),
            "XL" => Some(Self::vit_xl()),
            _ => None,
        }
    }

    /// Reads the reference's decoder `config.json`.
    pub fn from_json(v: &JsonValue, source: &str) -> Result<Self> {
        let c = Cfg::new(v, source)?;
        let cfg = DecoderConfig {
            hidden_size: c.usize_or("hidden_size", 768)?,
            decoder_hidden_size: c.usize("decoder_hidden_size")?,
            decoder_num_hidden_layers: c.usize("decoder_num_hidden_layers")?,
            decoder_num_attention_heads: c.usize("decoder_num_attention_heads")?,
            decoder_intermediate_size: c.usize("decoder_intermediate_size")?,
            patch_size: c.usize_or("patch_size", 16)?,
            image_size: c.usize_or("image_size", 256)?,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-12)? as f32,
            num_channels: c.usize_or("num_channels", 3)?,
        };
        cfg.validate(source)?;
        Ok(cfg)
    }

    /// Checks the sizes fit together.
    pub fn validate(&self, source: &str) -> Result<()> {
        use crate::limits::{check_usize, MAX_DEPTH, MAX_HEADS, MAX_IMAGE_SIDE, MAX_WIDTH};
        let bad = |k: &str, why: &str| Err(Error::config(format!("{source}: {k}"), why));
        check_usize(source, "hidden_size", self.hidden_size, 1, MAX_WIDTH)?;
        check_usize(
            source,
            "decoder_hidden_size",
            self.decoder_hidden_size,
            1,
            MAX_WIDTH,
        )?;
        check_usize(
            source,
            "decoder_num_hidden_layers",
            self.decoder_num_hidden_layers,
            1,
            MAX_DEPTH,
        )?;
        check_usize(
            source,
            "decoder_num_attention_heads",
            self.decoder_num_attention_heads,
            1,
            MAX_HEADS,
        )?;
        check_usize(
            source,
            "decoder_intermediate_size",
            self.decoder_intermediate_size,
            1,
            MAX_WIDTH,
        )?;
        check_usize(
            source,
            "patch_size",
            self.patch_size,
            1,
            crate::limits::MAX_PATCH,
        )?;
        check_usize(source, "image_size", self.image_size, 1, MAX_IMAGE_SIDE)?;
        check_usize(source, "num_channels", self.num_channels, 1, 64)?;
        crate::limits::check_f64(
            source,
            "layer_norm_eps",
            self.layer_norm_eps as f64,
            0.0,
            1.0,
        )?;
        if self.decoder_num_attention_heads == 0
            || !self
                .decoder_hidden_size
                .is_multiple_of(self.decoder_num_attention_heads)
        {
            return bad(
                "decoder_num_attention_heads",
                "must divide decoder_hidden_size",
            );
        }
        if !self.decoder_hidden_size.is_multiple_of(4) {
            return bad(
                "decoder_hidden_size",
                "must be a multiple of 4 (sin-cos table)",
            );
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return bad("image_size", "must be a multiple of patch_size");
        }
        check_usize(
            source,
            "image_size (tokens)",
            self.num_tokens(),
            1,
            crate::limits::MAX_TOKENS,
        )?;
        crate::limits::check_params(source, self.min_params())?;
        Ok(())
    }

    /// A lower bound on the parameter count (attention and MLP weights of every layer).
    pub fn min_params(&self) -> u128 {
        let c = self.decoder_hidden_size as u128;
        self.decoder_num_hidden_layers as u128
            * (4 * c * c + 2 * c * self.decoder_intermediate_size as u128)
    }

    /// Side of the token grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of latent tokens.
    pub fn num_tokens(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Values per output patch (`p²·channels`).
    pub fn patch_values(&self) -> usize {
        self.patch_size * self.patch_size * self.num_channels
    }

    /// This configuration as JSON (the reference's field names).
    pub fn to_json(&self) -> JsonValue {
        JsonValue::object([
            ("hidden_size", JsonValue::from(self.hidden_size)),
            ("decoder_hidden_size", self.decoder_hidden_size.into()),
            (
                "decoder_num_hidden_layers",
                self.decoder_num_hidden_layers.into(),
            ),
            (
                "decoder_num_attention_heads",
                self.decoder_num_attention_heads.into(),
            ),
            (
                "decoder_intermediate_size",
                self.decoder_intermediate_size.into(),
            ),
            ("patch_size", self.patch_size.into()),
            ("image_size", self.image_size.into()),
            ("layer_norm_eps", (self.layer_norm_eps as f64).into()),
            ("num_channels", self.num_channels.into()),
        ])
    }
}

/// The decoder.
#[derive(Debug, Clone)]
pub struct RaeDecoder<B: Backend> {
    /// Configuration.
    pub config: DecoderConfig,
    /// `decoder_embed` (`768 → Cd`).
    pub embed: Linear<B>,
    /// `trainable_cls_token` `[1, 1, Cd]`.
    pub cls: Param<B>,
    /// `decoder_pos_embed` `[1, N + 1, Cd]`, frozen sin-cos with a zero CLS row.
    pub pos: Param<B>,
    /// `decoder_layers.{l}`.
    pub layers: Vec<VitBlock<B>>,
    /// `decoder_norm`.
    pub norm: LayerNorm<B>,
    /// `decoder_pred` (`Cd → p²·3`).
    pub pred: Linear<B>,
}

/// Saved activations of the decoder.
#[derive(Debug, Clone)]
pub struct DecoderSaved<B: Backend> {
    tokens: Tensor<B>,
    layers: Vec<VitBlockSaved<B>>,
    norm_in: Tensor<B>,
    norm_stats: NormStats<B>,
    norm_out: Tensor<B>,
}

impl<B: Backend> RaeDecoder<B> {
    /// A decoder initialised for training from scratch (§2.6.5).
    pub fn new(b: &B, init: &mut Init, config: DecoderConfig) -> Result<Self> {
        config.validate("decoder config")?;
        let cd = config.decoder_hidden_size;
        let g = config.grid();
        let mut pos = vec![0.0f32; cd];
        pos.extend(sincos_2d(cd, g)?);
        let vit = VitBlockConfig {
            c: cd,
            heads: config.decoder_num_attention_heads,
            hidden: config.decoder_intermediate_size,
            eps: config.layer_norm_eps,
            act: Unary::GeluErf,
            layer_scale_init: 1.0,
        };
        let layers = VitBlock::stack(
            b,
            init,
            "decoder_layers",
            config.decoder_num_hidden_layers,
            VitNames::VIT_MAE,
            &vit,
        )?;
        Ok(RaeDecoder {
            embed: Linear::new(b, init, "decoder_embed", &[cd, config.hidden_size], true)?,
            cls: Param::new("trainable_cls_token", b.zeros(&[1, 1, cd])?),
            pos: Param::buffer("decoder_pos_embed", b.upload(&pos, &[1, g * g + 1, cd])?),
            layers,
            norm: LayerNorm::new(b, "decoder_norm", cd, config.layer_norm_eps)?,
            pred: Linear::new(b, init, "decoder_pred", &[config.patch_values(), cd], true)?,
            config,
        })
    }

    /// Loads the reference weights by name; `decoder_pos_embed` is recomputed if absent.
    pub fn load(&mut self, b: &B, src: &HostTensors) -> Result<LoadReport> {
        load_module(b, self, src, "RAE decoder", &["decoder_pos_embed"], false)
    }

    /// Latent tokens `[B, N, 768]` (de-normalised) → patch logits `[B, N, p²·3]` (CLS
    /// position dropped) and what the backward needs (§2.6.2).
    pub fn forward_logits(
        &self,
        b: &B,
        tokens: &Tensor<B>,
        mode: Mode,
    ) -> Result<(Tensor<B>, Option<DecoderSaved<B>>)> {
        let cfg = &self.config;
        let n = cfg.num_tokens();
        let cd = cfg.decoder_hidden_size;
        let dims = tokens.dims();
        if dims.len() != 3 || dims[1] != n || dims[2] != cfg.hidden_size {
            let bs = dims.first().copied().unwrap_or(1);
            return Err(Error::shape(
                "RAE decoder input",
                &crate::Shape::new(&[bs, n, cfg.hidden_size])?,
                tokens.shape(),
            ));
        }
        let bs = dims[0];
        let h = self.embed.forward(b, tokens)?;
        let cls = b.gather_rows(&self.cls.value.reshape(&[1, cd])?, &vec![0u32; bs])?;
        let h = b.concat_mid(&[&cls, &h], bs, cd)?;
        let mut h = b.bcast_affine(
            &h,
            None,
            Some(&self.pos.value.reshape(&[(n + 1) * cd])?),
            [bs, (n + 1) * cd, 1],
        )?;
        let mut saved_layers = Vec::new();
        for layer in &self.layers {
            let (y, s) = layer.forward(b, &h)?;
            if mode == Mode::Train {
                saved_layers.push(s);
            }
            h = y;
        }
        let (hn, stats) = self.norm.forward(b, &h)?;
        let y = self.pred.forward(b, &hn)?;
        let pv = cfg.patch_values();
        let logits = b.slice_mid(&y, [bs, n + 1, pv], 1, n)?;
        let saved = (mode == Mode::Train).then(|| DecoderSaved {
            tokens: tokens.clone(),
            layers: saved_layers,
            norm_in: h,
            norm_stats: stats,
            norm_out: hn,
        });
        Ok((logits, saved))
    }

    /// Latent tokens → image `[B, 3, H, W]` in the encoder's standardised pixel space
    /// (unpatchified logits, §2.6.2).
    pub fn forward(
        &self,
        b: &B,
        tokens: &Tensor<B>,
        mode: Mode,
    ) -> Result<(Tensor<B>, Option<DecoderSaved<B>>)> {
        let (logits, saved) = self.forward_logits(b, tokens, mode)?;
        let g = self.config.grid();
        let img = b.unpatchify(
            &logits,
            self.config.num_channels,
            (g, g),
            self.config.patch_size,
            PatchOrder::ChannelLast,
        )?;
        Ok((img, saved))
    }

    /// The gradient of `decoder_pred.weight` alone for the image gradient `dimg` (the
    /// adaptive GAN weight of §2.7.2 compares two of these): `dyᵀ·h` over every position,
    /// the CLS row's zero gradient included.
    pub fn pred_weight_grad(
        &self,
        b: &B,
        s: &DecoderSaved<B>,
        dimg: &Tensor<B>,
    ) -> Result<Tensor<B>> {
        let dy = self.pred_output_grad(b, dimg)?;
        let pv = self.config.patch_values();
        let cd = self.config.decoder_hidden_size;
        let rows = dy.numel() / pv;
        b.matmul(
            &dy.reshape(&[rows, pv])?,
            &s.norm_out.reshape(&[rows, cd])?,
            true,
            false,
        )
    }

    /// The image gradient as the gradient of `decoder_pred`'s output `[B, N + 1, p²·3]`.
    fn pred_output_grad(&self, b: &B, dimg: &Tensor<B>) -> Result<Tensor<B>> {
        let cfg = &self.config;
        let dlogits = b.patchify(dimg, cfg.patch_size, PatchOrder::ChannelLast)?;
        let (bs, pv) = (dlogits.dims()[0], cfg.patch_values());
        let zero_cls = b.zeros(&[bs, 1, pv])?;
        b.concat_mid(&[&zero_cls, &dlogits], bs, pv)
    }

    /// Backward from the gradient of the image; returns the gradient of the input tokens.
    pub fn backward(
        &self,
        b: &B,
        s: &DecoderSaved<B>,
        dimg: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let cfg = &self.config;
        let dy = self.pred_output_grad(b, dimg)?;
        let (bs, n, cd) = (dy.dims()[0], cfg.num_tokens(), cfg.decoder_hidden_size);
        let dhn = self.pred.backward(b, &s.norm_out, &dy, grads)?;
        let mut dh = self
            .norm
            .backward(b, &s.norm_in, &s.norm_stats, &dhn, grads)?;
        for (layer, ls) in self.layers.iter().zip(&s.layers).rev() {
            dh = layer.backward(b, ls, &dh, grads)?;
        }
        if self.pos.trainable() {
            // Stage 1 trains the table as the reference does (§2.7): the batch sum.
            let dpos = b.reduce(Reduce::Sum, &dh, [1, bs, (n + 1) * cd])?;
            grads.add(b, &self.pos, dpos)?;
        }
        let dcls = b
            .slice_mid(&dh, [bs, n + 1, cd], 0, 1)?
            .reshape(&[bs, cd])?;
        grads.add(b, &self.cls, b.scatter_add_rows(&dcls, &vec![0u32; bs], 1)?)?;
        let dtok = b.slice_mid(&dh, [bs, n + 1, cd], 1, n)?;
        self.embed.backward(b, &s.tokens, &dtok, grads)
    }
}

impl<B: Backend> Module<B> for RaeDecoder<B> {
    crate::module_params!(embed, cls, pos, layers, norm, pred);
}
