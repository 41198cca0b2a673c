//! One stage-2 step (§4.1–§4.3, §5.1, §7.3): times from the training distribution with the
//! dimension shift, `x_t = (1 − t)·z + t·ε`, velocity target `ε − z`, label dropout, MSE
//! loss over all elements, backward, then [`Optimizer::apply`].

use alloc::format;
use alloc::vec::Vec;

use super::{Optimizer, RngState, Shard, StepReport};
use crate::backend::{Backend, Binary};
use crate::error::{Error, Result};
use crate::flow::{interpolate, shift, TimeDist};
use crate::models::{DitDh, Mode};
use crate::nn::Grads;

/// Stage-2 settings that are not the model's or the optimiser's.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage2Config {
    /// Training time distribution before the shift (§4.2).
    pub time_dist: TimeDist,
    /// Dimension-dependent shift factor `s` (§4.3; 1 disables it).
    pub shift: f64,
    /// Probability of replacing a label by the null class (0.1, §3.2).
    pub label_dropout: f32,
    /// This process's share of the global batch (data-parallel runs; [`Shard::SINGLE`]
    /// otherwise): its draws are the ones its samples take in the one-process step.
    pub shard: Shard,
}

/// Runs one training step of `model` on normalised latents `z` `[B, C, H, W]` with class
/// labels `labels`. A non-finite loss is [`Error::NonFinite`] and leaves the model and the
/// optimiser untouched (the caller keeps its last good checkpoint).
pub fn stage2_step<B: Backend>(
    b: &B,
    model: &mut DitDh<B>,
    opt: &mut Optimizer<B>,
    rng: &mut RngState,
    cfg: &Stage2Config,
    z: &crate::tensor::Tensor<B>,
    labels: &[u32],
) -> Result<(f32, StepReport)> {
    stage2_step_reduced(b, model, opt, rng, cfg, z, labels, &mut super::NoReduce)
}

/// [`stage2_step`] with `hook` applied to the gradients before the optimiser (the
/// data-parallel reduction).
pub fn stage2_step_reduced<B: Backend>(
    b: &B,
    model: &mut DitDh<B>,
    opt: &mut Optimizer<B>,
    rng: &mut RngState,
    cfg: &Stage2Config,
    z: &crate::tensor::Tensor<B>,
    labels: &[u32],
    hook: &mut dyn super::GradHook<B>,
) -> Result<(f32, StepReport)> {
    let bs = z.dims().first().copied().unwrap_or(0);
    if bs == 0 || labels.len() != bs {
        return Err(Error::invalid(
            "stage-2 step",
            format!("{} labels for a batch of {bs} latents", labels.len()),
        ));
    }
    let null = model.config.num_classes as u32;
    let mut times = cfg.shard.take(&mut rng.time, bs, 1);
    let t: Vec<f32> = (0..bs)
        .map(|_| shift(cfg.time_dist.sample(&mut times) as f64, cfg.shift) as f32)
        .collect();
    let mut drops = cfg.shard.take(&mut rng.label_drop, bs, 1);
    let y: Vec<u32> = labels
        .iter()
        .map(|&l| {
            if drops.uniform() < cfg.label_dropout {
                null
            } else {
                l
            }
        })
        .collect();
    let noise = cfg.shard.take(&mut rng.noise, bs, (z.numel() / bs) as u64);
    let eps = b.fill_normal(z.dims(), noise.key, noise.position)?;
    let xt = interpolate(b, z, &eps, &t)?;
    let target = b.binary(Binary::Sub, &eps, z)?;
    let (v, saved) = model.forward(b, &xt, &t, &y, Mode::Train)?;
    let diff = b.binary(Binary::Sub, &v, &target)?;
    let n = diff.numel() as f32;
    let loss = b.scalar(&b.sum_sq_all(&diff)?)? / n;
    if !loss.is_finite() {
        return Err(Error::NonFinite {
            what: format!("the stage-2 loss at step {}", opt.step() + 1),
        });
    }
    let dv = b.scale(&diff, 2.0 / n)?;
    let mut grads = Grads::new();
    let saved = saved
        .ok_or_else(|| Error::invalid("stage-2 step", "training forward kept no activations"))?;
    model.backward(b, &saved, &dv, &mut grads)?;
    let report = opt.apply_reduced(b, model, &grads, hook)?;
    Ok((loss, report))
}

/// The stage-2 [`Trainer`](super::Trainer): a DiT-DH, its optimiser and random streams; a
/// batch is normalised latents `[B, C, H, W]` and their labels.
#[derive(Debug, Clone)]
pub struct Stage2Trainer<B: Backend> {
    /// The model being trained (the EMA lives in `state.opt`).
    pub model: DitDh<B>,
    /// Optimiser, random streams, checkpoint metadata.
    pub state: super::RunState<B>,
    /// Time distribution, shift and label dropout.
    pub config: Stage2Config,
}

impl<B: Backend> super::Trainer<B> for Stage2Trainer<B> {
    type Batch = (crate::tensor::Tensor<B>, Vec<u32>);

    fn step(&self) -> u64 {
        self.state.opt.step()
    }

    fn train_step(
        &mut self,
        b: &B,
        batch: &Self::Batch,
        hook: &mut dyn super::GradHook<B>,
    ) -> Result<super::StepOutcome> {
        let s = &mut self.state;
        let (loss, report) = stage2_step_reduced(
            b,
            &mut self.model,
            &mut s.opt,
            &mut s.rng,
            &self.config,
            &batch.0,
            &batch.1,
            hook,
        )?;
        Ok(super::StepOutcome {
            loss,
            terms: Vec::new(),
            report,
        })
    }

    fn capture(&self, b: &B) -> Result<super::TrainCheckpoint> {
        let s = &self.state;
        super::TrainCheckpoint::capture(b, &self.model, &s.opt, &s.rng, &s.metadata)
    }

    fn restore(&mut self, b: &B, ck: &super::TrainCheckpoint, source: &str) -> Result<()> {
        let config = self.state.opt.config.clone();
        let (opt, rng) = ck.restore(b, &mut self.model, config, "DiT-DH", source)?;
        self.state.opt = opt;
        self.state.rng = rng;
        Ok(())
    }

    fn broadcast_from(
        &mut self,
        b: &B,
        coll: &mut dyn super::Collective<B>,
        root: usize,
    ) -> Result<()> {
        super::broadcast_module(b, &mut self.model, coll, root)
    }
}
