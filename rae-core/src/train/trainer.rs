//! The training loop of every stage, written once: a stage is a [`Trainer`] (its models,
//! optimiser, random streams and one step on a batch), and [`run`] owns step counting,
//! checkpoint capture, resume, non-finite stops and the caller's hooks (data, logging,
//! sample grids, the gradient reduction of a data-parallel run).

use alloc::string::String;
use alloc::vec::Vec;

use super::{AverageGrads, Collective, Optimizer, ReduceOp, RngState, StepReport, TrainCheckpoint};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Called on the trainable gradients of a step, in visiting order, after the backward and
/// before clipping and the optimiser: where a data-parallel run all-reduces them
/// ([`AverageGrads`], which [`run`] uses). A step called directly in one process uses
/// [`NoReduce`].
pub trait GradHook<B: Backend> {
    /// Replaces `grads` by their reduction over all processes (the mean for an equal share
    /// of the global batch per process).
    fn reduce(&mut self, b: &B, grads: &mut [Tensor<B>]) -> Result<()>;
}

/// The gradient hook of a single process: leaves the gradients as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReduce;

impl<B: Backend> GradHook<B> for NoReduce {
    fn reduce(&mut self, _b: &B, _grads: &mut [Tensor<B>]) -> Result<()> {
        Ok(())
    }
}

/// What one step of a stage produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// The loss the stage reports (stage 2: the flow-matching MSE; stage 1: the L1).
    pub loss: f32,
    /// Further named loss terms of the step (empty for stage 2).
    pub terms: Vec<(&'static str, f32)>,
    /// The optimiser's report (learning rate, gradient norm).
    pub report: StepReport,
}

/// One stage of training: its models, optimiser state and random streams, one step on a
/// batch, and what its checkpoint holds.
pub trait Trainer<B: Backend> {
    /// What one step consumes (images, or latents with labels).
    type Batch;
    /// Optimiser steps taken so far.
    fn step(&self) -> u64;
    /// One optimisation step on `batch`, with `hook` applied to the gradients before the
    /// optimiser. A non-finite loss or gradient is [`Error::NonFinite`] and leaves the
    /// models and the optimiser untouched.
    fn train_step(
        &mut self,
        b: &B,
        batch: &Self::Batch,
        hook: &mut dyn GradHook<B>,
    ) -> Result<StepOutcome>;
    /// Everything needed to continue the run exactly: models, EMA, optimiser moments, the
    /// step, the random streams and the stage's metadata.
    fn capture(&self, b: &B) -> Result<TrainCheckpoint>;
    /// Continues from `ck` (read from `source`, named in errors).
    fn restore(&mut self, b: &B, ck: &TrainCheckpoint, source: &str) -> Result<()>;
    /// Replaces the trained model's parameters by those of process `root` of `coll` (the
    /// start of a data-parallel run, and after a resume).
    fn broadcast_from(&mut self, b: &B, coll: &mut dyn Collective<B>, root: usize) -> Result<()>;
}

/// What the loop asks of its caller. `E` is the caller's error type (a command-line tool's,
/// say); the core's errors convert into it.
pub trait LoopHooks<B: Backend, T: Trainer<B>> {
    /// The caller's error type.
    type Error: From<Error>;
    /// The batch of step `step` (0-based: the number of steps already taken).
    fn batch(&mut self, b: &B, step: u64) -> core::result::Result<T::Batch, Self::Error>;
    /// After step `done` (1-based) finished: progress, logging, sample grids.
    fn after_step(
        &mut self,
        b: &B,
        trainer: &T,
        done: u64,
        outcome: &StepOutcome,
    ) -> core::result::Result<(), Self::Error>;
    /// Whether a checkpoint is due after step `done`.
    fn checkpoint_due(&self, done: u64) -> bool;
    /// Writes the checkpoint captured after step `done`.
    fn save(&mut self, ck: &TrainCheckpoint, done: u64) -> core::result::Result<(), Self::Error>;
    /// The error to return when a step was not finite: `last_saved` is the step of the last
    /// checkpoint written by this run or the one it resumed from (`None`: none yet).
    fn stopped(&mut self, e: Error, last_saved: Option<u64>) -> Self::Error;
}

/// Runs `trainer` until it has taken `stop` steps: optionally resumed first from `resume`
/// (a checkpoint and its file name), a checkpoint after every step the hooks ask for and
/// always after the last one. Returns the number of steps taken.
///
/// `coll` is the data-parallel group ([`super::Single`] for one process): the trained
/// parameters are broadcast from process 0 before the first step (after the resume), the
/// gradients of every step are averaged over the processes before clipping and the
/// optimiser, and the loss terms the hooks see are the means over the processes. Every
/// process calls the hooks; which of them write files is the hooks' choice.
pub fn run<B: Backend, T: Trainer<B>, H: LoopHooks<B, T>>(
    b: &B,
    trainer: &mut T,
    hooks: &mut H,
    coll: &mut dyn Collective<B>,
    resume: Option<(&TrainCheckpoint, &str)>,
    stop: u64,
) -> core::result::Result<u64, H::Error> {
    let mut last_saved = None;
    if let Some((ck, source)) = resume {
        trainer.restore(b, ck, source)?;
        last_saved = Some(trainer.step());
    }
    trainer.broadcast_from(b, coll, 0)?;
    while trainer.step() < stop {
        let batch = hooks.batch(b, trainer.step())?;
        let mut outcome = match trainer.train_step(b, &batch, &mut AverageGrads(&mut *coll)) {
            Ok(o) => o,
            Err(e @ Error::NonFinite { .. }) => return Err(hooks.stopped(e, last_saved)),
            Err(e) => return Err(e.into()),
        };
        mean_terms(coll, &mut outcome)?;
        let done = trainer.step();
        if done == stop || hooks.checkpoint_due(done) {
            let ck = trainer.capture(b)?;
            hooks.save(&ck, done)?;
            last_saved = Some(done);
        }
        hooks.after_step(b, trainer, done, &outcome)?;
    }
    Ok(trainer.step())
}

/// Replaces the loss and the named terms of `o` by their means over the processes.
fn mean_terms<B: Backend>(coll: &mut dyn Collective<B>, o: &mut StepOutcome) -> Result<()> {
    if coll.world() == 1 {
        return Ok(());
    }
    let mut v: Vec<f64> = core::iter::once(o.loss as f64)
        .chain(o.terms.iter().map(|t| t.1 as f64))
        .collect();
    coll.reduce_scalars(&mut v, ReduceOp::Mean)?;
    o.loss = v[0] as f32;
    for (t, x) in o.terms.iter_mut().zip(&v[1..]) {
        t.1 = *x as f32;
    }
    Ok(())
}

/// The state every stage's trainer carries besides its models: the optimiser, the random
/// streams and the metadata its checkpoints record.
#[derive(Debug, Clone)]
pub struct RunState<B: Backend> {
    /// Optimiser, schedule and EMA of the trained model.
    pub opt: Optimizer<B>,
    /// Random streams.
    pub rng: RngState,
    /// Metadata written into every checkpoint (the run's settings).
    pub metadata: Vec<(String, String)>,
}
