//! Property tests of the optimisation math (spec §5.1, §2.7.7): AdamW, EMA, gradient
//! clipping and learning-rate schedules, on the CPU backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rae_core::backend::AdamWStep;
use rae_core::optim::{
    adamw_reference, clip_coefficient, clip_grad_norm, global_grad_norm, scale_grads, AdamW,
    AdamWConfig, Decay, Ema, LrSchedule, Warmup,
};
use rae_core::{Backend, CpuBackend, Error, Tensor};

type T = Tensor<CpuBackend>;
const B: CpuBackend = CpuBackend::new();

fn up(v: &[f32]) -> T {
    B.upload(v, &[v.len()]).unwrap()
}

fn down(x: &T) -> Vec<f32> {
    B.download(x).unwrap()
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * a.abs().max(b.abs())
}

// ------------------------------------------------------------------------------ AdamW

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn first_adamw_step_matches_the_hand_computed_update(
        p in prop::collection::vec(-3.0f32..3.0, 1..20),
        gsign in prop::collection::vec(prop_oneof![0.001f32..2.0, -2.0f32..-0.001], 20),
        lr in 1e-5f32..1e-2, wd in prop_oneof![Just(0.0f32), 0.0f32..0.1],
        b1 in 0.5f32..0.99, b2 in 0.9f32..0.999,
    ) {
        let g = &gsign[..p.len()];
        let cfg = AdamWConfig { lr, beta1: b1, beta2: b2, eps: 1e-8, weight_decay: wd };
        // Step 1 from zero moments: m̂ = g and v̂ = g², so the update is
        // p·(1 − lr·wd) − lr·g/(|g| + eps).
        let want: Vec<f64> = p.iter().zip(g).map(|(&pi, &gi)| {
            let (pi, gi) = (pi as f64, gi as f64);
            pi * (1.0 - lr as f64 * wd as f64) - lr as f64 * gi / (gi.abs() + 1e-8)
        }).collect();
        // Host reference.
        let (mut ph, mut m, mut v) = (p.clone(), vec![0.0; p.len()], vec![0.0; p.len()]);
        adamw_reference(&mut ph, g, &mut m, &mut v, &cfg.step_params(1, lr, 1.0)).unwrap();
        // Backend optimiser.
        let mut params = vec![up(&p)];
        let mut opt = AdamW::new(&B, cfg, &params).unwrap();
        opt.step(&B, &mut params, &[up(g)], lr, 1.0).unwrap();
        prop_assert_eq!(opt.steps_taken(), 1);
        let pb = down(&params[0]);
        for i in 0..p.len() {
            prop_assert!(close(ph[i] as f64, want[i], 1e-6, 1e-7), "reference {} vs {}", ph[i], want[i]);
            prop_assert!(close(pb[i] as f64, want[i], 1e-6, 1e-7), "backend {} vs {}", pb[i], want[i]);
            prop_assert!(close(m[i] as f64, (1.0 - b1 as f64) * g[i] as f64, 1e-6, 0.0));
            prop_assert!(close(v[i] as f64, (1.0 - b2 as f64) * (g[i] as f64).powi(2), 1e-6, 0.0));
        }
        let (mb, vb) = (down(&opt.first_moments()[0]), down(&opt.second_moments()[0]));
        for i in 0..p.len() {
            prop_assert!(close(mb[i] as f64, m[i] as f64, 1e-6, 0.0));
            prop_assert!(close(vb[i] as f64, v[i] as f64, 1e-6, 0.0));
        }
    }

    #[test]
    fn backend_adamw_tracks_the_host_reference_over_many_steps(
        p0 in prop::collection::vec(-1.0f32..1.0, 8),
        grads in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 8), 1..12),
        scale in 0.1f32..1.0, wd in 0.0f32..0.05,
    ) {
        let cfg = AdamWConfig { weight_decay: wd, ..AdamWConfig::default() };
        let (mut ph, mut m, mut v) = (p0.clone(), vec![0.0; 8], vec![0.0; 8]);
        let mut params = vec![up(&p0), up(&p0[..3])];
        let mut opt = AdamW::new(&B, cfg, &params).unwrap();
        for (k, g) in grads.iter().enumerate() {
            let lr = 1e-3 * (1.0 + k as f32);
            adamw_reference(&mut ph, g, &mut m, &mut v, &cfg.step_params(k as u64 + 1, lr, scale)).unwrap();
            opt.step(&B, &mut params, &[up(g), up(&g[..3])], lr, scale).unwrap();
        }
        let pb = down(&params[0]);
        for i in 0..8 {
            prop_assert!(close(pb[i] as f64, ph[i] as f64, 1e-5, 1e-6), "{} vs {}", pb[i], ph[i]);
        }
        // The second tensor saw the same leading gradients.
        let pb2 = down(&params[1]);
        for i in 0..3 {
            prop_assert!(close(pb2[i] as f64, ph[i] as f64, 1e-5, 1e-6));
        }
    }

    #[test]
    fn zero_gradient_and_zero_decay_leave_parameters_in_place(
        p in prop::collection::vec(-5.0f32..5.0, 1..16), steps in 1usize..10, lr in 1e-5f32..1.0,
    ) {
        let mut params = vec![up(&p)];
        let mut opt = AdamW::new(&B, AdamWConfig::default(), &params).unwrap();
        let zero = up(&vec![0.0; p.len()]);
        for _ in 0..steps {
            opt.step(&B, &mut params, std::slice::from_ref(&zero), lr, 1.0).unwrap();
        }
        prop_assert_eq!(down(&params[0]), p.clone());
        let (mut ph, mut m, mut v) = (p.clone(), vec![0.0; p.len()], vec![0.0; p.len()]);
        adamw_reference(&mut ph, &vec![0.0; p.len()], &mut m, &mut v, &AdamWConfig::default().step_params(1, lr, 1.0)).unwrap();
        prop_assert_eq!(ph, p);
    }

    #[test]
    fn a_gradient_scale_is_the_same_as_scaling_the_gradient(
        p in prop::collection::vec(-1.0f32..1.0, 6),
        g in prop::collection::vec(-1.0f32..1.0, 6), k in 0.05f32..1.0,
    ) {
        let hp = |s: f32| AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0, step: 3, grad_scale: s };
        let (mut a, mut ma, mut va) = (p.clone(), vec![0.1; 6], vec![0.2; 6]);
        let (mut b, mut mb, mut vb) = (p.clone(), vec![0.1; 6], vec![0.2; 6]);
        adamw_reference(&mut a, &g, &mut ma, &mut va, &hp(k)).unwrap();
        let gs: Vec<f32> = g.iter().map(|&x| x * k).collect();
        adamw_reference(&mut b, &gs, &mut mb, &mut vb, &hp(1.0)).unwrap();
        for i in 0..6 {
            prop_assert!(close(a[i] as f64, b[i] as f64, 1e-6, 1e-7));
        }
    }
}

