//! LPIPS with a VGG-16 (§2.7.5): the perceptual term of the stage-1 decoder loss, with its
//! gradient with respect to one of the two images.
//!
//! `LPIPS(x₀, x₁)` for images in `[−1, 1]`: both are scaled `(x − shift)/scale`, run
//! through the VGG features, and at each of the five taps (relu1_2 … relu5_3) the features
//! are unit-normalised along channels (`f/(‖f‖ + 1e-10)`), their squared difference is
//! weighted per channel by the LPIPS linear layer (a 1×1 convolution without bias) and
//! averaged over the positions. The five values add up per sample; [`Lpips::forward`]
//! returns their batch mean.
//!
//! Channel normalisation runs as an RMSNorm over the channels of the `[n, h·w, c]` view:
//! `f/√(mean f² + ε)` is `√c · f/‖f‖`; the `1/√c` goes into the linear weights' scale,
//! and `ε = 10⁻²⁰/c` puts the `10⁻¹⁰` of the reference at the same place for an all-zero
//! feature vector (both give 0 there).

mod vgg;

use alloc::format;
use alloc::vec::Vec;

pub use vgg::{Vgg, VggConfig, VggSaved};

use crate::backend::{Backend, Binary, NormStats, Reduce};
use crate::error::{Error, Result};
use crate::nn::{HostTensors, Module, Param};
use crate::tensor::Tensor;

/// The ScalingLayer's shift and scale per channel.
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// LPIPS: the frozen VGG features and the five linear heads.
#[derive(Debug, Clone)]
pub struct Lpips<B: Backend> {
    /// The VGG feature extractor (frozen).
    pub vgg: Vgg<B>,
    /// `lin{k}.weight` `[1, c_k, 1, 1]` (frozen).
    pub lins: Vec<Param<B>>,
}

/// What the backward needs: the scaled reconstruction's VGG activations and each tap's
/// normalised features.
#[derive(Debug, Clone)]
pub struct LpipsSaved<B: Backend> {
    vgg: VggSaved<B>,
    taps: Vec<TapSaved<B>>,
    batch: usize,
}

#[derive(Debug, Clone)]
struct TapSaved<B: Backend> {
    /// `[n, h·w, c]` features of x₁ before normalisation.
    f1: Tensor<B>,
    stats1: NormStats<B>,
    /// `n(x₀) − n(x₁)` `[n, h·w, c]`.
    diff: Tensor<B>,
    /// The tap's `(h, w)`.
    hw: (usize, usize),
}

/// The value of one LPIPS evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct LpipsValue {
    /// The batch mean.
    pub mean: f32,
    /// Per sample.
    pub per_sample: Vec<f32>,
}

