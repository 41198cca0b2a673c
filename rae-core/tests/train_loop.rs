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
use rae_core::rng::PhiloxStream;
use rae_core::train::{
    run, stage2_step, Collective, HostCollective, HostComm, LoopHooks, Optimizer, OptimizerConfig,
    ReduceOp, RngState, RunState, Shard, Single, Stage2Config, Stage2Trainer, StepOutcome,
    TrainCheckpoint, Trainer, DEFAULT_BUCKET,
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
        shard: Default::default(),
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
        self.every > 0 && done.is_multiple_of(self.every)
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
        run(&b, &mut t, &mut hooks, &mut Single, None, STEPS).unwrap(),
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
        &mut Single,
        None,
        STEPS,
    )
    .unwrap();

    let mut first = trainer(&b, 1e-3);
    let mut h = Recorder {
        every: 2,
        ..Recorder::default()
    };
    run(&b, &mut first, &mut h, &mut Single, None, 3).unwrap();
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
        &mut Single,
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

/// A stand-in group that counts the tensors it reduces and scales them: a scale of 1 must
/// change nothing (as a mean over processes that all saw the same batch), 0 must leave
/// nothing to follow.
struct Scale(f32, usize);

impl Collective<CpuBackend> for Scale {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce(
        &mut self,
        b: &CpuBackend,
        grads: &mut [Tensor<CpuBackend>],
        _: ReduceOp,
    ) -> Result<(), Error> {
        self.1 = grads.len();
        for g in grads.iter_mut() {
            *g = b.scale(g, self.0)?;
        }
        Ok(())
    }
    fn broadcast(
        &mut self,
        _: &CpuBackend,
        _: &mut [Tensor<CpuBackend>],
        _: usize,
    ) -> Result<(), Error> {
        Ok(())
    }
    fn reduce_scalars(&mut self, _: &mut [f64], _: ReduceOp) -> Result<(), Error> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<(), Error> {
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
        &mut Single,
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
    let e = run(&b, &mut t, &mut h, &mut Single, None, 50).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    let last = h.stopped.expect("stopped was not called");
    assert_eq!(last, h.saved.last().map(|s| s.0));
    assert!(last.is_some_and(|s| s < 50));
}

/// An in-process stand-in for a host engine such as MPI, for the core's own test: `world`
/// threads meet at a barrier and sum through a shared buffer (in f64, so the summation
/// order hardly matters). The command-line tool's tests run the real MPI.
struct ThreadComm {
    rank: usize,
    world: usize,
    shared: std::sync::Arc<(std::sync::Mutex<Vec<f64>>, std::sync::Barrier)>,
}

impl ThreadComm {
    fn exchange(&mut self, buf: &mut [f64], root: Option<usize>) {
        let (acc, bar) = &*self.shared;
        if self.rank == 0 {
            *acc.lock().unwrap() = vec![0.0; buf.len()];
        }
        bar.wait();
        if root.is_none_or(|r| r == self.rank) {
            let mut a = acc.lock().unwrap();
            a.iter_mut().zip(buf.iter()).for_each(|(x, v)| *x += *v);
        }
        bar.wait();
        buf.copy_from_slice(&acc.lock().unwrap());
        bar.wait();
    }
}

impl HostComm for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn sum_f32(&mut self, buf: &mut [f32]) -> Result<(), Error> {
        let mut w: Vec<f64> = buf.iter().map(|&v| v as f64).collect();
        self.exchange(&mut w, None);
        buf.iter_mut().zip(&w).for_each(|(v, x)| *v = *x as f32);
        Ok(())
    }
    fn sum_f64(&mut self, buf: &mut [f64]) -> Result<(), Error> {
        self.exchange(buf, None);
        Ok(())
    }
    fn broadcast_f32(&mut self, buf: &mut [f32], root: usize) -> Result<(), Error> {
        let mut w: Vec<f64> = buf.iter().map(|&v| v as f64).collect();
        self.exchange(&mut w, Some(root));
        buf.iter_mut().zip(&w).for_each(|(v, x)| *v = *x as f32);
        Ok(())
    }
    fn barrier(&mut self) -> Result<(), Error> {
        self.shared.1.wait();
        Ok(())
    }
}

/// This process's rows of the global batch of the step.
struct Sliced(Recorder, Shard);

