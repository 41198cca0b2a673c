//! AdamW (§5.1, §2.7.7): PyTorch semantics — decoupled weight decay, bias correction,
//! `eps` added to the bias-corrected root of the second moment.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::{AdamWStep, Backend};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The constant hyper-parameters of AdamW. The default is the reference's
/// (§5.1, §2.7.7): lr 2e-4, β = (0.9, 0.95), eps 1e-8, weight decay 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Base learning rate (a schedule may replace it per step).
    pub lr: f32,
    /// First-moment decay β1.
    pub beta1: f32,
    /// Second-moment decay β2.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWConfig {
    /// An error unless `0 ≤ β < 1`, `eps ≥ 0`, `lr ≥ 0` and `weight_decay ≥ 0`, all finite.
    pub fn validate(&self) -> Result<()> {
        let ok_beta = |b: f32| (0.0..1.0).contains(&b);
        let ok_nonneg = |x: f32| x.is_finite() && x >= 0.0;
        if !ok_beta(self.beta1) || !ok_beta(self.beta2) {
            return Err(Error::invalid(
                "AdamW betas",
                format!("need 0 <= beta < 1, got ({}, {})", self.beta1, self.beta2),
            ));
        }
        if !ok_nonneg(self.lr) || !ok_nonneg(self.eps) || !ok_nonneg(self.weight_decay) {
            return Err(Error::invalid(
                "AdamW",
                format!(
                    "lr, eps and weight decay must be finite and >= 0, got lr = {}, eps = {}, wd = {}",
                    self.lr, self.eps, self.weight_decay
                ),
            ));
        }
        Ok(())
    }

    /// The scalars of step `step` (1-based) at rate `lr` with gradient factor `grad_scale`.
    pub fn step_params(&self, step: u64, lr: f32, grad_scale: f32) -> AdamWStep {
        AdamWStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            step,
            grad_scale,
        }
    }
}

/// One AdamW step on host slices, written from the PyTorch definition in f64 and rounded
/// once per value: the oracle the backend kernels are tested against.
///
/// `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`,
/// `p ← p − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + eps)`, `g = grad_scale·grad`.
pub fn adamw_reference(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    hp: &AdamWStep,
) -> Result<()> {
    let n = p.len();
    if g.len() != n || m.len() != n || v.len() != n {
        return Err(Error::invalid(
            "adamw_reference",
            format!(
                "slice lengths differ: param {n}, grad {}, m {}, v {}",
                g.len(),
                m.len(),
                v.len()
            ),
        ));
    }
    if hp.step == 0 {
        return Err(Error::invalid(
            "adamw_reference",
            "the step number is 1-based",
        ));
    }
    let (b1, b2) = (hp.beta1 as f64, hp.beta2 as f64);
    let t = hp.step.min(i32::MAX as u64) as f64;
    let bc1 = 1.0 - libm::pow(b1, t);
    let bc2 = 1.0 - libm::pow(b2, t);
    let lr = hp.lr as f64;
    for i in 0..n {
        let gi = g[i] as f64 * hp.grad_scale as f64;
        let pi = p[i] as f64 * (1.0 - lr * hp.weight_decay as f64);
        let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
        let denom = libm::sqrt(vi) / libm::sqrt(bc2) + hp.eps as f64;
        p[i] = (pi - lr / bc1 * mi / denom) as f32;
        m[i] = mi as f32;
        v[i] = vi as f32;
    }
    Ok(())
}

/// AdamW state for a list of parameter tensors: the first and second moments `m`, `v`
/// (same shapes as the parameters, zero-initialised as in PyTorch) and the step count.
/// Each step calls [`Backend::adamw_step`] per parameter.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    config: AdamWConfig,
    step: u64,
    m: Vec<Tensor<B>>,
    v: Vec<Tensor<B>>,
}

impl<B: Backend> AdamW<B> {
    /// Fresh state for `params` (moments zero, no step taken).
    pub fn new(b: &B, config: AdamWConfig, params: &[Tensor<B>]) -> Result<Self> {
        config.validate()?;
        let mut m = Vec::with_capacity(params.len());
        let mut v = Vec::with_capacity(params.len());
        for p in params {
            m.push(b.zeros(p.dims())?);
            v.push(b.zeros(p.dims())?);
        }
        Ok(AdamW {
            config,
            step: 0,
            m,
            v,
        })
    }

    /// State restored from a checkpoint: `step` steps taken, moments `m`, `v`.
    pub fn from_state(
        config: AdamWConfig,
        step: u64,
        m: Vec<Tensor<B>>,
        v: Vec<Tensor<B>>,
    ) -> Result<Self> {
        config.validate()?;
        if m.len() != v.len() {
            return Err(Error::invalid(
                "AdamW state",
                format!("{} first moments but {} second moments", m.len(), v.len()),
            ));
        }
        for (i, (mi, vi)) in m.iter().zip(&v).enumerate() {
            if mi.shape() != vi.shape() {
                return Err(Error::invalid(
                    "AdamW state",
                    format!(
                        "moments of parameter {i} differ: m {}, v {}",
                        mi.shape(),
                        vi.shape()
                    ),
                ));
            }
        }
        Ok(AdamW { config, step, m, v })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Number of steps taken (the next step is `steps_taken() + 1`).
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The first moments, one per parameter.
    pub fn first_moments(&self) -> &[Tensor<B>] {
        &self.m
    }

    /// The second moments, one per parameter.
    pub fn second_moments(&self) -> &[Tensor<B>] {
        &self.v
    }

    /// One step on every parameter at rate `lr`, gradients multiplied by `grad_scale` (the
    /// clipping factor of [`crate::optim::clip_grad_norm`], 1 without clipping).
    ///
    /// `params` and `grads` are in the order given to [`AdamW::new`]. On an error the step
    /// count is not advanced, but parameters before the failing one are already updated.
    pub fn step(
        &mut self,
        b: &B,
        params: &mut [Tensor<B>],
        grads: &[Tensor<B>],
        lr: f32,
        grad_scale: f32,
    ) -> Result<()> {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            return Err(Error::invalid(
                "AdamW step",
                format!(
                    "the optimiser holds {} parameters, got {} parameters and {} gradients",
                    self.m.len(),
                    params.len(),
                    grads.len()
                ),
            ));
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::invalid(
                "AdamW step",
                format!("learning rate {lr} must be finite and >= 0"),
            ));
        }
        if !grad_scale.is_finite() {
            return Err(Error::NonFinite {
                what: format!("AdamW gradient scale {grad_scale}"),
            });
        }
        let hp = self.config.step_params(self.step + 1, lr, grad_scale);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            b.adamw_step(p, g, m, v, &hp)?;
        }
        self.step += 1;
        Ok(())
    }
}