impl<B: Backend> Lpips<B> {
    /// LPIPS over a VGG of shape `cfg`, its weights zero until loaded.
    pub fn new(b: &B, cfg: &VggConfig) -> Result<Self> {
        let vgg = Vgg::new(b, cfg)?;
        let lins = cfg
            .tap_channels()
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                Ok(Param::buffer(
                    format!("lin{k}.weight"),
                    b.zeros(&[1, c, 1, 1])?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Lpips { vgg, lins })
    }

    /// Loads the VGG from `vgg` (torchvision's `features.N.*` names, timm's, or the `lpips`
    /// package's `net.sliceK.N.*`) and the linear heads from `lin` (`lin{k}.model.1.weight`
    /// as in LPIPS v0.1's `vgg.pth`, or `lin{k}.model.0.weight` / `lin{k}.weight`). Every
    /// tensor the model needs must be present, with its shape.
    pub fn load(&mut self, b: &B, vgg: &HostTensors, lin: &HostTensors) -> Result<()> {
        self.vgg.load(b, vgg)?;
        for (k, p) in self.lins.iter_mut().enumerate() {
            let found = [
                format!("lin{k}.model.1.weight"),
                format!("lin{k}.model.0.weight"),
                format!("lin{k}.weight"),
            ]
            .into_iter()
            .find_map(|n| lin.get(&n).map(|t| (n, t)));
            let (name, t) = found.ok_or_else(|| {
                Error::invalid(
                    "LPIPS linear weights",
                    format!("no `lin{k}.model.1.weight` (nor `lin{k}.weight`)"),
                )
            })?;
            let want = p.value.dims();
            if t.data.len() != p.value.numel() || t.shape.iter().product::<usize>() != t.data.len()
            {
                return Err(Error::invalid(
                    "LPIPS linear weights",
                    format!("`{name}` has shape {:?}, expected {want:?}", t.shape),
                ));
            }
            p.value = b.upload(&t.data, want)?;
        }
        Ok(())
    }

    /// `(x − shift)/scale` per channel of `[n, 3, h, w]`.
    fn scaled(b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let (n, hw) = match *x.dims() {
            [n, 3, h, w] => (n, h * w),
            _ => {
                return Err(Error::bad_shape(
                    "LPIPS input",
                    x.shape(),
                    "expected [n, 3, h, w]",
                ))
            }
        };
        let a: Vec<f32> = SCALE.iter().map(|s| 1.0 / s).collect();
        let c: Vec<f32> = SHIFT.iter().zip(SCALE).map(|(m, s)| -m / s).collect();
        b.bcast_affine(
            x,
            Some(&b.upload(&a, &[3])?),
            Some(&b.upload(&c, &[3])?),
            [n, 3, hw],
        )
    }

    /// Normalised `[n, h·w, c]` features of one tap `[n, c, h, w]`.
    fn normalise(b: &B, f: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>, NormStats<B>)> {
        let d = f.dims();
        let (n, c, hw) = (d[0], d[1], d[2] * d[3]);
        let ft = b
            .permute0213(&f.reshape(&[n, c, hw, 1])?)?
            .reshape(&[n, hw, c])?;
        let eps = 1e-20 / c as f32;
        let (y, stats) = b.rmsnorm(&ft, None, eps)?;
        Ok((ft, y, stats))
    }

    /// LPIPS of `(x0, x1)` `[n, 3, h, w]` in `[−1, 1]`; with `keep`, what
    /// [`Lpips::backward`] needs for the gradient with respect to `x1`.
    pub fn forward(
        &self,
        b: &B,
        x0: &Tensor<B>,
        x1: &Tensor<B>,
        keep: bool,
    ) -> Result<(LpipsValue, Option<LpipsSaved<B>>)> {
        if x0.dims() != x1.dims() {
            return Err(Error::shape(
                "LPIPS (the two images)",
                x0.shape(),
                x1.shape(),
            ));
        }
        let n = x0.dims()[0];
        let (t0, _) = self.vgg.forward(b, &Self::scaled(b, x0)?, false)?;
        let (t1, saved1) = self.vgg.forward(b, &Self::scaled(b, x1)?, keep)?;
        // The per-sample sum over taps stays on the device: one download per call.
        let mut per_sample: Option<Tensor<B>> = None;
        let mut taps = Vec::new();
        for (k, (f0, f1)) in t0.iter().zip(&t1).enumerate() {
            let c = f0.dims()[1];
            let hw = f0.dims()[2] * f0.dims()[3];
            let (_, n0, _) = Self::normalise(b, f0)?;
            let (f1t, n1, stats1) = Self::normalise(b, f1)?;
            let diff = b.binary(Binary::Sub, &n0, &n1)?;
            let sq = b.binary(Binary::Mul, &diff, &diff)?;
            let w = self.lins[k].value.reshape(&[c, 1])?;
            // Σ_c w_c·d_c² per position, then the mean over positions and the 1/c of the
            // normalisation: [n, hw, 1] → [n].
            let lin = b.matmul(&sq, &w, false, false)?;
            let tap = b.reduce(Reduce::Sum, &lin, [n, hw, 1])?;
            let inv = 1.0 / (hw * c) as f32;
            per_sample = Some(match per_sample {
                None => b.scale(&tap, inv)?,
                Some(acc) => b.axpy(inv, &tap, &acc)?,
            });
            if keep {
                taps.push(TapSaved {
                    f1: f1t,
                    stats1,
                    diff,
                    hw: (f0.dims()[2], f0.dims()[3]),
                });
            }
        }
        let per_sample = match per_sample {
            Some(t) => b.download(&t)?,
            None => alloc::vec![0.0f32; n],
        };
        let mean = per_sample.iter().sum::<f32>() / n.max(1) as f32;
        let saved = saved1.map(|vgg| LpipsSaved {
            vgg,
            taps,
            batch: n,
        });
        Ok((LpipsValue { mean, per_sample }, saved))
    }

    /// The gradient of `scale ·` [`LpipsValue::mean`] with respect to `x1`.
    pub fn backward(&self, b: &B, s: &LpipsSaved<B>, scale: f32) -> Result<Tensor<B>> {
        let mut dtaps = Vec::with_capacity(s.taps.len());
        for (k, t) in s.taps.iter().enumerate() {
            let d = t.diff.dims();
            let (n, hw, c) = (d[0], d[1], d[2]);
            // d/dn₁ of (1/(B·hw·c))·Σ w_c (n₀ − n₁)² = −2·w_c·(n₀ − n₁)/(B·hw·c).
            let coef = -2.0 * scale / (s.batch * hw * c) as f32;
            let w = self.lins[k].value.reshape(&[c])?;
            let dn1 = b.bcast_affine(&t.diff, Some(&b.scale(&w, coef)?), None, [n * hw, c, 1])?;
            let g = b.rmsnorm_backward(&t.f1, &t.stats1, None, &dn1)?;
            // [n, hw, c] → [n, c, hw]
            let df = b.permute0213(&g.dx.reshape(&[n, hw, c, 1])?)?;
            dtaps.push(df.reshape(&[n, c, t.hw.0, t.hw.1])?);
        }
        let dx = self.vgg.backward(b, &s.vgg, &dtaps)?;
        // Through (x − shift)/scale.
        let d = dx.dims().to_vec();
        let a: Vec<f32> = SCALE.iter().map(|v| 1.0 / v).collect();
        b.bcast_affine(
            &dx,
            Some(&b.upload(&a, &[3])?),
            None,
            [d[0], 3, d[2] * d[3]],
        )
    }
}

impl<B: Backend> Module<B> for Lpips<B> {
    crate::module_params!(vgg, lins);
}