impl LoopHooks<CpuBackend, Stage2Trainer<CpuBackend>> for Sliced {
    type Error = Error;
    fn batch(&mut self, b: &CpuBackend, step: u64) -> Result<(T2, Vec<u32>), Error> {
        let (z, labels) = batch(b, step);
        let r = self.1.range(BS)?;
        let per = z.numel() / BS;
        let host = b.download(&z)?;
        let local = b.upload(&host[r.start * per..r.end * per], &[r.len(), 4, 2, 2])?;
        Ok((local, labels[r].to_vec()))
    }
    fn after_step(
        &mut self,
        b: &CpuBackend,
        t: &Stage2Trainer<CpuBackend>,
        done: u64,
        out: &StepOutcome,
    ) -> Result<(), Error> {
        self.0.after_step(b, t, done, out)
    }
    fn checkpoint_due(&self, _: u64) -> bool {
        false
    }
    fn save(&mut self, _: &TrainCheckpoint, _: u64) -> Result<(), Error> {
        Ok(())
    }
    fn stopped(&mut self, e: Error, _: Option<u64>) -> Error {
        e
    }
}

type T2 = Tensor<CpuBackend>;

/// Runs the loop in `world` threads, each with its share of every global batch; returns
/// each thread's per-step losses and final parameters.
fn data_parallel(world: usize, bucket: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let shared = std::sync::Arc::new((
        std::sync::Mutex::new(Vec::new()),
        std::sync::Barrier::new(world),
    ));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let shared = shared.clone();
                s.spawn(move || {
                    let b = CpuBackend::new();
                    let mut t = trainer(&b, 1e-3);
                    let shard = Shard { rank, world };
                    t.config.shard = shard;
                    if rank > 0 {
                        // Different start weights: the broadcast from process 0 must win.
                        t.model =
                            DitDh::new(&b, &mut Init::new(77), common::micro_dit_config()).unwrap();
                    }
                    let mut coll = HostCollective {
                        comm: ThreadComm {
                            rank,
                            world,
                            shared,
                        },
                        bucket,
                    };
                    let mut h = Sliced(Recorder::default(), shard);
                    run(&b, &mut t, &mut h, &mut coll, None, STEPS).unwrap();
                    (h.0.losses, params(&b, &t))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_data_parallel_step_equals_the_one_process_step_with_the_global_batch() {
    let b = CpuBackend::new();
    let mut one = trainer(&b, 1e-3);
    let mut h = Recorder::default();
    run(&b, &mut one, &mut h, &mut Single, None, STEPS).unwrap();
    let want = params(&b, &one);
    for (world, bucket) in [(2, DEFAULT_BUCKET), (4, 7)] {
        for (rank, (losses, got)) in data_parallel(world, bucket).iter().enumerate() {
            assert_eq!(losses.len(), h.losses.len());
            for (step, (a, e)) in losses.iter().zip(&h.losses).enumerate() {
                let rel = (a - e).abs() / e.abs();
                assert!(
                    rel <= 1e-6,
                    "world {world}, rank {rank}, step {step}: loss {a} vs {e} (rel {rel:e})"
                );
            }
            let worst = got
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-5,
                "world {world}, rank {rank}: parameters differ by {worst}"
            );
        }
    }
}

#[test]
fn shards_split_the_draws_of_the_global_batch() {
    let mut whole = PhiloxStream::new(3, 9);
    whole.advance(5);
    let mut all = vec![0.0f32; 6 * 4];
    whole.clone().uniforms(&mut all);
    let mut got = Vec::new();
    let mut end = None;
    for rank in 0..3 {
        let mut s = whole;
        let mut cursor = Shard { rank, world: 3 }.take(&mut s, 2, 4);
        let mut v = vec![0.0f32; 2 * 4];
        cursor.uniforms(&mut v);
        got.extend(v);
        assert!(end.is_none_or(|e| e == s.position));
        end = Some(s.position);
    }
    assert_eq!(got, all);
    assert_eq!(end, Some(5 + 24));
    assert!(Shard { rank: 0, world: 3 }.range(16).is_err());
    assert!(Shard { rank: 3, world: 3 }.range(15).is_err());
    assert_eq!(Shard { rank: 2, world: 3 }.range(15).unwrap(), 10..15);
}
