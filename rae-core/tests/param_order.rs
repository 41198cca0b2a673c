//! Parameter order cannot misplace weights: a model whose read-only [`Module::visit`] lists
//! its parameters in a shuffled order relative to [`Module::visit_mut`] (same names, same
//! tensors, nothing renamed) trains, saves, loads, checkpoints and builds its EMA copy
//! exactly like the unshuffled model, tensor by tensor.
//!
//! How this caught the old hazard: the optimiser gathered the trainable tensors with `visit`,
//! stepped them with AdamW and wrote them back with `set_params`, which assigned them by
//! *position* in `visit_mut` order; the EMA copy (`Optimizer::ema_model`, and through it every
//! training checkpoint) was written back the same way. Under the shuffle, position `i` of
//! `visit` is a different parameter than position `i` of `visit_mut`, so after one step
//! `x_embedder.proj.weight` held some other parameter's updated values (of whatever shape) and
//! `an_optimiser_step_updates_every_tensor_in_any_visiting_order` and
//! `a_checkpoint_round_trip_is_exact_in_any_visiting_order` failed on the first mismatching
//! name (in practice the first step already stopped: the EMA update met a tensor of another
//! shape at the misplaced position). Write-back now matches parameters by name, so the order
//! of either visit is free; `set_params` errors on any name or shape mismatch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use rae_core::models::{DitDh, Mode};
use rae_core::nn::{load_module, save_module, Grads, HostTensors, Init, Module, Param};
use rae_core::optim::{AdamWConfig, Decay, LrSchedule, Warmup};
use rae_core::train::{
    named_params, set_params, Optimizer, OptimizerConfig, RngState, TrainCheckpoint,
};
use rae_core::{Backend, Binary, CpuBackend, Tensor};

/// `M` with its read-only visit permuted (reversed, then rotated by a third) and its mutable
/// visit unchanged.
#[derive(Debug, Clone)]
struct Shuffled<M>(M);

impl<B: Backend, M: Module<B>> Module<B> for Shuffled<M> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        let mut ps = Vec::new();
        self.0.visit(&mut |p| ps.push(p));
        ps.reverse();
        let third = ps.len() / 3;
        ps.rotate_left(third);
        for p in ps {
            f(p)
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        self.0.visit_mut(f)
    }
}

/// The fixture-sized DiT-DH (encoder and decoder, position table, RoPE buffers).
fn dit(b: &CpuBackend, seed: u64) -> DitDh<CpuBackend> {
    DitDh::new(b, &mut Init::new(seed), common::micro_dit_config()).unwrap()
}

fn opt_config() -> OptimizerConfig {
    OptimizerConfig {
        adamw: AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        },
        schedule: LrSchedule {
            base_lr: 1e-2,
            final_lr: 1e-3,
            warmup_steps: 0,
            decay_end_step: 4,
            warmup: Warmup::FromZero,
            decay: Decay::Linear,
        },
        clip: Some(1.0),
        ema_decay: 0.5,
    }
}

/// Real gradients of a flow-matching-like loss `|v - x|²` on a fixed batch (names only
/// matter to the optimiser, so the same map serves the shuffled model).
fn grads(b: &CpuBackend, m: &DitDh<CpuBackend>) -> Grads<CpuBackend> {
    let n = 2 * 4 * 2 * 2;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.61).sin()).collect();
    let x = b.upload(&x, &[2, 4, 2, 2]).unwrap();
    let (v, saved) = m.forward(b, &x, &[0.3, 0.8], &[1, 2], Mode::Train).unwrap();
    let dv = b.binary(Binary::Sub, &v, &x).unwrap();
    let dv = b.scale(&dv, 2.0 / n as f32).unwrap();
    let mut g = Grads::new();
    m.backward(b, &saved.unwrap(), &dv, &mut g).unwrap();
    g
}

/// Every tensor of `got` equals the tensor of the same name in `want` (same name set).
fn assert_same(want: &HostTensors, got: &HostTensors, what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: tensor count");
    for (name, w) in want.iter() {
        let g = got
            .get(name)
            .unwrap_or_else(|| panic!("{what}: {name} missing"));
        assert_eq!(w, g, "{what}: tensor {name} differs");
    }
}

fn values(b: &CpuBackend, t: &Tensor<CpuBackend>) -> Vec<f32> {
    b.download(t).unwrap()
}

