//! Exponential moving average of parameters (§5.1, §2.7.7, glossary §9):
//! `θ_ema ← d·θ_ema + (1 − d)·θ` after every optimiser step.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// EMA copies of a list of parameters. Stage 2 uses `d = 0.9995` ([`Ema::STAGE2_DECAY`]),
/// the stage-1 decoder `0.9978`; the copy starts as an exact copy of the freshly
/// initialised model (no warm-up) and is updated for every parameter, frozen ones included
/// (§5.1, §10.24).
#[derive(Debug, Clone)]
pub struct Ema<B: Backend> {
    decay: f32,
    params: Vec<Tensor<B>>,
}

impl<B: Backend> Ema<B> {
    /// Stage-2 decay (§5.1).
    pub const STAGE2_DECAY: f32 = 0.9995;
    /// Stage-1 decoder decay (§2.7.7).
    pub const STAGE1_DECAY: f32 = 0.9978;

    /// An EMA starting as a copy of `params` (tensor handles are cloned; ops never write
    /// into their inputs, so later parameter updates do not alias the copy).
    pub fn new(params: &[Tensor<B>], decay: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(Error::invalid(
                "EMA decay",
                format!("must be in [0, 1], got {decay}"),
            ));
        }
        Ok(Ema {
            decay,
            params: params.to_vec(),
        })
    }

    /// The decay `d`.
    pub fn decay(&self) -> f32 {
        self.decay
    }

    /// The averaged parameters, in the order given to [`Ema::new`].
    pub fn params(&self) -> &[Tensor<B>] {
        &self.params
    }

    /// Takes the averaged parameters out.
    pub fn into_params(self) -> Vec<Tensor<B>> {
        self.params
    }

    /// One update `θ_ema ← d·θ_ema + (1 − d)·θ` through [`Backend::ema_update`].
    pub fn update(&mut self, b: &B, params: &[Tensor<B>]) -> Result<()> {
        if params.len() != self.params.len() {
            return Err(Error::invalid(
                "EMA update",
                format!(
                    "the EMA holds {} parameters, got {}",
                    self.params.len(),
                    params.len()
                ),
            ));
        }
        for (e, p) in self.params.iter_mut().zip(params) {
            b.ema_update(e, p, self.decay)?;
        }
        Ok(())
    }
}
