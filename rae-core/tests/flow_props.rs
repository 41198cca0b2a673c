//! Property tests of flow matching (spec §4): path, time distributions, shift and grids,
//! ODE/SDE samplers and guidance, on the CPU backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;

use proptest::prelude::*;
use rae_core::flow::{
    inv_normal_cdf, normal_cdf, sample_ode, sample_sde, sde_grid, shift, shift_factor,
    shifted_grid, unshift, AutoGuidance, ClassifierFreeGuidance, Diffusion, GuidanceInterval, Keep,
    LastStep, OdeMethod, SdeMethod, SdeOptions, TimeDist, VelocityField,
};
use rae_core::rng::PhiloxStream;
use rae_core::{CpuBackend, Error, PhiloxKey, Result};

mod common;
use common::{down, up, T};

const B: CpuBackend = CpuBackend::new();

/// A host-computed element-wise field `v_i = f(x_i, t)` wrapped as a backend closure.
fn host_field(f: impl Fn(f64, f64) -> f64) -> impl FnMut(&T, f32) -> Result<T> {
    move |x: &T, t: f32| {
        let v: Vec<f32> = down(x)
            .iter()
            .map(|&xi| f(xi as f64, t as f64) as f32)
            .collect();
        Ok(up(&v, x.dims()))
    }
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// A strictly decreasing grid from `start` to `end` through the sorted interior points.
fn grid_from(start: f32, end: f32, mut interior: Vec<f32>) -> Vec<f32> {
    interior.retain(|&t| t < start && t > end);
    interior.sort_by(|a, b| b.partial_cmp(a).unwrap());
    interior.dedup();
    let mut g = vec![start];
    g.extend(interior);
    g.push(end);
    g
}

// ------------------------------------------------------------------------- shift (§4.3)

#[test]
fn shift_matches_the_spec_anchors() {
    // §11: s(256²) and s(512²).
    let s256 = shift_factor(768 * 16 * 16, 4096).unwrap();
    let s512 = shift_factor(768 * 32 * 32, 4096).unwrap();
    assert!((s256 - 6.928203230275509).abs() < 1e-15, "{s256}");
    assert!((s512 - 13.856406460551018).abs() < 1e-14, "{s512}");
    // shift(0.5) = 0.8738680…, shift(0.001) = 0.0068874…, shift(0.04) = 0.2240…,
    // shift(0.999) = 0.99986… (values rounded to the digits shown).
    let rounds_to =
        |v: f64, shown: f64, digits: i32| (v - shown).abs() <= 0.5 * 10f64.powi(-digits);
    assert!(
        rounds_to(shift(0.5, s256), 0.8738680, 7),
        "{}",
        shift(0.5, s256)
    );
    assert!(
        rounds_to(shift(0.001, s256), 0.0068874, 7),
        "{}",
        shift(0.001, s256)
    );
    assert!(
        rounds_to(shift(0.04, s256), 0.2240, 4),
        "{}",
        shift(0.04, s256)
    );
    assert!(
        rounds_to(shift(0.999, s256), 0.99986, 5),
        "{}",
        shift(0.999, s256)
    );
    assert!(shift_factor(0, 4096).is_err());
}

#[test]
fn reference_grid_has_fifty_points_from_one_to_shift_of_0_001() {
    let s = shift_factor(196_608, 4096).unwrap();
    let g = shifted_grid(50, s, 0.001).unwrap();
    assert_eq!(g.len(), 50, "50 points = 49 Euler steps (§10.3)");
    assert_eq!(g[0], 1.0);
    assert!((g[49] as f64 - 0.0068874).abs() < 1e-6, "{}", g[49]);
    assert!(g.windows(2).all(|w| w[1] < w[0]));
    // Each point is shift(1 − 0.999·k/49).
    for (k, &t) in g.iter().enumerate() {
        let r = 1.0 - 0.999 * k as f64 / 49.0;
        assert!((t as f64 - shift(r, s)).abs() < 1e-6, "k = {k}");
    }
    assert!(shifted_grid(1, s, 0.001).is_err());
    assert!(shifted_grid(10, s, 1.0).is_err());
    assert!(shifted_grid(10, -1.0, 0.0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn shift_is_a_monotone_bijection_of_the_unit_interval(
        a in 0.0f64..=1.0, b in 0.0f64..=1.0, s in 0.05f64..50.0,
    ) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(shift(lo, s) <= shift(hi, s));
        prop_assert_eq!(shift(0.0, s), 0.0);
        prop_assert!((shift(1.0, s) - 1.0).abs() <= 4.0 * f64::EPSILON);
        prop_assert!((unshift(shift(a, s), s) - a).abs() <= 1e-12);
        prop_assert!((shift(unshift(a, s), s) - a).abs() <= 1e-12);
        prop_assert_eq!(shift(a, 1.0), a);
        // s > 1 moves interior times toward the noise end, s < 1 toward the data.
        if s > 1.0 { prop_assert!(shift(a, s) >= a); } else { prop_assert!(shift(a, s) <= a); }
    }

    #[test]
    fn shifted_grids_are_shifted_linspaces(
        n in 2usize..80, s in 0.5f64..20.0, end in 0.0f64..0.5, start in 0.6f64..0.9999,
    ) {
        let g = shifted_grid(n, s, end).unwrap();
        prop_assert_eq!(g.len(), n);
        prop_assert_eq!(g[0], 1.0);
        prop_assert!((g[n - 1] as f64 - shift(end, s)).abs() < 1e-7);
        prop_assert!(g.windows(2).all(|w| w[1] < w[0]));
        for (k, &t) in g.iter().enumerate() {
            let r = 1.0 - (1.0 - end) * k as f64 / (n - 1) as f64;
            prop_assert!((unshift(t as f64, s) - r).abs() < 1e-5);
        }
        let sg = sde_grid(n, s, start, end.max(0.01)).unwrap();
        prop_assert!((sg[0] as f64 - shift(start, s)).abs() < 1e-7);
        prop_assert!(sg[0] < 1.0);
        prop_assert!(sg.windows(2).all(|w| w[1] < w[0]));
    }
}

#[test]
fn sde_grid_refuses_to_start_at_one_or_end_at_zero() {
    assert!(sde_grid(10, 2.0, 1.0, 0.04).is_err());
    assert!(sde_grid(10, 2.0, 0.999, 0.0).is_err());
}

// ------------------------------------------------------ time distributions (§4.2)

#[test]
fn inverse_normal_cdf_known_values_and_limits() {
    assert_eq!(inv_normal_cdf(0.5), 0.0);
    assert!((inv_normal_cdf(0.975) - 1.959_963_984_540_054).abs() < 1e-14);
    assert!((inv_normal_cdf(0.841_344_746_068_542_9) - 1.0).abs() < 1e-12);
    assert_eq!(inv_normal_cdf(0.0), f64::NEG_INFINITY);
    assert_eq!(inv_normal_cdf(1.0), f64::INFINITY);
    assert!(inv_normal_cdf(-0.1).is_nan() && inv_normal_cdf(1.5).is_nan());
    assert!((normal_cdf(0.0) - 0.5).abs() < 1e-16);
    assert!((normal_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-15);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn inverse_normal_cdf_inverts_the_cdf_on_minus_8_to_8(x in -8.0f64..=8.0) {
        let p = normal_cdf(x);
        let back = inv_normal_cdf(p);
        // Rounding p to f64 moves the exact inverse by at most ulp(p)/φ(x).
        let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let tol = 1e-13 * (1.0 + x.abs()) + 2.0 * f64::EPSILON * p / density;
        prop_assert!((back - x).abs() <= tol, "x = {x}, back = {back}, tol = {tol}");
        // Symmetry Φ⁻¹(1 − p) = −Φ⁻¹(p) on exactly representable complements.
        let q = (p * 1024.0).round() / 1024.0;
        if q > 0.0 && q < 1.0 {
            prop_assert!((inv_normal_cdf(1.0 - q) + inv_normal_cdf(q)).abs() < 1e-13);
        }
    }
}

/// The Dvoretzky–Kiefer–Wolfowitz bound: `P(sup|F_n − F| > ε) ≤ 2·exp(−2nε²)`; this returns
/// the ε for failure probability 1e-6.
fn dkw_eps(n: usize) -> f64 {
    ((2.0f64 / 1e-6).ln() / (2.0 * n as f64)).sqrt()
}

fn empirical_cdf(sorted: &[f32], x: f64) -> f64 {
    sorted.partition_point(|&v| (v as f64) <= x) as f64 / sorted.len() as f64
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn logit_normal_draws_follow_their_quantiles(
        mu in -1.5f64..1.5, sigma in 0.3f64..2.0, seed in any::<u64>(),
        truncate in any::<bool>(), lo in 0.0f64..0.3, hi in 0.7f64..1.0,
    ) {
        let (t0, t1) = if truncate { (lo, hi) } else { (0.0, 1.0) };
        let dist = TimeDist::LogitNormal { mu, sigma, t0, t1 };
        let n = 20_000;
        let mut rng = PhiloxStream::new(seed, 3);
        let mut draws = vec![0.0f32; n];
        dist.sample_into(&mut rng, &mut draws);
        prop_assert_eq!(rng.position, n as u64, "one stream position per draw");
        prop_assert!(draws.iter().all(|&t| t >= t0 as f32 && t <= t1 as f32));
        draws.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let eps = dkw_eps(n);
        // Quantiles: sigmoid(μ + σ·Φ⁻¹(q)) for the untruncated law; for the truncated one
        // q is first mapped into [Φ(α), Φ(β)].
        let (pa, pb) = if truncate {
            let logit = |t: f64| (t / (1.0 - t)).ln();
            (normal_cdf((logit(t0) - mu) / sigma), normal_cdf((logit(t1) - mu) / sigma))
        } else {
            (0.0, 1.0)
        };
        for i in 1..20 {
            let q = i as f64 / 20.0;
            let xq = sigmoid(mu + sigma * inv_normal_cdf(pa + q * (pb - pa)));
            let fq = empirical_cdf(&draws, xq);
            prop_assert!((fq - q).abs() <= eps, "q = {q}: F_n = {fq}, eps = {eps}");
        }
        // And the CDF computed through Φ alone (no Φ⁻¹) at fixed times.
        for i in 1..50 {
            let t = i as f64 / 50.0;
            let fq = empirical_cdf(&draws, t);
            prop_assert!((fq - dist.cdf(t)).abs() <= eps, "t = {t}");
        }
    }

    #[test]
    fn uniform_draws_are_uniform_on_their_interval(
        seed in any::<u64>(), lo in 0.0f64..0.4, hi in 0.5f64..1.0,
    ) {
        let dist = TimeDist::Uniform { t0: lo, t1: hi };
        let n = 10_000;
        let mut rng = PhiloxStream::new(seed, 0);
        let mut draws: Vec<f32> = (0..n).map(|_| dist.sample(&mut rng)).collect();
        prop_assert!(draws.iter().all(|&t| t >= lo as f32 && t <= hi as f32));
        draws.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for i in 1..20 {
            let t = lo + (hi - lo) * i as f64 / 20.0;
            prop_assert!((empirical_cdf(&draws, t) - i as f64 / 20.0).abs() <= dkw_eps(n));
        }
    }
}

#[test]
fn reference_time_strings_parse() {
    assert_eq!(
        TimeDist::parse("uniform").unwrap(),
        TimeDist::Uniform { t0: 0.0, t1: 0.999 }
    );
    assert_eq!(
        TimeDist::parse("logit-normal_0_1").unwrap(),
        TimeDist::LogitNormal {
            mu: 0.0,
            sigma: 1.0,
            t0: 0.0,
            t1: 0.999
        }
    );
    assert_eq!(
        TimeDist::parse("logit-normal_-0.5_1.5").unwrap(),
        TimeDist::LogitNormal {
            mu: -0.5,
            sigma: 1.5,
            t0: 0.0,
            t1: 0.999
        }
    );
    for bad in [
        "gaussian",
        "logit-normal",
        "logit-normal_0",
        "logit-normal_0_0",
        "logit-normal_0_-1",
        "logit-normal_a_1",
        "logit-normal_0_1_2",
        "uniform_1",
    ] {
        let e = TimeDist::parse(bad).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{bad}: {e}");
    }
}

#[test]
fn reference_logit_normal_stays_below_0_999() {
    let dist = TimeDist::parse("logit-normal_0_1").unwrap();
    let mut rng = PhiloxStream::new(7, 1);
    let mut draws = vec![0.0f32; 50_000];
    dist.sample_into(&mut rng, &mut draws);
    assert!(draws.iter().all(|&t| (0.0..=0.999f32).contains(&t)));
    // Half the mass of sigmoid(N(0, 1)) is below 0.5.
    let below = draws.iter().filter(|&&t| t < 0.5).count() as f64 / draws.len() as f64;
    assert!((below - 0.5).abs() < dkw_eps(draws.len()));
}

// ------------------------------------------------------------------- path (§4.1)

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn interpolation_is_the_straight_path_per_sample(
        batch in 1usize..5, rest in 1usize..9, seed in any::<u64>(),
        ts in prop::collection::vec(0.0f32..=1.0, 5),
    ) {
        let mut rng = PhiloxStream::new(seed, 0);
        let mut x = vec![0.0f32; batch * rest];
        let mut e = vec![0.0f32; batch * rest];
        rng.normals(&mut x);
        rng.normals(&mut e);
        let t = &ts[..batch];
        let xt = down(&rae_core::flow::interpolate(&B, &up(&x, &[batch, rest]), &up(&e, &[batch, rest]), t).unwrap());
        let target = down(&rae_core::flow::velocity_target(&B, &up(&x, &[batch, rest]), &up(&e, &[batch, rest])).unwrap());
        for bi in 0..batch {
            let tb = t[bi] as f64;
            let r = bi * rest..(bi + 1) * rest;
            let want: Vec<f64> = x[r.clone()].iter().zip(&e[r.clone()])
                .map(|(&a, &b)| (1.0 - tb) * a as f64 + tb * b as f64).collect();
            prop_assert!(max_abs_diff(&xt[r.clone()], &want) < 1e-5);
            // Host form agrees, and x_t = x + t·(ε − x).
            let mut host = vec![0.0f32; rest];
            rae_core::flow::interpolate_host(&x[r.clone()], &e[r.clone()], t[bi], &mut host).unwrap();
            prop_assert!(max_abs_diff(&host, &want) < 1e-5);
            let via_target: Vec<f64> = x[r.clone()].iter().zip(&target[r.clone()])
                .map(|(&a, &u)| a as f64 + tb * u as f64).collect();
            prop_assert!(max_abs_diff(&xt[r.clone()], &via_target) < 1e-5);
        }
        let mut host_target = vec![0.0f32; x.len()];
        rae_core::flow::velocity_target_host(&x, &e, &mut host_target).unwrap();
        prop_assert_eq!(host_target, target);
    }
}

#[test]
fn interpolation_endpoints_and_errors() {
    let x = up(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let e = up(&[-1.0, 0.5, 7.0, 9.0], &[2, 2]);
    let xt = down(&rae_core::flow::interpolate(&B, &x, &e, &[0.0, 1.0]).unwrap());
    assert_eq!(xt, vec![1.0, 2.0, 7.0, 9.0]);
    assert!(rae_core::flow::interpolate(&B, &x, &e, &[0.5]).is_err());
    assert!(rae_core::flow::interpolate(&B, &x, &e, &[0.5, f32::NAN]).is_err());
    assert!(rae_core::flow::interpolate(&B, &x, &up(&[0.0; 4], &[4]), &[0.5, 0.5]).is_err());
    assert!(rae_core::flow::interpolate_host(&[1.0], &[1.0, 2.0], 0.5, &mut [0.0]).is_err());
}

// ---------------------------------------------------------------- ODE samplers (§4.4)

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn euler_follows_the_ideal_field_of_one_data_point_exactly(
        z in prop::collection::vec(-3.0f32..3.0, 6),
        eps in prop::collection::vec(-3.0f32..3.0, 6),
        interior in prop::collection::vec(0.001f32..0.999, 0..30),
        end in prop_oneof![Just(0.0f32), 0.0f32..0.5],
    ) {
        // For data z, the velocity field is v(x, t) = (x − z)/t, constant (= ε − z) along
        // the straight path, so Euler stays on the path on any grid.
        let grid = grid_from(1.0, end, interior);
        let zt = up(&z, &[2, 3]);
        let mut field = |x: &T, t: f32| -> Result<T> {
            use rae_core::Backend;
            let d = B.axpy(-1.0, &zt, x)?;
            B.scale(&d, 1.0 / t)
        };
        let out = sample_ode(&B, &mut field, up(&eps, &[2, 3]), &grid, OdeMethod::Euler, Keep::All).unwrap();
        prop_assert_eq!(out.evaluations, grid.len() - 1);
        prop_assert_eq!(out.states.len(), grid.len());
        let te = end as f64;
        let want: Vec<f64> = z.iter().zip(&eps).map(|(&a, &b)| (1.0 - te) * a as f64 + te * b as f64).collect();
        prop_assert!(max_abs_diff(&down(&out.x), &want) < 2e-5, "{:?} vs {:?}", down(&out.x), want);
        // Every intermediate state is on the path as well.
        for (s, &t) in out.states.iter().zip(&grid) {
            let tt = t as f64;
            let w: Vec<f64> = z.iter().zip(&eps).map(|(&a, &b)| (1.0 - tt) * a as f64 + tt * b as f64).collect();
            prop_assert!(max_abs_diff(&down(s), &w) < 2e-5);
        }
    }

    #[test]
    fn heun_is_exact_for_fields_linear_in_t(
        a in prop::collection::vec(-2.0f64..2.0, 4),
        b in prop::collection::vec(-2.0f64..2.0, 4),
        x0 in prop::collection::vec(-2.0f32..2.0, 4),
        interior in prop::collection::vec(0.0f32..1.0, 0..20),
        start in 0.8f32..=1.0, end in 0.0f32..0.2,
    ) {
        let grid = grid_from(start, end, interior);
        let (a2, b2) = (a.clone(), b.clone());
        let mut field = move |x: &T, t: f32| -> Result<T> {
            let v: Vec<f32> = (0..4).map(|i| (a2[i] + b2[i] * t as f64) as f32).collect();
            Ok(up(&v, x.dims()))
        };
        let out = sample_ode(&B, &mut field, up(&x0, &[4]), &grid, OdeMethod::Heun, Keep::Last).unwrap();
        prop_assert_eq!(out.evaluations, 2 * (grid.len() - 1));
        prop_assert!(out.states.is_empty());
        let (t0, t1) = (start as f64, end as f64);
        let want: Vec<f64> = (0..4)
            .map(|i| x0[i] as f64 + a[i] * (t1 - t0) + b[i] * (t1 * t1 - t0 * t0) / 2.0)
            .collect();
        prop_assert!(max_abs_diff(&down(&out.x), &want) < 2e-5);
    }

    #[test]
    fn halving_the_step_divides_the_error_by_2_for_euler_and_4_for_heun(
        c in prop_oneof![0.5f64..2.0, -2.0f64..-0.5],
        x1 in prop::collection::vec(0.5f32..2.0, 3),
    ) {
        // dx/dt = c(1 + t)·x from t = 1 to 0: x(0) = x(1)·exp(−1.5c).
        let exact: Vec<f64> = x1.iter().map(|&v| v as f64 * (-1.5 * c).exp()).collect();
        let err = |n: usize, method: OdeMethod| -> f64 {
            let grid: Vec<f32> = (0..n).map(|k| 1.0 - k as f32 / (n - 1) as f32).collect();
            let mut field = host_field(move |x, t| c * (1.0 + t) * x);
            let out = sample_ode(&B, &mut field, up(&x1, &[3]), &grid, method, Keep::Last).unwrap();
            max_abs_diff(&down(&out.x), &exact)
        };
        let euler = err(17, OdeMethod::Euler) / err(33, OdeMethod::Euler);
        let heun = err(17, OdeMethod::Heun) / err(33, OdeMethod::Heun);
        prop_assert!((1.7..2.3).contains(&euler), "Euler ratio {euler}");
        prop_assert!((3.4..4.6).contains(&heun), "Heun ratio {heun}");
    }
}

#[test]
fn samplers_reject_bad_grids_and_bad_fields() {
    let x = up(&[0.0; 4], &[4]);
    let mut zero = |x: &T, _t: f32| -> Result<T> { Ok(x.clone()) };
    for grid in [
        vec![1.0f32],
        vec![1.0, 1.0],
        vec![1.0, 0.5, 0.7],
        vec![1.5, 0.0],
    ] {
        assert!(sample_ode(
            &B,
            &mut zero,
            x.clone(),
            &grid,
            OdeMethod::Euler,
            Keep::Last
        )
        .is_err());
    }
    let mut wrong = |_x: &T, _t: f32| -> Result<T> { Ok(up(&[0.0; 3], &[3])) };
    let e = sample_ode(
        &B,
        &mut wrong,
        x.clone(),
        &[1.0, 0.0],
        OdeMethod::Euler,
        Keep::Last,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // The positive SBDM diffusion is infinite at t = 1, and the score undefined at t = 0.
    let opts = SdeOptions::new(PhiloxKey::new(1, 2));
    assert!(sample_sde(&B, &mut zero, x.clone(), &[1.0, 0.5], &opts, Keep::Last).is_err());
    let mut constant = opts;
    constant.diffusion = Diffusion::Constant(1.0);
    assert!(sample_sde(&B, &mut zero, x.clone(), &[0.9, 0.0], &constant, Keep::Last).is_err());
    // D(0) = 0 for SBDM, so its grid may end at 0 (the mean step is then empty).
    assert!(sample_sde(&B, &mut zero, x.clone(), &[0.9, 0.0], &opts, Keep::Last).is_ok());
    // Increasing grids are for the ODE only.
    assert!(sample_sde(&B, &mut zero, x.clone(), &[0.1, 0.5], &opts, Keep::Last).is_err());
    assert!(sample_ode(&B, &mut zero, x, &[0.1, 0.5], OdeMethod::Euler, Keep::Last).is_ok());
}

// ---------------------------------------------------------------- SDE samplers (§4.5)

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn sde_without_diffusion_is_the_ode(
        x0 in prop::collection::vec(-2.0f32..2.0, 5),
        interior in prop::collection::vec(0.01f32..0.99, 1..15),
        heun in any::<bool>(), seed in any::<u64>(),
    ) {
        let grid = grid_from(0.995, 0.005, interior);
        let f = |x: f64, t: f64| (x * 1.3).cos() * t - 0.4 * x;
        let (sde_m, ode_m) = if heun { (SdeMethod::Heun, OdeMethod::Heun) } else { (SdeMethod::EulerMaruyama, OdeMethod::Euler) };
        let mut opts = SdeOptions::new(PhiloxKey::new(seed, 9));
        opts.method = sde_m;
        opts.diffusion = Diffusion::Zero;
        opts.last_step = LastStep::None;
        let sde = sample_sde(&B, &mut host_field(f), up(&x0, &[5]), &grid, &opts, Keep::All).unwrap();
        let ode = sample_ode(&B, &mut host_field(f), up(&x0, &[5]), &grid, ode_m, Keep::All).unwrap();
        prop_assert_eq!(sde.states.len(), ode.states.len());
        let want: Vec<f64> = down(&ode.x).iter().map(|&v| v as f64).collect();
        prop_assert!(max_abs_diff(&down(&sde.x), &want) < 1e-6);
        // The final mean step without diffusion is one more Euler step, to t = 0.
        opts.last_step = LastStep::Mean;
        let sde0 = sample_sde(&B, &mut host_field(f), up(&x0, &[5]), &grid, &opts, Keep::Last).unwrap();
        let mut grid0 = grid.clone();
        grid0.push(0.0);
        let ode0 = if heun {
            let mid = sample_ode(&B, &mut host_field(f), up(&x0, &[5]), &grid, OdeMethod::Heun, Keep::Last).unwrap();
            let last = [grid[grid.len() - 1], 0.0];
            sample_ode(&B, &mut host_field(f), mid.x, &last, OdeMethod::Euler, Keep::Last).unwrap()
        } else {
            sample_ode(&B, &mut host_field(f), up(&x0, &[5]), &grid0, OdeMethod::Euler, Keep::Last).unwrap()
        };
        let want0: Vec<f64> = down(&ode0.x).iter().map(|&v| v as f64).collect();
        prop_assert!(max_abs_diff(&down(&sde0.x), &want0) < 1e-6);
    }
}

/// The exact velocity of Gaussian data `N(m, s²)` under `x_t = (1 − t)x + tε`:
/// `v = (x − (1 − t)m)·(t − (1 − t)s²)/σ_t² − m`, `σ_t² = (1 − t)²s² + t²`.
fn gaussian_velocity(m: f64, s: f64) -> impl FnMut(&T, f32) -> Result<T> {
    move |x: &T, t: f32| {
        use rae_core::Backend;
        let t = t as f64;
        let var = (1.0 - t).powi(2) * s * s + t * t;
        let a = (t - (1.0 - t) * s * s) / var;
        let b = -(1.0 - t) * m * a - m;
        let offset = B.full(x.dims(), b as f32)?;
        B.axpy(a as f32, x, &offset)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn sde_preserves_the_mean_and_variance_of_gaussian_data(
        m in -2.0f64..2.0, s in 0.3f64..2.0, seed in any::<u64>(), heun in any::<bool>(),
        shift_s in prop_oneof![Just(1.0f64), Just(3.0f64)],
    ) {
        use rae_core::Backend;
        let n = 16_384usize;
        // Ending at r = 0.002 keeps the bias of the noiseless final mean step negligible.
        let grid = sde_grid(200, shift_s, 0.999, 0.002).unwrap();
        let mut opts = SdeOptions::new(PhiloxKey::new(seed, 11));
        opts.offset = n as u64; // positions [0, n) are the initial noise
        if heun { opts.method = SdeMethod::Heun; }
        let x0 = B.fill_normal(&[n], PhiloxKey::new(seed, 11), 0).unwrap();
        let out = sample_sde(&B, &mut gaussian_velocity(m, s), x0, &grid, &opts, Keep::Last).unwrap();
        let xs = down(&out.x);
        prop_assert!(xs.iter().all(|v| v.is_finite()));
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        // Sampling error (5 standard errors) plus a small discretisation allowance.
        let mean_tol = 5.0 * s / (n as f64).sqrt() + 0.01 * s;
        let var_tol = 5.0 * (2.0 / n as f64).sqrt() + 0.02;
        prop_assert!((mean - m).abs() <= mean_tol, "mean {mean} vs {m}");
        prop_assert!((var / (s * s) - 1.0).abs() <= var_tol, "variance {var} vs {}", s * s);
    }
}

#[test]
fn sde_noise_is_reproducible_from_the_key() {
    let grid = sde_grid(20, 2.0, 0.999, 0.04).unwrap();
    let run = |seed: u64| {
        let opts = SdeOptions::new(PhiloxKey::new(seed, 5));
        let x0 = up(&[0.3, -0.2, 1.0, 0.0], &[2, 2]);
        down(
            &sample_sde(
                &B,
                &mut gaussian_velocity(0.5, 1.0),
                x0,
                &grid,
                &opts,
                Keep::Last,
            )
            .unwrap()
            .x,
        )
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
    let opts = SdeOptions::new(PhiloxKey::new(3, 5));
    let all = sample_sde(
        &B,
        &mut gaussian_velocity(0.5, 1.0),
        up(&[0.0; 4], &[2, 2]),
        &grid,
        &opts,
        Keep::All,
    )
    .unwrap();
    // Start, 19 intervals, the final mean step; one evaluation per interval plus one.
    assert_eq!(all.states.len(), 21);
    assert_eq!(all.evaluations, 20);
}

// ------------------------------------------------------------------ guidance (§4.6, §4.7)

const NULL: u32 = 10;

/// A label-dependent toy model computed per sample on the host.
fn toy(x: &[f32], n: usize, t: f32, labels: &[u32]) -> Vec<f32> {
    let rest = x.len() / n;
    (0..x.len())
        .map(|i| {
            let y = labels[i / rest] as f32;
            x[i] * (1.0 + 0.1 * y) + t * y - 0.5 + 0.01 * (i % rest) as f32
        })
        .collect()
}

fn guidance_case(
    x: &[f32],
    labels: &[u32],
    t: f32,
    g: GuidanceInterval,
) -> (Vec<f32>, usize, usize) {
    let n = labels.len();
    let calls = Cell::new(0usize);
    let batch_seen = Cell::new(0usize);
    let model = |xin: &T, tt: f32, ls: &[u32]| -> Result<T> {
        calls.set(calls.get() + 1);
        let m = xin.dims()[0];
        batch_seen.set(m);
        let xs = down(xin);
        if m == 2 * n {
            // Both halves are the same state; labels are [y; null].
            let half = xs.len() / 2;
            assert_eq!(&xs[..half], &xs[half..]);
            assert_eq!(&ls[..n], labels);
            assert!(ls[n..].iter().all(|&l| l == NULL));
        } else {
            assert_eq!(ls, labels);
        }
        Ok(up(&toy(&xs, m, tt, ls), xin.dims()))
    };
    let mut cfg = ClassifierFreeGuidance::new(&B, model, labels, NULL, g).unwrap();
    let v = down(&cfg.velocity(&up(x, &[n, 2, 3]), t).unwrap());
    (v, calls.get(), batch_seen.get())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn cfg_mixes_conditional_and_unconditional_inside_its_interval(
        x in prop::collection::vec(-2.0f32..2.0, 12),
        labels in prop::collection::vec(0u32..10, 2),
        t in 0.0f32..=1.0, w in -1.0f32..4.0, lo in 0.0f32..0.6, len in 0.0f32..0.6,
    ) {
        let g = GuidanceInterval { scale: w, t_min: lo, t_max: (lo + len).min(1.0) };
        let (v, calls, batch) = guidance_case(&x, &labels, t, g);
        prop_assert_eq!(calls, 1);
        let vc = toy(&x, 2, t, &labels);
        let vu = toy(&x, 2, t, &[NULL, NULL]);
        if g.active(t) {
            prop_assert_eq!(batch, 4, "the doubled batch");
            let want: Vec<f64> = vc.iter().zip(&vu)
                .map(|(&c, &u)| u as f64 + w as f64 * (c as f64 - u as f64)).collect();
            prop_assert!(max_abs_diff(&v, &want) < 1e-4);
        } else {
            prop_assert_eq!(batch, 2);
            prop_assert_eq!(&v, &vc, "outside the interval the conditional velocity is untouched");
        }
        // w = 1 is the conditional model, w = 0 the unconditional one, exactly.
        let (v1, _, _) = guidance_case(&x, &labels, t, GuidanceInterval::always(1.0));
        prop_assert_eq!(&v1, &vc);
        let (v0, _, _) = guidance_case(&x, &labels, t, GuidanceInterval::always(0.0));
        prop_assert_eq!(v0, vu);
    }

    #[test]
    fn autoguidance_extrapolates_from_the_guide_to_the_main_model(
        x in prop::collection::vec(-2.0f32..2.0, 12),
        labels in prop::collection::vec(0u32..10, 2),
        t in 0.0f32..=1.0, w in -1.0f32..4.0, lo in 0.0f32..0.6, len in 0.0f32..0.6,
    ) {
        let guide_calls = Cell::new(0usize);
        let main = |xin: &T, tt: f32, ls: &[u32]| -> Result<T> {
            Ok(up(&toy(&down(xin), ls.len(), tt, ls), xin.dims()))
        };
        let guide = |xin: &T, tt: f32, ls: &[u32]| -> Result<T> {
            guide_calls.set(guide_calls.get() + 1);
            assert_eq!(ls, &labels[..], "the guide sees the same conditional labels");
            let v: Vec<f32> = toy(&down(xin), ls.len(), tt, ls).iter().map(|v| 0.7 * v + 0.2).collect();
            Ok(up(&v, xin.dims()))
        };
        let g = GuidanceInterval { scale: w, t_min: lo, t_max: (lo + len).min(1.0) };
        let mut ag = AutoGuidance::new(&B, main, guide, &labels, g).unwrap();
        let v = down(&ag.velocity(&up(&x, &[2, 2, 3]), t).unwrap());
        let vm = toy(&x, 2, t, &labels);
        let vg: Vec<f32> = vm.iter().map(|v| 0.7 * v + 0.2).collect();
        if g.active(t) {
            let want: Vec<f64> = vm.iter().zip(&vg)
                .map(|(&a, &b)| b as f64 + w as f64 * (a as f64 - b as f64)).collect();
            prop_assert!(max_abs_diff(&v, &want) < 1e-4);
            prop_assert_eq!(guide_calls.get(), 1);
        } else {
            prop_assert_eq!(&v, &vm);
            prop_assert_eq!(guide_calls.get(), 0);
        }
        let mut ag1 = AutoGuidance::new(&B, main, guide, &labels, GuidanceInterval::always(1.0)).unwrap();
        prop_assert_eq!(down(&ag1.velocity(&up(&x, &[2, 2, 3]), t).unwrap()), vm);
    }
}

#[test]
fn guidance_bounds_are_inclusive_and_inputs_checked() {
    let x = [0.5f32; 12];
    let labels = [3u32, 4];
    let g = GuidanceInterval {
        scale: 2.0,
        t_min: 0.25,
        t_max: 0.75,
    };
    for t in [0.25f32, 0.75] {
        let (_, _, batch) = guidance_case(&x, &labels, t, g);
        assert_eq!(batch, 4, "t = {t} is inside");
    }
    let (_, _, batch) = guidance_case(&x, &labels, 0.7500001, g);
    assert_eq!(batch, 2);
    let model = |xin: &T, _t: f32, _l: &[u32]| -> Result<T> { Ok(xin.clone()) };
    let mut cfg = ClassifierFreeGuidance::new(&B, model, &[1, 2, 3], NULL, g).unwrap();
    assert!(
        cfg.velocity(&up(&x, &[2, 6]), 0.5).is_err(),
        "3 labels for 2 samples"
    );
    assert!(ClassifierFreeGuidance::new(
        &B,
        model,
        &[1],
        NULL,
        GuidanceInterval {
            scale: f32::NAN,
            t_min: 0.0,
            t_max: 1.0
        }
    )
    .is_err());
    assert!(ClassifierFreeGuidance::new(
        &B,
        model,
        &[1],
        NULL,
        GuidanceInterval {
            scale: 1.0,
            t_min: 0.8,
            t_max: 0.2
        }
    )
    .is_err());
}

#[test]
fn guided_fields_drive_the_samplers() {
    // A CFG field plugs into the Euler sampler like any other velocity field.
    let labels = [1u32, 2];
    let model = |xin: &T, tt: f32, ls: &[u32]| -> Result<T> {
        Ok(up(&toy(&down(xin), ls.len(), tt, ls), xin.dims()))
    };
    let mut cfg =
        ClassifierFreeGuidance::new(&B, model, &labels, NULL, GuidanceInterval::always(1.0))
            .unwrap();
    let grid = shifted_grid(6, 2.0, 0.001).unwrap();
    let x0 = up(&[0.1f32; 12], &[2, 6]);
    let guided = sample_ode(
        &B,
        &mut cfg,
        x0.clone(),
        &grid,
        OdeMethod::Euler,
        Keep::Last,
    )
    .unwrap();
    let mut plain =
        |xin: &T, tt: f32| -> Result<T> { Ok(up(&toy(&down(xin), 2, tt, &labels), xin.dims())) };
    let cond = sample_ode(&B, &mut plain, x0, &grid, OdeMethod::Euler, Keep::Last).unwrap();
    assert_eq!(down(&guided.x), down(&cond.x));
}