#[test]
fn adamw_rejects_mismatched_inputs() {
    let mut params = vec![up(&[1.0, 2.0])];
    let mut opt = AdamW::new(&B, AdamWConfig::default(), &params).unwrap();
    assert!(opt.step(&B, &mut params, &[], 1e-3, 1.0).is_err());
    assert!(opt.step(&B, &mut params, &[up(&[1.0])], 1e-3, 1.0).is_err());
    assert!(opt
        .step(&B, &mut params, &[up(&[1.0, 1.0])], f32::NAN, 1.0)
        .is_err());
    let e = opt
        .step(&B, &mut params, &[up(&[1.0, 1.0])], 1e-3, f32::INFINITY)
        .unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    assert_eq!(opt.steps_taken(), 0, "failed steps are not counted");
    let bad = AdamWConfig {
        beta1: 1.0,
        ..AdamWConfig::default()
    };
    assert!(AdamW::new(&B, bad, &params).is_err());
    assert!(adamw_reference(
        &mut [0.0],
        &[0.0, 1.0],
        &mut [0.0],
        &mut [0.0],
        &AdamWConfig::default().step_params(1, 1e-3, 1.0)
    )
    .is_err());
    // The defaults are the reference's (§5.1).
    let d = AdamWConfig::default();
    assert_eq!(
        (d.lr, d.beta1, d.beta2, d.eps, d.weight_decay),
        (2e-4, 0.9, 0.95, 1e-8, 0.0)
    );
}

// -------------------------------------------------------------------------------- EMA

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ema_after_n_steps_matches_the_closed_form(
        e0 in prop::collection::vec(-2.0f32..2.0, 5),
        seq in prop::collection::vec(prop::collection::vec(-2.0f32..2.0, 5), 1..40),
        d in 0.5f32..0.9999,
    ) {
        let mut ema = Ema::new(&[up(&e0)], d).unwrap();
        for p in &seq {
            ema.update(&B, &[up(p)]).unwrap();
        }
        // e_n = dⁿ·e_0 + (1 − d)·Σ_k d^(n−1−k)·p_k
        let n = seq.len();
        let dd = d as f64;
        let got = down(&ema.params()[0]);
        for i in 0..5 {
            let mut want = dd.powi(n as i32) * e0[i] as f64;
            for (k, p) in seq.iter().enumerate() {
                want += (1.0 - dd) * dd.powi((n - 1 - k) as i32) * p[i] as f64;
            }
            prop_assert!(close(got[i] as f64, want, 1e-5, 1e-5), "{} vs {want}", got[i]);
        }
    }

    #[test]
    fn ema_of_a_constant_parameter_converges_geometrically(
        e0 in -2.0f32..2.0, p in -2.0f32..2.0, n in 1usize..200,
    ) {
        let d = Ema::<CpuBackend>::STAGE2_DECAY;
        let mut ema = Ema::new(&[up(&[e0])], d).unwrap();
        let param = up(&[p]);
        for _ in 0..n {
            ema.update(&B, std::slice::from_ref(&param)).unwrap();
        }
        let want = p as f64 + (d as f64).powi(n as i32) * (e0 as f64 - p as f64);
        prop_assert!(close(down(&ema.params()[0])[0] as f64, want, 1e-5, 1e-5));
    }
}

