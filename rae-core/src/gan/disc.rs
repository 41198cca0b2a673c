//! The DINO discriminator (§2.7.4): a frozen DINO ViT whose patch-token features at a few
//! depths feed trainable heads of spectrally normalised circular 1-D convolutions with
//! BatchNormLocal; the heads' per-token logits are concatenated. Also the hinge D loss and
//! the vanilla G loss.
//!
//! [`Module`] covers the heads only (the reference's `DinoDisc.state_dict()`, whose backbone
//! sits outside the module tree): `heads.{i}.0.0.weight_orig|weight_u|weight_v|bias`,
//! `heads.{i}.0.1.weight|bias`, `heads.{i}.1.fn.0.*`, `heads.{i}.1.fn.1.*`, `heads.{i}.2.*`.

mod backbone;
mod head;

pub use backbone::{BackboneSaved, DinoBackbone};
pub use head::{BatchNormLocal, BnlSaved, DiscHead, HeadSaved, SnConv1d, SnSaved};

use alloc::vec;
use alloc::vec::Vec;

use crate::backend::{Backend, Unary};
use crate::error::{Error, Result};
use crate::nn::{Grads, HostTensors, Init, LoadReport, Module};
use crate::tensor::Tensor;

/// Discriminator hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscConfig {
    /// Backbone width.
    pub embed_dim: usize,
    /// Backbone blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// Patch size.
    pub patch: usize,
    /// MLP width ratio.
    pub mlp_ratio: f64,
    /// Extra taps after these blocks (0-based); the last block's output is always tapped.
    pub key_depths: Vec<usize>,
    /// Kernel of the heads' residual convolution (9).
    pub ks: usize,
    /// LayerNorm and BatchNormLocal epsilon (1e-6).
    pub norm_eps: f32,
    /// Side the input is resized to (224).
    pub img: usize,
}

impl DiscConfig {
    /// DINO ViT-S/8 (the released recipe).
    pub fn s8() -> Self {
        DiscConfig {
            embed_dim: 384,
            depth: 12,
            heads: 6,
            patch: 8,
            mlp_ratio: 4.0,
            key_depths: vec![2, 5, 8, 11],
            ks: 9,
            norm_eps: 1e-6,
            img: 224,
        }
    }

    /// DINO ViT-S/16.
    pub fn s16() -> Self {
        DiscConfig {
            patch: 16,
            ..Self::s8()
        }
    }

    /// The tiny recipe of the test fixtures: width 32, 4 blocks, 2 heads, patch 8, taps
    /// after blocks 0 and 2.
    pub fn tiny() -> Self {
        DiscConfig {
            embed_dim: 32,
            depth: 4,
            heads: 2,
            key_depths: vec![0, 2],
            ..Self::s8()
        }
    }

    /// Number of backbone blocks: `max(depth, 1 + max(key_depths))`.
    pub fn num_blocks(&self) -> usize {
        let need = self.key_depths.iter().map(|d| d + 1).max().unwrap_or(0);
        self.depth.max(need).max(1)
    }

    /// Number of heads (taps).
    pub fn num_heads(&self) -> usize {
        1 + self.key_depths.len()
    }

    /// Tokens per tap.
    pub fn tokens(&self) -> usize {
        let g = self.img / self.patch.max(1);
        g * g
    }
}

/// The discriminator: frozen backbone plus trainable heads.
#[derive(Debug, Clone)]
pub struct Discriminator<B: Backend> {
    /// Configuration.
    pub config: DiscConfig,
    /// The frozen DINO ViT (not part of [`Module`]).
    pub backbone: DinoBackbone<B>,
    /// `heads.{i}`, one per tap.
    pub heads: Vec<DiscHead<B>>,
}

/// What a discriminator forward keeps for its backward.
#[derive(Debug, Clone)]
pub struct DiscSaved<B: Backend> {
    heads: Vec<HeadSaved<B>>,
    backbone: Option<BackboneSaved<B>>,
    batch: usize,
    tokens: usize,
}

impl<B: Backend> Discriminator<B> {
    /// Random backbone (load it with [`Discriminator::load_backbone`]) and PyTorch-default
    /// heads.
    pub fn new(b: &B, init: &mut Init, config: DiscConfig) -> Result<Self> {
        let backbone = DinoBackbone::new(b, init, &config)?;
        let heads = head::heads(
            b,
            init,
            config.num_heads(),
            config.embed_dim,
            config.ks,
            config.norm_eps,
        )?;
        Ok(Discriminator {
            config,
            backbone,
            heads,
        })
    }

    /// Loads the DINO checkpoint into the frozen backbone (see [`DinoBackbone::load`]).
    pub fn load_backbone(&mut self, b: &B, src: &HostTensors) -> Result<LoadReport> {
        self.backbone.load(b, src)
    }

    /// Loads the heads' state (`heads.*`, a `module.` prefix accepted).
    pub fn load_heads(&mut self, b: &B, src: &HostTensors) -> Result<LoadReport> {
        let src = src.clone().strip_prefix("module.");
        crate::nn::load_module(b, self, &src, "discriminator heads", &[], false)
    }

    /// One power iteration on every spectral norm (what a training-mode forward does
    /// first).
    pub fn power_iteration(&mut self, b: &B) -> Result<()> {
        for h in &mut self.heads {
            for sn in h.sn_convs_mut() {
                sn.power_iteration(b)?;
            }
        }
        Ok(())
    }

