//! The core training loop (`rae_core::train::run`) on a tiny stage-2 trainer: it takes the
//! same steps as calling the step function by hand, a run interrupted by a checkpoint and
//! resumed equals an uninterrupted one bit for bit, the gradient hook sees every trainable
//! gradient before the optimiser, and a non-finite step stops with the last checkpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use rae_core::flow::TimeDist;
use rae_core::models::DitDh;
use rae_core::nn::Init;
use rae_core::optim::{AdamWConfig, Decay, LrSchedule, Warmup};
use rae_core::train::{
    run, stage2_step, GradHook, LoopHooks, NoReduce, Optimizer, OptimizerConfig, RngState,
    RunState, Stage2Config, Stage2Trainer, StepOutcome, TrainCheckpoint, Trainer,
};
use rae_core::{Backend, CpuBackend, Error, Tensor};

const STEPS: u64 = 6;
const BS: usize = 4;

fn opt_config(lr: f64) -> OptimizerConfig {
    OptimizerConfig {
        adamw: AdamWConfig {
            lr: lr as f32,
            ..AdamWConfig::default()
        },
        schedule: LrSchedule {
            base_lr: lr,
            final_lr: lr / 10.0,
            warmup_steps: 2,
            decay_end_step: STEPS,
            warmup: Warmup::FromZero,
            decay: Decay::Linear,
        },
        clip: Some(1.0),
        ema_decay: 0.9,
    }
}

fn s2() -> Stage2Config {
    Stage2Config {
        time_dist: TimeDist::parse("logit-normal_0_1").unwrap(),
        shift: 2.0,
        label_dropout: 0.1,
    }
}

fn trainer(b: &CpuBackend, lr: f64) -> Stage2Trainer<CpuBackend> {
    let model = DitDh::new(b, &mut Init::new(9), common::micro_dit_config()).unwrap();
    Stage2Trainer {
        state: RunState {
            opt: Optimizer::new(b, &model, opt_config(lr)).unwrap(),
            rng: RngState::new(4),
            metadata: vec![("kind".into(), "test".into())],
        },
        model,
        config: s2(),
    }
}

/// The batch of step `step`: deterministic latents and labels.
fn batch(b: &CpuBackend, step: u64) -> (Tensor<CpuBackend>, Vec<u32>) {
    let n = BS * 16;
    let z: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.37 + step as f32 * 1.3).sin())
        .collect();
    let labels = (0..BS).map(|i| ((i as u64 + step) % 3) as u32).collect();
    (b.upload(&z, &[BS, 4, 2, 2]).unwrap(), labels)
}

/// Hooks that record losses and keep checkpoints in memory.
#[derive(Default)]
struct Recorder {
    losses: Vec<f32>,
    saved: Vec<(u64, TrainCheckpoint)>,
    every: u64,
    stopped: Option<Option<u64>>,
}

impl LoopHooks<CpuBackend, Stage2Trainer<CpuBackend>> for Recorder {
    type Error = Error;
    fn batch(
        &mut self,
        b: &CpuBackend,
        step: u64,
    ) -> Result<(Tensor<CpuBackend>, Vec<u32>), Error> {
        Ok(batch(b, step))
    }
    fn after_step(
        &mut self,
        _b: &CpuBackend,
        _t: &Stage2Trainer<CpuBackend>,
        _done: u64,
        out: &StepOutcome,
    ) -> Result<(), Error> {
        self.losses.push(out.loss);
        Ok(())
    }
    fn checkpoint_due(&self, done: u64) -> bool {
        self.every > 0 && done % self.every == 0
    }
    fn save(&mut self, ck: &TrainCheckpoint, done: u64) -> Result<(), Error> {
        self.saved.push((done, ck.clone()));
        Ok(())
    }
    fn stopped(&mut self, e: Error, last_saved: Option<u64>) -> Error {
        self.stopped = Some(last_saved);
        e
    }
}

fn params(b: &CpuBackend, t: &Stage2Trainer<CpuBackend>) -> Vec<f32> {
    let mut out = Vec::new();
    for p in rae_core::train::all_params(&t.model) {
        out.extend(b.download(&p).unwrap());
    }
    out
}