#[test]
fn the_shuffle_really_permutes_the_visit() {
    let b = CpuBackend::new();
    let s = Shuffled(dit(&b, 1));
    let mut mut_order = Vec::new();
    let mut s2 = s.clone();
    s2.visit_mut(&mut |p| mut_order.push(p.name.clone()));
    let order = s.param_names();
    assert_ne!(order, mut_order);
    let (mut a, mut c) = (order.clone(), mut_order.clone());
    a.sort();
    c.sort();
    assert_eq!(a, c, "the same parameters, only reordered");
    // The shuffle moves trainable parameters across shapes, not just buffers.
    assert_ne!(order.first(), mut_order.first());
}

#[test]
fn an_optimiser_step_updates_every_tensor_in_any_visiting_order() {
    let b = CpuBackend::new();
    let mut plain = dit(&b, 7);
    let mut shuffled = Shuffled(plain.clone());
    let before = save_module(&b, &plain).unwrap();
    let g = grads(&b, &plain);
    let mut op = Optimizer::new(&b, &plain, opt_config()).unwrap();
    let mut os = Optimizer::new(&b, &shuffled, opt_config()).unwrap();
    for _ in 0..2 {
        let rp = op.apply(&b, &mut plain, &g).unwrap();
        let rs = os.apply(&b, &mut shuffled, &g).unwrap();
        assert_eq!(rp, rs);
    }
    let after = save_module(&b, &plain).unwrap();
    assert_ne!(before, after, "the step changed the model");
    assert_same(&after, &save_module(&b, &shuffled).unwrap(), "model");
    assert_same(
        &save_module(&b, &op.ema_model(&plain).unwrap()).unwrap(),
        &save_module(&b, &os.ema_model(&shuffled).unwrap()).unwrap(),
        "EMA",
    );
    // And a third step from the written-back values still agrees.
    op.apply(&b, &mut plain, &g).unwrap();
    os.apply(&b, &mut shuffled, &g).unwrap();
    assert_same(
        &save_module(&b, &plain).unwrap(),
        &save_module(&b, &shuffled).unwrap(),
        "model after step 3",
    );
}

#[test]
fn a_checkpoint_round_trip_is_exact_in_any_visiting_order() {
    let b = CpuBackend::new();
    let mut plain = dit(&b, 3);
    let mut shuffled = Shuffled(plain.clone());
    let g = grads(&b, &plain);
    let mut op = Optimizer::new(&b, &plain, opt_config()).unwrap();
    let mut os = Optimizer::new(&b, &shuffled, opt_config()).unwrap();
    op.apply(&b, &mut plain, &g).unwrap();
    os.apply(&b, &mut shuffled, &g).unwrap();
    let rng = RngState::new(5);
    let cp = TrainCheckpoint::capture(&b, &plain, &op, &rng, &[]).unwrap();
    let cs = TrainCheckpoint::capture(&b, &shuffled, &os, &rng, &[]).unwrap();
    assert_same(&cp.tensors, &cs.tensors, "checkpoint");

    // Restore into a differently initialised shuffled model.
    let mut restored = Shuffled(dit(&b, 99));
    let (ro, _) = cs
        .restore(&b, &mut restored, opt_config(), "DiT-DH", "mem")
        .unwrap();
    assert_same(
        &save_module(&b, &plain).unwrap(),
        &save_module(&b, &restored).unwrap(),
        "restored model",
    );
    assert_same(
        &save_module(&b, &op.ema_model(&plain).unwrap()).unwrap(),
        &save_module(&b, &ro.ema_model(&restored).unwrap()).unwrap(),
        "restored EMA",
    );
    // The restored moments continue the run exactly.
    op.apply(&b, &mut plain, &g).unwrap();
    let mut ro = ro;
    ro.apply(&b, &mut restored, &g).unwrap();
    assert_same(
        &save_module(&b, &plain).unwrap(),
        &save_module(&b, &restored).unwrap(),
        "step after restore",
    );
    let w = |m: &DitDh<CpuBackend>| {
        let mut v = None;
        m.visit(&mut |p| {
            if p.name == "x_embedder.proj.weight" {
                v = Some(values(&b, &p.value));
            }
        });
        v.unwrap()
    };
    assert_eq!(w(&plain), w(&restored.0));
}