    /// Logits `[B, N·heads]` of images in `[−1, 1]` `[B, 3, H, W]`; `train` runs the power
    /// iteration first. Keeps the backbone's activations (for the input gradient).
    pub fn forward(
        &mut self,
        b: &B,
        x: &Tensor<B>,
        train: bool,
    ) -> Result<(Tensor<B>, DiscSaved<B>)> {
        self.forward_with(b, x, train, true)
    }

    /// [`Discriminator::forward`]; `keep_backbone = false` keeps only what the heads'
    /// parameter gradients need (the discriminator step).
    pub fn forward_with(
        &mut self,
        b: &B,
        x: &Tensor<B>,
        train: bool,
        keep_backbone: bool,
    ) -> Result<(Tensor<B>, DiscSaved<B>)> {
        if train {
            self.power_iteration(b)?;
        }
        self.forward_eval(b, x, keep_backbone)
    }

    /// Eval-mode forward: the stored `u`, `v`, no power iteration.
    pub fn forward_eval(
        &self,
        b: &B,
        x: &Tensor<B>,
        keep_backbone: bool,
    ) -> Result<(Tensor<B>, DiscSaved<B>)> {
        let (taps, backbone) = self.backbone.forward(b, x, keep_backbone)?;
        if taps.len() != self.heads.len() {
            return Err(Error::invalid(
                "discriminator",
                alloc::format!("{} taps for {} heads", taps.len(), self.heads.len()),
            ));
        }
        let batch = x.dims()[0];
        let mut outs = Vec::with_capacity(taps.len());
        let mut saved = Vec::with_capacity(taps.len());
        for (h, a) in self.heads.iter().zip(&taps) {
            let (o, s) = h.forward(b, a)?;
            outs.push(o);
            saved.push(s);
        }
        let tokens = taps[0].dims()[2];
        let refs: Vec<&Tensor<B>> = outs.iter().collect();
        let logits = b
            .concat_mid(&refs, batch, 1)?
            .reshape(&[batch, tokens * refs.len()])?;
        Ok((
            logits,
            DiscSaved {
                heads: saved,
                backbone,
                batch,
                tokens,
            },
        ))
    }

    /// From `dlogits` `[B, N·heads]`: adds the heads' parameter gradients to `grads` and,
    /// with `need_input_grad`, returns the input-image gradient (the forward must have kept
    /// the backbone).
    pub fn backward(
        &self,
        b: &B,
        s: &DiscSaved<B>,
        dlogits: &Tensor<B>,
        grads: &mut Grads<B>,
        need_input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        let (bs, n, k) = (s.batch, s.tokens, s.heads.len());
        dlogits.expect_dims("discriminator backward (dlogits)", &[bs, n * k])?;
        let mut dtaps = Vec::with_capacity(k);
        for (i, (h, hs)) in self.heads.iter().zip(&s.heads).enumerate() {
            let d = b.slice_mid(dlogits, [bs, n * k, 1], i * n, n)?;
            dtaps.push(h.backward(b, hs, &d.reshape(&[bs, n])?, grads)?);
        }
        if !need_input_grad {
            return Ok(None);
        }
        let bb = s.backbone.as_ref().ok_or_else(|| {
            Error::invalid(
                "discriminator backward",
                "the input gradient needs a forward with keep_backbone = true",
            )
        })?;
        Ok(Some(self.backbone.backward(b, bb, &dtaps)?))
    }
}

impl<B: Backend> Module<B> for Discriminator<B> {
    crate::module_params!(heads);
}

/// Hinge D loss `0.5·(mean relu(1 − r) + mean relu(1 + f))` and its gradients with respect
/// to `logits_real` and `logits_fake`.
pub fn hinge_d_loss<B: Backend>(
    b: &B,
    logits_real: &Tensor<B>,
    logits_fake: &Tensor<B>,
) -> Result<(f32, Tensor<B>, Tensor<B>)> {
    let part = |x: &Tensor<B>, sign: f32| -> Result<(f32, Tensor<B>)> {
        let n = x.numel();
        if n == 0 {
            return Err(Error::bad_shape("hinge_d_loss", x.shape(), "empty logits"));
        }
        let a = b.full(&[1], sign)?;
        let one = b.full(&[1], 1.0)?;
        let z = b.bcast_affine(x, Some(&a), Some(&one), [1, 1, n])?;
        let loss = b.scalar(&b.mean_all(&b.unary(Unary::Relu, &z)?)?)?;
        let dz = b.full(x.dims(), 0.5 / n as f32)?;
        let d = b.unary_backward(Unary::Relu, &z, &dz)?;
        Ok((loss, b.scale(&d, sign)?.reshape(x.dims())?))
    };
    let (lr, dr) = part(logits_real, -1.0)?;
    let (lf, df) = part(logits_fake, 1.0)?;
    Ok((0.5 * (lr + lf), dr, df))
}

/// Vanilla G loss `−mean(logits)` and its gradient.
pub fn vanilla_g_loss<B: Backend>(b: &B, logits: &Tensor<B>) -> Result<(f32, Tensor<B>)> {
    let n = logits.numel();
    if n == 0 {
        return Err(Error::bad_shape(
            "vanilla_g_loss",
            logits.shape(),
            "empty logits",
        ));
    }
    let loss = -b.scalar(&b.mean_all(logits)?)?;
    Ok((loss, b.full(logits.dims(), -1.0 / n as f32)?))
}
