//! Property tests of the evaluation metrics (spec §6): streaming moments, the Fréchet
//! distance with its Jacobi eigendecomposition, PSNR and SSIM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rae_core::metrics::{
    frechet_distance, psnr, sqrtm_psd, ssim, sym_eigen, trace_sqrt_product, Moments,
};
use rae_core::Error;

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            for j in 0..n {
                c[i * n + j] += a[i * n + k] * b[k * n + j];
            }
        }
    }
    c
}

fn transpose(a: &[f64], n: usize) -> Vec<f64> {
    (0..n * n).map(|idx| a[(idx % n) * n + idx / n]).collect()
}

fn frob(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `G·Gᵀ + ridge·I` from an `[n, k]` factor: symmetric PSD, singular when `k < n` and
/// `ridge = 0`.
fn spd(g: &[f64], n: usize, k: usize, ridge: f64) -> Vec<f64> {
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..k).map(|l| g[i * k + l] * g[j * k + l]).sum::<f64>();
        }
        a[i * n + i] += ridge;
    }
    a
}

/// An orthogonal matrix from Gram–Schmidt on a random square matrix.
fn orthogonal(raw: &[f64], n: usize) -> Vec<f64> {
    let mut q = vec![0.0; n * n];
    for c in 0..n {
        let mut v: Vec<f64> = (0..n)
            .map(|r| raw[r * n + c] + if r == c { 3.0 } else { 0.0 })
            .collect();
        for p in 0..c {
            let dot: f64 = (0..n).map(|r| v[r] * q[r * n + p]).sum();
            for r in 0..n {
                v[r] -= dot * q[r * n + p];
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for r in 0..n {
            q[r * n + c] = v[r] / norm;
        }
    }
    q
}

/// Dimension, an `[n, k]` factor and a ridge.
fn spd_case() -> impl Strategy<Value = (usize, Vec<f64>, usize, f64)> {
    (
        1usize..10,
        1usize..12,
        prop_oneof![Just(0.0f64), 0.01f64..2.0],
    )
        .prop_flat_map(|(n, k, ridge)| {
            (
                Just(n),
                prop::collection::vec(-2.0f64..2.0, n * k),
                Just(k),
                Just(ridge),
            )
        })
}

// ------------------------------------------------------------ eigen and square root

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn jacobi_diagonalises_symmetric_matrices((n, g, k, ridge) in spd_case(), shift in -3.0f64..3.0) {
        let mut a = spd(&g, n, k, ridge);
        for i in 0..n { a[i * n + i] += shift; } // indefinite matrices too
        let e = sym_eigen(&a, n).unwrap();
        let v = &e.vectors;
        // VᵀV = I and A·V = V·Λ.
        let vtv = matmul(&transpose(v, n), v, n);
        let eye: Vec<f64> = (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect();
        prop_assert!(max_diff(&vtv, &eye) < 1e-12);
        let av = matmul(&a, v, n);
        let vl: Vec<f64> = (0..n * n).map(|i| v[i] * e.values[i % n]).collect();
        prop_assert!(max_diff(&av, &vl) <= 1e-12 * (1.0 + frob(&a)));
        // The trace is the sum of the eigenvalues.
        let tr: f64 = (0..n).map(|i| a[i * n + i]).sum();
        prop_assert!((tr - e.values.iter().sum::<f64>()).abs() <= 1e-12 * (1.0 + frob(&a)));
    }

    #[test]
    fn square_root_of_a_psd_matrix_squares_back((n, g, k, ridge) in spd_case()) {
        let a = spd(&g, n, k, ridge);
        let r = sqrtm_psd(&a, n).unwrap();
        prop_assert_eq!(&r, &transpose(&r, n));
        let rr = matmul(&r, &r, n);
        // Singular matrices lose about sqrt(ε) in their zero eigen-directions.
        let tol = if ridge > 0.0 { 1e-11 } else { 1e-7 };
        prop_assert!(max_diff(&rr, &a) <= tol * (1.0 + frob(&a)), "{}", max_diff(&rr, &a));
        // The root is PSD itself.
        let e = sym_eigen(&r, n).unwrap();
        prop_assert!(e.values.iter().all(|&l| l >= -1e-7 * (1.0 + frob(&a))));
    }
}

#[test]
fn eigen_and_sqrt_check_their_inputs() {
    assert!(sym_eigen(&[1.0, 2.0, 3.0], 2).is_err());
    let e = sym_eigen(&[1.0, f64::NAN, f64::NAN, 1.0], 2).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    // A known 2×2: [[2, 1], [1, 2]] has eigenvalues 1 and 3; sqrt of diag(4, 9) is diag(2, 3).
    let mut vals = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2).unwrap().values;
    vals.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert!((vals[0] - 1.0).abs() < 1e-15 && (vals[1] - 3.0).abs() < 1e-15);
    assert_eq!(
        sqrtm_psd(&[4.0, 0.0, 0.0, 9.0], 2).unwrap(),
        vec![2.0, 0.0, 0.0, 3.0]
    );
    assert_eq!(sym_eigen(&[], 0).unwrap().values.len(), 0);
}

// ------------------------------------------------------------------- Fréchet distance

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn frechet_distance_to_itself_is_zero_and_it_is_symmetric(
        (n, g, k, ridge) in spd_case(), g2 in prop::collection::vec(-2.0f64..2.0, 120),
        mu in prop::collection::vec(-3.0f64..3.0, 10), mu2 in prop::collection::vec(-3.0f64..3.0, 10),
    ) {
        let a = spd(&g, n, k, ridge);
        let b = spd(&g2[..n * n], n, n, 0.05);
        let (m1, m2) = (&mu[..n], &mu2[..n]);
        let tr_a: f64 = (0..n).map(|i| a[i * n + i]).sum();
        let self_fd = frechet_distance(m1, &a, m1, &a).unwrap();
        // A singular A has a square root accurate to about sqrt(ε).
        let tol = if ridge > 0.0 { 1e-9 } else { 1e-6 };
        prop_assert!(self_fd.abs() <= tol * (1.0 + tr_a), "FD(A, A) = {self_fd}");
        let ab = frechet_distance(m1, &a, m2, &b).unwrap();
        let ba = frechet_distance(m2, &b, m1, &a).unwrap();
        prop_assert!((ab - ba).abs() <= tol * (1.0 + ab.abs()), "{ab} vs {ba}");
        prop_assert!(ab >= -tol * (1.0 + ab.abs()));
        // The mean term alone: equal covariances.
        let mean_only = frechet_distance(m1, &b, m2, &b).unwrap();
        let d2: f64 = m1.iter().zip(m2).map(|(x, y)| (x - y).powi(2)).sum();
        prop_assert!((mean_only - d2).abs() <= 1e-9 * (1.0 + d2));
    }

    #[test]
    fn frechet_distance_of_commuting_covariances_has_the_closed_form(
        n in 1usize..10, a in prop::collection::vec(0.0f64..4.0, 10), b in prop::collection::vec(0.0f64..4.0, 10),
        mu in prop::collection::vec(-3.0f64..3.0, 10), mu2 in prop::collection::vec(-3.0f64..3.0, 10),
        raw in prop::collection::vec(-1.0f64..1.0, 100), rotate in any::<bool>(),
    ) {
        // ‖μ1 − μ2‖² + Σ_i (sqrt a_i − sqrt b_i)² for Σ1 = Q diag(a) Qᵀ, Σ2 = Q diag(b) Qᵀ.
        let q: Vec<f64> = if rotate {
            orthogonal(&raw[..n * n], n)
        } else {
            (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect()
        };
        let build = |d: &[f64]| {
            let qd: Vec<f64> = (0..n * n).map(|i| q[i] * d[i % n]).collect();
            matmul(&qd, &transpose(&q, n), n)
        };
        let (s1, s2) = (build(&a[..n]), build(&b[..n]));
        let want: f64 = mu[..n].iter().zip(&mu2[..n]).map(|(x, y)| (x - y).powi(2)).sum::<f64>()
            + a[..n].iter().zip(&b[..n]).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
        let got = frechet_distance(&mu[..n], &s1, &mu2[..n], &s2).unwrap();
        prop_assert!((got - want).abs() <= 1e-6 * (1.0 + want), "{got} vs {want}");
        let cross: f64 = a[..n].iter().zip(&b[..n]).map(|(x, y)| (x * y).sqrt()).sum();
        prop_assert!((trace_sqrt_product(&s1, &s2, n).unwrap() - cross).abs() <= 1e-6 * (1.0 + cross));
    }
}

#[test]
fn frechet_distance_checks_its_inputs() {
    let eye = [1.0, 0.0, 0.0, 1.0];
    assert!(frechet_distance(&[0.0, 0.0], &eye, &[0.0], &eye).is_err());
    assert!(frechet_distance(&[0.0, 0.0], &eye, &[0.0, 0.0], &eye[..3]).is_err());
    let e = frechet_distance(&[f64::NAN, 0.0], &eye, &[0.0, 0.0], &eye).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    // One dimension: (m1 − m2)² + (s1 − s2)².
    let fd = frechet_distance(&[1.0], &[4.0], &[-1.0], &[9.0]).unwrap();
    assert!((fd - (4.0 + 1.0)).abs() < 1e-12, "{fd}");
}

// ----------------------------------------------------------------------------- moments

fn two_pass(rows: &[Vec<f32>], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n)
        .collect();
    let mut cov = vec![0.0; d * d];
    for r in rows {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += (r[i] as f64 - mean[i]) * (r[j] as f64 - mean[j]) / (n - 1.0);
            }
        }
    }
    (mean, cov)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn streaming_moments_match_two_pass_and_merge(
        rows in prop::collection::vec(prop::collection::vec(-50.0f32..50.0, 4), 2..60),
        split in 0usize..60, offset in -1000.0f32..1000.0,
    ) {
        let d = 4;
        let rows: Vec<Vec<f32>> = rows.into_iter().map(|r| r.into_iter().map(|x| x + offset).collect()).collect();
        let (mean, cov) = two_pass(&rows, d);
        let mut all = Moments::new(d);
        for r in &rows { all.push(r).unwrap(); }
        prop_assert_eq!(all.count(), rows.len() as u64);
        let scale = 1.0 + frob(&cov);
        prop_assert!(max_diff(all.mean(), &mean) <= 1e-9 * (1.0 + offset.abs() as f64));
        prop_assert!(max_diff(&all.covariance().unwrap(), &cov) <= 1e-9 * scale);
        // Two shards merged give the same statistics.
        let split = split.min(rows.len());
        let (mut a, mut b) = (Moments::new(d), Moments::new(d));
        let flat_a: Vec<f32> = rows[..split].iter().flatten().copied().collect();
        a.push_rows(&flat_a).unwrap();
        for r in &rows[split..] { b.push(r).unwrap(); }
        a.merge(&b).unwrap();
        prop_assert_eq!(a.count(), all.count());
        prop_assert!(max_diff(a.mean(), &mean) <= 1e-9 * (1.0 + offset.abs() as f64));
        let ca = a.covariance().unwrap();
        prop_assert!(max_diff(&ca, &cov) <= 1e-9 * scale);
        prop_assert_eq!(&ca, &transpose(&ca, d));
    }
}