#[test]
fn the_loop_takes_the_steps_of_the_step_function() {
    let b = CpuBackend::new();
    let mut t = trainer(&b, 1e-3);
    let mut hooks = Recorder::default();
    assert_eq!(
        run(&b, &mut t, &mut hooks, &mut NoReduce, None, STEPS).unwrap(),
        STEPS
    );
    // By hand.
    let mut m = trainer(&b, 1e-3);
    let mut losses = Vec::new();
    for step in 0..STEPS {
        let (z, l) = batch(&b, step);
        let s = &mut m.state;
        let (loss, _) =
            stage2_step(&b, &mut m.model, &mut s.opt, &mut s.rng, &s2(), &z, &l).unwrap();
        losses.push(loss);
    }
    assert_eq!(hooks.losses, losses);
    assert_eq!(params(&b, &t), params(&b, &m));
    // The last step is always checkpointed.
    assert_eq!(hooks.saved.last().map(|s| s.0), Some(STEPS));
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let b = CpuBackend::new();
    let mut whole = trainer(&b, 1e-3);
    run(
        &b,
        &mut whole,
        &mut Recorder::default(),
        &mut NoReduce,
        None,
        STEPS,
    )
    .unwrap();

    let mut first = trainer(&b, 1e-3);
    let mut h = Recorder {
        every: 2,
        ..Recorder::default()
    };
    run(&b, &mut first, &mut h, &mut NoReduce, None, 3).unwrap();
    let (at, ck) = h.saved.iter().find(|s| s.0 == 2).unwrap().clone();
    assert_eq!(at, 2);
    assert_eq!(ck.meta("kind"), Some("test"));
    // A fresh trainer (different seed state) resumed from step 2.
    let mut second = trainer(&b, 1e-3);
    second.state.rng = RngState::new(999);
    run(
        &b,
        &mut second,
        &mut Recorder::default(),
        &mut NoReduce,
        Some((&ck, "memory")),
        STEPS,
    )
    .unwrap();
    assert_eq!(second.step(), STEPS);
    assert_eq!(params(&b, &whole), params(&b, &second));
    let ema = |t: &Stage2Trainer<CpuBackend>| {
        params(&b, &{
            let mut m = t.clone();
            m.model = t.state.opt.ema_model(&t.model).unwrap();
            m
        })
    };
    assert_eq!(ema(&whole), ema(&second));
}

/// Counts the gradients it is shown and scales them: a scale of 1 must change nothing (as a
/// mean over processes that all saw the same batch), 0 must leave nothing to follow.
struct Scale(f32, usize);

impl GradHook<CpuBackend> for Scale {
    fn reduce(&mut self, b: &CpuBackend, grads: &mut [Tensor<CpuBackend>]) -> Result<(), Error> {
        self.1 = grads.len();
        for g in grads.iter_mut() {
            *g = b.scale(g, self.0)?;
        }
        Ok(())
    }
}

#[test]
fn the_gradient_hook_sees_every_trainable_gradient_before_the_optimiser() {
    let b = CpuBackend::new();
    let mut plain = trainer(&b, 1e-3);
    run(
        &b,
        &mut plain,
        &mut Recorder::default(),
        &mut NoReduce,
        None,
        2,
    )
    .unwrap();
    let mut one = trainer(&b, 1e-3);
    let mut hook = Scale(1.0, 0);
    run(&b, &mut one, &mut Recorder::default(), &mut hook, None, 2).unwrap();
    let trainable = rae_core::train::trainable_params(&one.model).len();
    assert_eq!(hook.1, trainable);
    assert_eq!(params(&b, &plain), params(&b, &one));
    // Zero gradients: no parameter moves except by weight decay.
    let mut zero = trainer(&b, 1e-3);
    let before = params(&b, &zero);
    run(
        &b,
        &mut zero,
        &mut Recorder::default(),
        &mut Scale(0.0, 0),
        None,
        1,
    )
    .unwrap();
    let after = params(&b, &zero);
    let moved = before
        .iter()
        .zip(&after)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        moved < 1e-6,
        "parameters moved by {moved} with zero gradients"
    );
    assert_ne!(params(&b, &plain), after);
}

#[test]
fn a_non_finite_step_stops_with_the_last_checkpoint() {
    let b = CpuBackend::new();
    let mut t = trainer(&b, 1e12);
    t.state.opt.config.clip = None;
    let mut h = Recorder {
        every: 1,
        ..Recorder::default()
    };
    let e = run(&b, &mut t, &mut h, &mut NoReduce, None, 50).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    let last = h.stopped.expect("stopped was not called");
    assert_eq!(last, h.saved.last().map(|s| s.0));
    assert!(last.is_some_and(|s| s < 50));
}
