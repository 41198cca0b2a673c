//! The optimiser plumbing of one training step: global-norm clipping, AdamW at the
//! scheduled rate, EMA (§5.1, §2.7.7).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{all_params, set_params, trainable_params};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::{Grads, Module};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig, Ema, LrSchedule};
use crate::tensor::Tensor;

/// Hyper-parameters of the optimiser side of training.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerConfig {
    /// AdamW constants.
    pub adamw: AdamWConfig,
    /// Learning rate per step.
    pub schedule: LrSchedule,
    /// Global gradient-norm bound (`None`: no clipping; stage 2 uses 1.0).
    pub clip: Option<f32>,
    /// EMA decay (0.9995 stage 2, 0.9978 stage 1).
    pub ema_decay: f32,
}

/// What an optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// AdamW state, EMA copy and step counter for one model.
#[derive(Debug, Clone)]
pub struct Optimizer<B: Backend> {
    /// Hyper-parameters.
    pub config: OptimizerConfig,
    /// AdamW moments, one per trainable parameter in [`Module::visit`] order.
    pub adamw: AdamW<B>,
    /// EMA of every parameter in [`Module::visit`] order.
    pub ema: Ema<B>,
}

impl<B: Backend> Optimizer<B> {
    /// Fresh state for `model` (EMA = exact copy of the model, §5.1).
    pub fn new<M: Module<B>>(b: &B, model: &M, config: OptimizerConfig) -> Result<Self> {
        let adamw = AdamW::new(b, config.adamw, &trainable_params(model))?;
        let ema = Ema::new(&all_params(model), config.ema_decay)?;
        Ok(Optimizer { config, adamw, ema })
    }

    /// Optimiser steps taken so far.
    pub fn step(&self) -> u64 {
        self.adamw.steps_taken()
    }

    /// Clips, updates `model` with AdamW at the scheduled rate and updates the EMA. A
    /// missing gradient for a trainable parameter is an error naming it; a non-finite
    /// gradient norm is [`Error::NonFinite`] and leaves the model untouched.
    pub fn apply<M: Module<B>>(
        &mut self,
        b: &B,
        model: &mut M,
        grads: &Grads<B>,
    ) -> Result<StepReport> {
        self.apply_reduced(b, model, grads, &mut super::NoReduce)
    }

    /// [`Optimizer::apply`] with `hook` applied to the trainable gradients (in visiting
    /// order) before clipping: the data-parallel reduction.
    pub fn apply_reduced<M: Module<B>>(
        &mut self,
        b: &B,
        model: &mut M,
        grads: &Grads<B>,
        hook: &mut dyn super::GradHook<B>,
    ) -> Result<StepReport> {
        // Names and gradients of the trainable parameters, gathered in one visit so that
        // they pair up; the values are taken out of the model just before the update and go
        // back by name.
        let (mut names, mut gs): (Vec<String>, Vec<Tensor<B>>) = (Vec::new(), Vec::new());
        let mut missing = None;
        model.visit(&mut |p| {
            if p.trainable() {
                match grads.get(&p.name) {
                    Some(g) => {
                        names.push(p.name.clone());
                        gs.push(g.clone());
                    }
                    None => {
                        if missing.is_none() {
                            missing = Some(p.name.clone());
                        }
                    }
                }
            }
        });
        if let Some(name) = missing {
            return Err(Error::invalid(
                "optimizer",
                format!("no gradient for trainable parameter {name}"),
            ));
        }
        hook.reduce(b, &mut gs)?;
        let step = self.step() + 1;
        let clip = clip_grad_norm(b, &gs, self.config.clip).map_err(|e| match e {
            Error::NonFinite { what } => Error::NonFinite {
                what: format!("{what} at step {step}"),
            },
            e => e,
        })?;
        let (norm, scale) = (clip.total_norm, clip.factor);
        let lr = self.config.schedule.lr(self.step());
        let mut params = take_params(model, grads, &names)?;
        let stepped = self.adamw.step(b, &mut params, &gs, lr, scale);
        set_params(model, &names, &params, true)?;
        stepped?;
        self.ema.update(b, &all_params(model))?;
        Ok(StepReport {
            lr,
            grad_norm: norm,
        })
    }

    /// A copy of `model` carrying the EMA weights, written by parameter name. The EMA holds
    /// one tensor per parameter in [`Module::visit`] order; a different parameter count, a
    /// shape mismatch or a module whose `visit_mut` lists other parameters than its `visit`
    /// is an error.
    pub fn ema_model<M: Module<B> + Clone>(&self, model: &M) -> Result<M> {
        let mut m = model.clone();
        set_params(&mut m, &model.param_names(), self.ema.params(), false)?;
        Ok(m)
    }
}

/// Moves the trainable values out of `model` into the order of `names`, leaving each one's
/// gradient (same shape) in its place until [`set_params`] puts the updated values back by
/// name. The update then holds the only reference to each tensor: with a clone, a backend
/// that writes in place (the CPU backend's copy-on-write storage) would first copy every
/// parameter, which cost more than AdamW itself. The two visits may list the parameters in
/// different orders; different sets are an error, after the values went back.
fn take_params<B: Backend, M: Module<B>>(
    model: &mut M,
    grads: &Grads<B>,
    names: &[String],
) -> Result<Vec<Tensor<B>>> {
    let mut taken: BTreeMap<String, Tensor<B>> = BTreeMap::new();
    model.visit_mut(&mut |p| {
        if p.trainable() {
            if let Some(g) = grads.get(&p.name) {
                let value = core::mem::replace(&mut p.value, g.clone());
                taken.insert(p.name.clone(), value);
            }
        }
    });
    if taken.len() == names.len() && names.iter().all(|n| taken.contains_key(n)) {
        return Ok(names.iter().filter_map(|n| taken.remove(n)).collect());
    }
    let (back_names, back): (Vec<String>, Vec<Tensor<B>>) = taken.into_iter().unzip();
    set_params(model, &back_names, &back, true)?;
    Err(Error::invalid(
        "optimizer",
        "the module's visit_mut lists other trainable parameters than its visit",
    ))
}