#[test]
fn moments_check_their_inputs() {
    let mut m = Moments::new(3);
    assert!(m.push(&[1.0, 2.0]).is_err());
    assert!(m.push_rows(&[1.0, 2.0, 3.0, 4.0]).is_err());
    assert!(matches!(
        m.push(&[1.0, f32::NAN, 0.0]).unwrap_err(),
        Error::NonFinite { .. }
    ));
    m.push(&[1.0, 2.0, 3.0]).unwrap();
    assert!(m.covariance().is_err(), "one vector has no covariance");
    assert!(m.merge(&Moments::new(2)).is_err());
}

// ----------------------------------------------------------------------- PSNR and SSIM

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn psnr_of_a_constant_offset_is_minus_20_log10_of_it(
        img in prop::collection::vec(0.0f32..0.5, 1..200), d in 0.001f32..0.5,
    ) {
        let shifted: Vec<f32> = img.iter().map(|&x| x + d).collect();
        // The offset as stored in f32 arithmetic.
        let mse: f64 = img.iter().zip(&shifted).map(|(&a, &b)| (b as f64 - a as f64).powi(2)).sum::<f64>() / img.len() as f64;
        let p = psnr(&img, &shifted).unwrap();
        prop_assert!((p - (-10.0 * mse.log10())).abs() < 1e-9);
        prop_assert!((p + 20.0 * (d as f64).log10()).abs() < 1e-3);
        prop_assert_eq!(p, psnr(&shifted, &img).unwrap());
        prop_assert_eq!(psnr(&img, &img).unwrap(), f64::INFINITY);
    }

    #[test]
    fn ssim_is_one_on_identical_images_symmetric_and_at_most_one(
        c in 1usize..4, h in 11usize..20, w in 11usize..20,
        seed in prop::collection::vec(0.0f32..1.0, 3 * 19 * 19),
        noise in prop::collection::vec(-0.2f32..0.2, 3 * 19 * 19),
    ) {
        let n = c * h * w;
        let a = &seed[..n];
        let b: Vec<f32> = a.iter().zip(&noise).map(|(&x, &e)| (x + e).clamp(0.0, 1.0)).collect();
        prop_assert!((ssim(a, a, [c, h, w]).unwrap() - 1.0).abs() < 1e-12);
        let ab = ssim(a, &b, [c, h, w]).unwrap();
        let ba = ssim(&b, a, [c, h, w]).unwrap();
        prop_assert!((ab - ba).abs() < 1e-12);
        prop_assert!(ab <= 1.0 + 1e-12);
        if noise[..n].iter().any(|&e| e.abs() > 0.05) {
            prop_assert!(ab < 1.0);
        }
    }

    #[test]
    fn ssim_of_constant_images_is_the_luminance_term(x in 0.0f32..1.0, y in 0.0f32..1.0) {
        // No variance: SSIM = (2xy + C1)/(x² + y² + C1) with C1 = 0.01².
        let (a, b) = (vec![x; 2 * 12 * 13], vec![y; 2 * 12 * 13]);
        let (xf, yf, c1) = (x as f64, y as f64, 1e-4);
        let want = (2.0 * xf * yf + c1) / (xf * xf + yf * yf + c1);
        prop_assert!((ssim(&a, &b, [2, 12, 13]).unwrap() - want).abs() < 1e-9);
    }
}

#[test]
fn image_metrics_check_their_inputs() {
    assert!(psnr(&[0.0], &[0.0, 1.0]).is_err());
    assert!(psnr(&[], &[]).is_err());
    assert!(matches!(
        psnr(&[f32::NAN], &[0.0]).unwrap_err(),
        Error::NonFinite { .. }
    ));
    let img = vec![0.5f32; 3 * 10 * 10];
    assert!(
        ssim(&img, &img, [3, 10, 10]).is_err(),
        "smaller than the window"
    );
    assert!(
        ssim(&img, &img, [3, 11, 10]).is_err(),
        "dims do not cover the data"
    );
    // A known PSNR: MSE 0.01 is 20 dB.
    assert!((psnr(&[0.0, 0.2], &[0.1, 0.1]).unwrap() - 20.0).abs() < 1e-6);
}