#[test]
fn save_then_load_is_exact_in_any_visiting_order() {
    let b = CpuBackend::new();
    let src = Shuffled(dit(&b, 11));
    let saved = save_module(&b, &src).unwrap();
    let mut dst = Shuffled(dit(&b, 12));
    assert_ne!(saved, save_module(&b, &dst).unwrap());
    let report = load_module(&b, &mut dst, &saved, "DiT-DH", &[], false).unwrap();
    assert_eq!(report.loaded, saved.len());
    assert_same(&saved, &save_module(&b, &dst).unwrap(), "loaded");
    assert_same(
        &saved,
        &save_module(&b, &dst.0).unwrap(),
        "loaded (unshuffled view)",
    );
}

#[test]
fn set_params_writes_by_name_in_any_visiting_order() {
    let b = CpuBackend::new();
    let src = Shuffled(dit(&b, 21));
    let mut dst = Shuffled(dit(&b, 22));
    for trainable_only in [true, false] {
        let (names, values) = named_params(&src, trainable_only);
        set_params(&mut dst, &names, &values, trainable_only).unwrap();
    }
    assert_same(
        &save_module(&b, &src).unwrap(),
        &save_module(&b, &dst).unwrap(),
        "set_params",
    );
    // The unshuffled model takes the shuffled lists too.
    let mut plain = dit(&b, 23);
    let (names, values) = named_params(&src, false);
    set_params(&mut plain, &names, &values, false).unwrap();
    assert_same(
        &save_module(&b, &src).unwrap(),
        &save_module(&b, &plain).unwrap(),
        "set_params into the plain model",
    );
}

#[test]
fn set_params_rejects_every_mismatch_and_writes_nothing() {
    let b = CpuBackend::new();
    let src = dit(&b, 31);
    let mut dst = dit(&b, 32);
    let before = save_module(&b, &dst).unwrap();
    let (names, values) = named_params(&src, true);
    let err = |names: &[String], values: &[Tensor<CpuBackend>], dst: &mut DitDh<CpuBackend>| {
        let e = set_params(dst, names, values, true).unwrap_err();
        format!("{e}")
    };

    // A missing parameter.
    let e = err(&names[1..], &values[1..], &mut dst);
    assert!(e.contains(&names[0]), "{e}");
    // A name the model lacks.
    let mut renamed = names.clone();
    renamed[0] = "no.such.weight".into();
    let e = err(&renamed, &values, &mut dst);
    assert!(e.contains("no.such.weight"), "{e}");
    // Two values swapped between parameters of different shapes.
    let j = (1..values.len())
        .find(|&j| values[j].dims() != values[0].dims())
        .unwrap();
    let mut swapped = values.clone();
    swapped.swap(0, j);
    let e = err(&names, &swapped, &mut dst);
    assert!(e.contains(&names[0]) && e.contains(&names[j]), "{e}");
    // A name given twice, and unequal list lengths.
    let mut twice = names.clone();
    twice[1] = twice[0].clone();
    assert!(err(&twice, &values, &mut dst).contains("twice"));
    assert!(err(&names, &values[1..], &mut dst).contains("names"));
    // Buffers are not trainable: offering them to a trainable-only write is a mismatch.
    let (all_names, all_values) = named_params(&src, false);
    assert!(all_names.len() > names.len());
    let e = err(&all_names, &all_values, &mut dst);
    assert!(e.contains("no parameter"), "{e}");

    assert_eq!(
        before,
        save_module(&b, &dst).unwrap(),
        "nothing was written"
    );
}

/// `M` whose `visit_mut` skips its first parameter: a module that disagrees with itself.
#[derive(Debug, Clone)]
struct Forgetful<M>(M);

impl<B: Backend, M: Module<B>> Module<B> for Forgetful<M> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        self.0.visit(f)
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        let mut first = true;
        self.0.visit_mut(&mut |p| {
            if !std::mem::take(&mut first) {
                f(p)
            }
        })
    }
}

#[test]
fn a_module_whose_visits_disagree_is_an_error_not_a_silent_misload() {
    let b = CpuBackend::new();
    let src = dit(&b, 41);
    let mut dst = Forgetful(dit(&b, 42));
    let (names, values) = named_params(&src, false);
    let e = set_params(&mut dst, &names, &values, false).unwrap_err();
    assert!(format!("{e}").contains("visit_mut"), "{e}");
    let g = grads(&b, &src);
    let mut m = Forgetful(src.clone());
    let mut opt = Optimizer::new(&b, &m, opt_config()).unwrap();
    assert!(opt.apply(&b, &mut m, &g).is_err());
    assert!(opt.ema_model(&m).is_err());
}