#[test]
fn ema_starts_as_an_exact_copy_and_checks_its_inputs() {
    let p = vec![up(&[1.0, -2.0]), up(&[3.0])];
    let mut ema = Ema::new(&p, 0.9995).unwrap();
    assert_eq!(down(&ema.params()[0]), vec![1.0, -2.0]);
    assert_eq!(down(&ema.params()[1]), vec![3.0]);
    assert!(ema.update(&B, &p[..1]).is_err());
    assert!(ema.update(&B, &[up(&[1.0]), up(&[3.0])]).is_err());
    assert!(Ema::new(&p, 1.5).is_err());
    assert!(Ema::new(&p, f32::NAN).is_err());
}

// ------------------------------------------------------------------------ clipping

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn clipping_caps_the_global_norm_and_keeps_the_direction(
        grads in prop::collection::vec(prop::collection::vec(-3.0f32..3.0, 1..30), 1..4),
        max_norm in 0.01f32..20.0,
    ) {
        let ts: Vec<T> = grads.iter().map(|g| up(g)).collect();
        let total: f64 = grads.iter().flatten().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        prop_assume!(total > 1e-3);
        let rep = clip_grad_norm(&B, &ts, Some(max_norm)).unwrap();
        prop_assert!(close(rep.total_norm as f64, total, 1e-5, 0.0), "{} vs {total}", rep.total_norm);
        prop_assert!(rep.factor > 0.0 && rep.factor <= 1.0);
        let clipped = scale_grads(&B, &ts, rep.factor).unwrap();
        let flat: Vec<f32> = clipped.iter().flat_map(down).collect();
        let orig: Vec<f32> = grads.iter().flatten().copied().collect();
        let cn: f64 = flat.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let want = total.min(max_norm as f64);
        prop_assert!(close(cn, want, 1e-5, 1e-6), "clipped norm {cn} vs min(norm, max) {want}");
        // Same direction: c·‖g‖ = g·‖c‖ element-wise.
        for (c, g) in flat.iter().zip(&orig) {
            prop_assert!((*c as f64 * total - *g as f64 * cn).abs() <= 1e-5 * total * cn.max(1e-3));
        }
        // Without clipping the factor is 1 and the norm is still reported.
        let none = clip_grad_norm(&B, &ts, None).unwrap();
        prop_assert_eq!(none.factor, 1.0);
        prop_assert_eq!(none.total_norm, rep.total_norm);
        prop_assert_eq!(global_grad_norm(&B, &ts).unwrap(), rep.total_norm);
    }
}

#[test]
fn clipping_follows_pytorch_and_reports_non_finite_norms() {
    // coef = max/(total + 1e-6), clamped to 1.
    assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
    assert!((clip_coefficient(4.0, 1.0) as f64 - 1.0 / (4.0 + 1e-6)).abs() < 1e-8);
    let g = [up(&[3.0, 4.0])];
    let rep = clip_grad_norm(&B, &g, Some(1.0)).unwrap();
    assert_eq!(rep.total_norm, 5.0);
    assert!((rep.factor - 0.2).abs() < 1e-6);
    for bad in [f32::NAN, f32::INFINITY] {
        let e = clip_grad_norm(&B, &[up(&[1.0]), up(&[bad, 0.0])], Some(1.0)).unwrap_err();
        assert!(matches!(e, Error::NonFinite { .. }), "{e}");
        let e = clip_grad_norm(&B, &[up(&[bad])], None).unwrap_err();
        assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    }
    assert!(clip_grad_norm(&B, &g, Some(0.0)).is_err());
    assert!(clip_grad_norm(&B, &g, Some(-1.0)).is_err());
    assert_eq!(clip_grad_norm(&B, &[], Some(1.0)).unwrap().total_norm, 0.0);
}

// ------------------------------------------------------------------------ schedules

fn warmup_strategy() -> impl Strategy<Value = Warmup> {
    prop_oneof![Just(Warmup::FromZero), Just(Warmup::Constant)]
}

