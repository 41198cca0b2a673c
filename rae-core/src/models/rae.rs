//! The RAE pipeline (§2.1, §2.4, §2.5, §7): images ↔ normalised latents through the frozen
//! encoder, the per-element latent statistics and the decoder.

use alloc::format;
use alloc::vec::Vec;

use super::{Encoder, Mode, RaeDecoder};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::tables::resize_bicubic;
use crate::rng::{PhiloxKey, PhiloxStream};
use crate::tensor::Tensor;

/// ImageNet mean used by DINOv2 and MAE (§2.1).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation used by DINOv2 and MAE (§2.1).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Per-element latent statistics `[C, h, w]` (§2.4): `z_norm = (z − mean)/sqrt(var + eps)`.
#[derive(Debug, Clone)]
pub struct LatentStats<B: Backend> {
    /// Mean, `C·h·w` values.
    pub mean: Tensor<B>,
    /// Variance, `C·h·w` values.
    pub var: Tensor<B>,
    /// Epsilon inside the square root (1e-5).
    pub eps: f32,
    scale: Tensor<B>,
    shift: Tensor<B>,
    std: Tensor<B>,
}

impl<B: Backend> LatentStats<B> {
    /// From host mean and variance (any shape with `C·h·w` elements; a leading singleton
    /// axis is fine). Negative or non-finite variances are an error.
    pub fn new(b: &B, mean: &[f32], var: &[f32], eps: f32) -> Result<Self> {
        if mean.len() != var.len() {
            return Err(Error::invalid(
                "latent statistics",
                format!("mean has {} values but var has {}", mean.len(), var.len()),
            ));
        }
        if let Some(i) = var.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(Error::invalid(
                "latent statistics",
                format!("var[{i}] = {} is negative or not finite", var[i]),
            ));
        }
        if let Some(i) = mean.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("latent statistics mean[{i}]"),
            });
        }
        let n = mean.len();
        let std: Vec<f32> = var.iter().map(|v| libm::sqrtf(v + eps)).collect();
        let scale: Vec<f32> = std.iter().map(|s| 1.0 / s).collect();
        let shift: Vec<f32> = mean.iter().zip(&scale).map(|(m, s)| -m * s).collect();
        Ok(LatentStats {
            mean: b.upload(mean, &[n])?,
            var: b.upload(var, &[n])?,
            eps,
            scale: b.upload(&scale, &[n])?,
            shift: b.upload(&shift, &[n])?,
            std: b.upload(&std, &[n])?,
        })
    }

    /// Number of elements per latent.
    pub fn len(&self) -> usize {
        self.mean.numel()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(z − mean)/sqrt(var + eps)` on `[B, C, h, w]`.
    pub fn normalize(&self, b: &B, z: &Tensor<B>) -> Result<Tensor<B>> {
        let per = self.check(z)?;
        b.bcast_affine(
            z,
            Some(&self.scale),
            Some(&self.shift),
            [z.numel() / per, per, 1],
        )
    }

    /// `z·sqrt(var + eps) + mean`.
    pub fn denormalize(&self, b: &B, z: &Tensor<B>) -> Result<Tensor<B>> {
        let per = self.check(z)?;
        b.bcast_affine(
            z,
            Some(&self.std),
            Some(&self.mean),
            [z.numel() / per, per, 1],
        )
    }

    fn check(&self, z: &Tensor<B>) -> Result<usize> {
        let per = self.len();
        let d = z.dims();
        if d.is_empty() || per == 0 || d[1..].iter().product::<usize>() != per {
            return Err(Error::bad_shape(
                "latent statistics",
                z.shape(),
                format!("the statistics hold {per} values per latent"),
            ));
        }
        Ok(per)
    }
}

/// The distribution of the per-sample noise level of decoder training (§2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoiseRule {
    /// `σ = τ·u`, `u ~ U[0, 1)`: the released code (default; matches the released decoders).
    Uniform,
    /// `σ = |N(0, τ²)|`: the paper's text.
    HalfNormal,
}

/// The representation autoencoder: frozen encoder, latent statistics, decoder.
#[derive(Debug, Clone)]
pub struct Rae<B: Backend> {
    /// The frozen encoder.
    pub encoder: Encoder<B>,
    /// The decoder.
    pub decoder: RaeDecoder<B>,
    /// Latent statistics; `None` means latents are not normalised (as when computing them).
    pub stats: Option<LatentStats<B>>,
    /// Square input size of the encoder (224 for DINOv2 at 256²).
    pub encoder_input_size: usize,
    /// Per-channel image mean of the encoder's processor.
    pub image_mean: [f32; 3],
    /// Per-channel image std of the encoder's processor.
    pub image_std: [f32; 3],
}

impl<B: Backend> Rae<B> {
    /// Latent grid side (`encoder_input_size / patch`).
    pub fn latent_grid(&self) -> usize {
        self.encoder_input_size / self.encoder.patch_size()
    }

    /// Latent shape `[C, h, w]`.
    pub fn latent_dims(&self) -> [usize; 3] {
        let g = self.latent_grid();
        [self.encoder.hidden_size(), g, g]
    }

    fn per_channel(&self, b: &B, x: &Tensor<B>, inverse: bool) -> Result<Tensor<B>> {
        let d = x.dims();
        if d.len() != 4 || d[1] != 3 {
            return Err(Error::bad_shape(
                "RAE",
                x.shape(),
                "images must be [B, 3, H, W]",
            ));
        }
        let (a, c): (Vec<f32>, Vec<f32>) = if inverse {
            (self.image_std.to_vec(), self.image_mean.to_vec())
        } else {
            (
                self.image_std.iter().map(|s| 1.0 / s).collect(),
                self.image_mean
                    .iter()
                    .zip(&self.image_std)
                    .map(|(m, s)| -m / s)
                    .collect(),
            )
        };
        let a = b.upload(&a, &[3])?;
        let c = b.upload(&c, &[3])?;
        b.bcast_affine(x, Some(&a), Some(&c), [d[0], 3, d[2] * d[3]])
    }

    /// Images `[B, 3, H, W]` in `[0, 1]` → encoder tokens `[B, N, C]` (resize, standardise,
    /// encoder, final norm without affine, CLS and registers dropped; §2.1–§2.2).
    pub fn encode_tokens(&self, b: &B, images: &Tensor<B>) -> Result<Tensor<B>> {
        let s = self.encoder_input_size;
        let x = resize_bicubic(b, images, s, s)?;
        let x = self.per_channel(b, &x, false)?;
        self.encoder.forward(b, &x)
    }

    /// Adds the per-sample noise of decoder training (§2.5) to tokens `[B, N, C]`:
    /// `σ_b` from `levels` (host stream), `ε` from `noise` (device fill at `offset`).
    pub fn add_token_noise(
        &self,
        b: &B,
        tokens: &Tensor<B>,
        tau: f32,
        rule: NoiseRule,
        levels: &mut PhiloxStream,
        noise: PhiloxKey,
        offset: u64,
    ) -> Result<Tensor<B>> {
        let bs = tokens.dims()[0];
        let per = tokens.numel() / bs.max(1);
        let sigma: Vec<f32> = (0..bs)
            .map(|_| match rule {
                NoiseRule::Uniform => tau * levels.uniform(),
                NoiseRule::HalfNormal => tau * libm::fabsf(levels.normal()),
            })
            .collect();
        let eps = b.fill_normal(tokens.dims(), noise, offset)?;
        let sig = b.upload(&sigma, &[bs])?;
        let scaled = b.bcast_affine(&eps, Some(&sig), None, [1, bs, per])?;
        b.binary(crate::backend::Binary::Add, tokens, &scaled)
    }

    /// Tokens `[B, N, C]` → latents `[B, C, h, w]` (normalised when statistics are set, §2.4).
    pub fn tokens_to_latent(&self, b: &B, tokens: &Tensor<B>) -> Result<Tensor<B>> {
        let d = tokens.dims();
        let [c, h, w] = self.latent_dims();
        if d.len() != 3 || d[1] != h * w || d[2] != c {
            return Err(Error::bad_shape(
                "RAE tokens",
                tokens.shape(),
                format!("expected [B, {}, {c}]", h * w),
            ));
        }
        let z = b
            .permute0213(&tokens.reshape(&[d[0], h * w, c, 1])?)?
            .reshape(&[d[0], c, h, w])?;
        match &self.stats {
            Some(s) => s.normalize(b, &z),
            None => Ok(z),
        }
    }

    /// Latents `[B, C, h, w]` → tokens `[B, N, C]` (de-normalised).
    pub fn latent_to_tokens(&self, b: &B, z: &Tensor<B>) -> Result<Tensor<B>> {
        let [c, h, w] = self.latent_dims();
        let d = z.dims();
        if d.len() != 4 || d[1] != c || d[2] != h || d[3] != w {
            let bs = d.first().copied().unwrap_or(1);
            return Err(Error::shape(
                "RAE latent",
                &crate::Shape::new(&[bs, c, h, w])?,
                z.shape(),
            ));
        }
        let z = match &self.stats {
            Some(s) => s.denormalize(b, z)?,
            None => z.clone(),
        };
        b.permute0213(&z.reshape(&[d[0], c, h * w, 1])?)?
            .reshape(&[d[0], h * w, c])
    }

    /// Images in `[0, 1]` → normalised latents (§7.1, eval mode: no noise).
    pub fn encode(&self, b: &B, images: &Tensor<B>) -> Result<Tensor<B>> {
        let tokens = self.encode_tokens(b, images)?;
        self.tokens_to_latent(b, &tokens)
    }

    /// Decoder output (standardised pixel space) → `[0, 1]`-scale pixels (not clamped).
    pub fn destandardize(&self, b: &B, img: &Tensor<B>) -> Result<Tensor<B>> {
        self.per_channel(b, img, true)
    }

    /// Normalised latents → images in `[0, 1]` scale, not clamped (§7.2).
    pub fn decode(&self, b: &B, z: &Tensor<B>) -> Result<Tensor<B>> {
        let tokens = self.latent_to_tokens(b, z)?;
        let (img, _) = self.decoder.forward(b, &tokens, Mode::Infer)?;
        self.destandardize(b, &img)
    }
}
