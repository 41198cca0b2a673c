//! Learning-rate schedules (§5.1, §2.7.7, §10.26): a warm-up, then constant, linear or
//! cosine decay to a final rate, stepped once per optimiser step.
//!
//! Semantics follow the reference `LambdaLR`: optimiser step `s` (0-based) uses
//! `lr(s) = base · λ(s)` with `W` warm-up steps and decay ending at step `E ≥ W`:
//! `λ = (s + 1)/W` (from zero) or `1` (constant) for `s < W`; `final/base` for `s ≥ E`;
//! otherwise, with `p = (s − W)/max(E − W, 1)`, `1 − (1 − r)·p` (linear) or
//! `r + (1 − r)·½(1 + cos πp)` (cosine), `r = final/base`.

use alloc::format;

use crate::error::{Error, Result};

/// How the rate behaves during the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmup {
    /// Linear ramp `base·(s + 1)/W`, reaching `base` at the last warm-up step (stage 1;
    /// the first stage-2 release).
    FromZero,
    /// The base rate throughout (`warmup_from_zero: false`, current stage-2 configs).
    Constant,
}

/// What follows the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decay {
    /// The base rate forever (the final rate is ignored).
    Constant,
    /// Linear from base to final over `[W, E)`, final afterwards (stage 2).
    Linear,
    /// Half-cosine from base to final over `[W, E)`, final afterwards (stage 1).
    Cosine,
}

/// A learning-rate schedule over optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Rate after the warm-up.
    pub base_lr: f64,
    /// Rate at and after the end of the decay.
    pub final_lr: f64,
    /// Warm-up length `W` in steps.
    pub warmup_steps: u64,
    /// First step `E` at the final rate (`E ≥ W`).
    pub decay_end_step: u64,
    /// Warm-up shape.
    pub warmup: Warmup,
    /// Decay shape.
    pub decay: Decay,
}

impl LrSchedule {
    /// A schedule from epochs as the configs state them: `W = ⌊warmup_epochs·spe⌋`,
    /// `E = max(⌊decay_end_epoch·spe⌋, W)`, `spe` = optimiser steps per epoch.
    pub fn from_epochs(
        base_lr: f64,
        final_lr: f64,
        warmup_epochs: f64,
        decay_end_epoch: f64,
        steps_per_epoch: u64,
        warmup: Warmup,
        decay: Decay,
    ) -> Result<Self> {
        let ok = |e: f64| e >= 0.0 && e.is_finite();
        if !(ok(warmup_epochs) && ok(decay_end_epoch)) {
            return Err(Error::invalid(
                "learning-rate schedule",
                format!(
                    "epochs must be finite and >= 0, got warm-up {warmup_epochs}, decay end {decay_end_epoch}"
                ),
            ));
        }
        let spe = steps_per_epoch as f64;
        let warmup_steps = libm::floor(warmup_epochs * spe) as u64;
        let decay_end_step = (libm::floor(decay_end_epoch * spe) as u64).max(warmup_steps);
        let s = LrSchedule {
            base_lr,
            final_lr,
            warmup_steps,
            decay_end_step,
            warmup,
            decay,
        };
        s.validate()?;
        Ok(s)
    }

    /// Stage 2 (§5.1): 2e-4 held for 40 epochs, linear decay to 2e-5 reached at epoch 800.
    /// ImageNet at batch 1024 has 1251 steps per epoch.
    pub fn stage2_reference(steps_per_epoch: u64) -> Result<Self> {
        Self::from_epochs(
            2e-4,
            2e-5,
            40.0,
            800.0,
            steps_per_epoch,
            Warmup::Constant,
            Decay::Linear,
        )
    }

    /// Stage 1 (§2.7.7): 1 epoch linear warm-up from zero to 2e-4, cosine to 2e-5 ending
    /// at epoch 16.
    pub fn stage1_reference(steps_per_epoch: u64) -> Result<Self> {
        Self::from_epochs(
            2e-4,
            2e-5,
            1.0,
            16.0,
            steps_per_epoch,
            Warmup::FromZero,
            Decay::Cosine,
        )
    }

    /// An error unless the rates are finite and `>= 0` and `E ≥ W`.
    pub fn validate(&self) -> Result<()> {
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !ok(self.base_lr) || !ok(self.final_lr) {
            return Err(Error::invalid(
                "learning-rate schedule",
                format!(
                    "rates must be finite and >= 0, got base {}, final {}",
                    self.base_lr, self.final_lr
                ),
            ));
        }
        if self.decay_end_step < self.warmup_steps {
            return Err(Error::invalid(
                "learning-rate schedule",
                format!(
                    "decay end step {} is before the end of the warm-up ({})",
                    self.decay_end_step, self.warmup_steps
                ),
            ));
        }
        Ok(())
    }

    /// The rate for optimiser step `step` (0-based), in f64.
    pub fn lr_f64(&self, step: u64) -> f64 {
        let base = self.base_lr;
        let w = self.warmup_steps;
        if step < w {
            return match self.warmup {
                Warmup::FromZero => base * (step + 1) as f64 / w as f64,
                Warmup::Constant => base,
            };
        }
        if self.decay == Decay::Constant {
            return base;
        }
        if step >= self.decay_end_step {
            return self.final_lr;
        }
        let span = (self.decay_end_step - w).max(1) as f64;
        let p = (step - w) as f64 / span;
        let fin = self.final_lr;
        match self.decay {
            Decay::Linear => base - (base - fin) * p,
            Decay::Cosine => {
                fin + (base - fin) * 0.5 * (1.0 + libm::cos(core::f64::consts::PI * p))
            }
            Decay::Constant => base,
        }
    }

    /// The rate for optimiser step `step` (0-based), rounded to f32 for the optimiser.
    pub fn lr(&self, step: u64) -> f32 {
        self.lr_f64(step) as f32
    }
}