fn decay_strategy() -> impl Strategy<Value = Decay> {
    prop_oneof![
        Just(Decay::Linear),
        Just(Decay::Cosine),
        Just(Decay::Constant)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn schedules_hit_their_rates_are_monotone_and_continuous(
        base in 1e-5f64..1e-2, ratio in 0.0f64..1.0, w in 0u64..150, span in 0u64..300,
        warmup in warmup_strategy(), decay in decay_strategy(),
    ) {
        let fin = base * ratio;
        let s = LrSchedule { base_lr: base, final_lr: fin, warmup_steps: w, decay_end_step: w + span, warmup, decay };
        let e = w + span;
        let lr = |k: u64| s.lr_f64(k);
        // The base rate at the end of the warm-up and at the start of the decay.
        if w > 0 {
            prop_assert!(close(lr(w - 1), base, 1e-12, 0.0), "lr(W − 1) = {}", lr(w - 1));
        }
        if span > 0 || decay == Decay::Constant {
            prop_assert!(close(lr(w), base, 1e-12, 0.0));
        }
        // The final rate at the end of the decay and forever after.
        let target = if decay == Decay::Constant { base } else { fin };
        for k in [e, e + 1, e + 1000] {
            prop_assert!(close(lr(k), target, 1e-12, 0.0));
        }
        // Monotone in each phase.
        for k in 1..w {
            prop_assert!(lr(k) >= lr(k - 1));
            if warmup == Warmup::FromZero {
                prop_assert!(close(lr(k - 1), base * k as f64 / w as f64, 1e-12, 0.0));
            }
        }
        for k in w + 1..=e + 2 {
            prop_assert!(lr(k) <= lr(k - 1) * (1.0 + 1e-12), "step {k}");
        }
        // Continuous at the joins: no jump larger than the largest change inside the
        // decay phase (π/2·(base − final)/span for the cosine).
        if w > 0 && span > 0 {
            prop_assert!((lr(w) - lr(w - 1)).abs() <= 1e-12 * base);
        }
        if span > 0 && e > 0 {
            let bound = std::f64::consts::FRAC_PI_2 * (base - fin) / span as f64 + 1e-12 * base;
            prop_assert!((lr(e) - lr(e - 1)).abs() <= bound, "jump {} > {bound}", (lr(e) - lr(e - 1)).abs());
        }
        prop_assert_eq!(s.lr(w / 2), s.lr_f64(w / 2) as f32);
    }

    #[test]
    fn schedules_from_epochs_round_down_to_whole_steps(
        we in 0.0f64..5.0, extra in 0.0f64..20.0, spe in 1u64..3000,
    ) {
        let s = LrSchedule::from_epochs(1e-3, 1e-4, we, we + extra, spe, Warmup::FromZero, Decay::Cosine).unwrap();
        prop_assert_eq!(s.warmup_steps, (we * spe as f64).floor() as u64);
        prop_assert_eq!(s.decay_end_step, ((we + extra) * spe as f64).floor() as u64);
    }
}

#[test]
fn reference_schedules_follow_the_configs() {
    // §5.1: 1251 steps per epoch, constant 2e-4 for 40 epochs, linear to 2e-5 at epoch 800.
    let s2 = LrSchedule::stage2_reference(1251).unwrap();
    assert_eq!(s2.warmup_steps, 40 * 1251);
    assert_eq!(s2.decay_end_step, 800 * 1251);
    assert_eq!(s2.lr(0), 2e-4);
    assert_eq!(s2.lr(40 * 1251 - 1), 2e-4);
    let mid = (40 * 1251 + 800 * 1251) / 2;
    let p = (mid - 40 * 1251) as f64 / (760.0 * 1251.0);
    assert!((s2.lr_f64(mid) - 2e-4 * (1.0 - 0.9 * p)).abs() < 1e-15);
    assert_eq!(s2.lr(800 * 1251), 2e-5);
    assert_eq!(s2.lr(1400 * 1251), 2e-5);
    // §2.7.7: warm-up from zero over 1 epoch, cosine to 2e-5 at epoch 16.
    let spe = 2502;
    let s1 = LrSchedule::stage1_reference(spe).unwrap();
    assert!((s1.lr_f64(0) - 2e-4 / spe as f64).abs() < 1e-18);
    assert!((s1.lr_f64(spe - 1) - 2e-4).abs() < 1e-18);
    let half = spe + (15 * spe) / 2;
    assert!((s1.lr_f64(half) - 1.1e-4).abs() < 1e-12);
    assert!((s1.lr_f64(16 * spe) - 2e-5).abs() < 1e-18);
    assert!(
        LrSchedule::from_epochs(1e-3, 1e-4, -1.0, 2.0, 10, Warmup::Constant, Decay::Linear)
            .is_err()
    );
    assert!(LrSchedule::from_epochs(
        f64::NAN,
        1e-4,
        1.0,
        2.0,
        10,
        Warmup::Constant,
        Decay::Linear
    )
    .is_err());
}
