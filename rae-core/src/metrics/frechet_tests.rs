//! Tests of the Householder + QL solver and the pivoted-Cholesky trace against the old
//! Jacobi definition ([`super::jacobi_ref`]) and against closed forms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloc::vec;
use alloc::vec::Vec;

use super::jacobi_ref::jacobi;
use super::linalg::matmul;
use super::*;

/// A small deterministic generator of uniform values in `[-1, 1)` (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    fn fill(&mut self, len: usize) -> Vec<f64> {
        (0..len).map(|_| self.next()).collect()
    }
}

/// `G·Gᵀ/k + ridge·I` for `G` `[n, k]`: rank `min(n, k)` when `ridge = 0`.
fn gram(g: &[f64], n: usize, k: usize, ridge: f64) -> Vec<f64> {
    let mut s = matmul(g, &transpose(g, n, k), n, k, n, false);
    for i in 0..n {
        for j in 0..n {
            s[i * n + j] /= k as f64;
        }
        s[i * n + i] += ridge;
    }
    symmetrise_copy(s, n)
}

fn symmetrise_copy(mut s: Vec<f64>, n: usize) -> Vec<f64> {
    linalg::symmetrise(&mut s, n);
    s
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn frob(a: &[f64]) -> f64 {
    libm::sqrt(a.iter().map(|x| x * x).sum())
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The old definition: `Σ sqrt(λ(R Σ2 R))` with `R = Σ1^½`, all by Jacobi.
fn trace_sqrt_jacobi(s1: &[f64], s2: &[f64], n: usize) -> f64 {
    let (vals, vecs) = jacobi(s1, n, true).unwrap();
    let mut r = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            r[i * n + j] = (0..n)
                .map(|k| vecs[i * n + k] * libm::sqrt(vals[k].max(0.0)) * vecs[j * n + k])
                .sum();
        }
    }
    let m = matmul(&matmul(&r, s2, n, n, n, false), &r, n, n, n, false);
    let (vals, _) = jacobi(&m, n, false).unwrap();
    vals.iter().map(|&l| libm::sqrt(l.max(0.0))).sum()
}

/// `tr (G1 G1ᵀ G2 G2ᵀ)^½` = the sum of the singular values of `G2ᵀ G1` `[k2, k1]`, from
/// the Jacobi eigenvalues of `(G2ᵀG1)ᵀ(G2ᵀG1)`: exact whatever the ranks.
fn trace_sqrt_factors(g1: &[f64], k1: usize, g2: &[f64], k2: usize, n: usize) -> f64 {
    let c = matmul(g2, g1, k2, n, k1, true);
    let ctc = matmul(&c, &c, k1, k2, k1, true);
    let (vals, _) = jacobi(&ctc, k1, false).unwrap();
    // CᵀC has rank at most n: its zero eigenvalues come out as rounding noise, whose
    // square roots (√ε-sized) would spoil the reference; drop them.
    let top = vals.iter().fold(0.0f64, |m, &v| m.max(v));
    vals.iter()
        .filter(|&&l| l > 1e-13 * top)
        .map(|&l| libm::sqrt(l))
        .sum()
}

#[test]
fn eigen_matches_jacobi_and_diagonalises() {
    let mut rng = Rng(7);
    for &n in &[1usize, 2, 3, 8, 33, 120, 200] {
        let g = rng.fill(n * n);
        // An indefinite symmetric matrix.
        let a = symmetrise_copy(g, n);
        let e = sym_eigen(&a, n).unwrap();
        let (want, _) = jacobi(&a, n, false).unwrap();
        let scale = 1.0 + frob(&a);
        let diff = max_abs_diff(&sorted(e.values.clone()), &sorted(want));
        assert!(
            diff <= 1e-12 * scale,
            "n = {n}: eigenvalues differ by {diff}"
        );
        let v = &e.vectors;
        let vtv = matmul(v, v, n, n, n, true);
        let eye: Vec<f64> = (0..n * n)
            .map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let orth = max_abs_diff(&vtv, &eye);
        assert!(orth <= 1e-12 * n as f64, "n = {n}: VᵀV − I = {orth}");
        let av = matmul(&a, v, n, n, n, false);
        let vl: Vec<f64> = (0..n * n).map(|i| v[i] * e.values[i % n]).collect();
        let res = max_abs_diff(&av, &vl);
        assert!(res <= 1e-12 * scale, "n = {n}: AV − VΛ = {res}");
    }
}

#[test]
fn eigen_of_special_matrices() {
    // Zero, identity, a repeated eigenvalue, already tridiagonal, a 2×2 with known values.
    assert!(sym_eigen(&[0.0; 16], 4)
        .unwrap()
        .values
        .iter()
        .all(|&v| v == 0.0));
    let eye: Vec<f64> = (0..25)
        .map(|i| if i % 6 == 0 { 1.0 } else { 0.0 })
        .collect();
    let e = sym_eigen(&eye, 5).unwrap();
    assert!(e.values.iter().all(|&v| v == 1.0));
    assert_eq!(e.vectors, eye);
    let vals = sorted(sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2).unwrap().values);
    assert!((vals[0] - 1.0).abs() < 1e-15 && (vals[1] - 3.0).abs() < 1e-15);
    // J − I for the all-ones J: eigenvalues n − 1 (once) and −1.
    let n = 30;
    let j: Vec<f64> = (0..n * n)
        .map(|i| if i % (n + 1) == 0 { 0.0 } else { 1.0 })
        .collect();
    let vals = sorted(sym_eigen(&j, n).unwrap().values);
    assert!(
        vals[..n - 1].iter().all(|&v| (v + 1.0).abs() < 1e-12),
        "{vals:?}"
    );
    assert!((vals[n - 1] - (n as f64 - 1.0)).abs() < 1e-12);
    // A non-symmetric input counts through its symmetric part.
    let vals = sorted(sym_eigen(&[1.0, 3.0, -1.0, 1.0], 2).unwrap().values);
    assert!((vals[0] - 0.0).abs() < 1e-15 && (vals[1] - 2.0).abs() < 1e-15);
    assert_eq!(sym_eigen(&[], 0).unwrap().values.len(), 0);
}

#[test]
fn square_root_squares_back() {
    let mut rng = Rng(11);
    for &(n, k, ridge) in &[
        (1, 1, 0.0),
        (10, 40, 0.0),
        (150, 300, 0.0),
        (150, 40, 0.0),
        (90, 90, 1e-3),
    ] {
        let a = gram(&rng.fill(n * k), n, k, ridge);
        let r = sqrtm_psd(&a, n).unwrap();
        assert_eq!(r, transpose(&r, n, n));
        let rr = matmul(&r, &r, n, n, n, false);
        let tol = if k >= n { 1e-11 } else { 1e-7 };
        let d = max_abs_diff(&rr, &a);
        assert!(
            d <= tol * (1.0 + frob(&a)),
            "n = {n}, k = {k}: R² − A = {d}"
        );
    }
    assert_eq!(
        sqrtm_psd(&[4.0, 0.0, 0.0, 9.0], 2).unwrap(),
        vec![2.0, 0.0, 0.0, 3.0]
    );
}

#[test]
fn trace_sqrt_product_matches_jacobi_and_factors() {
    let mut rng = Rng(3);
    // (n, k1, k2): full rank, Σ1 singular, both singular, Σ2 singular only.
    let cases = [
        (1, 1, 1),
        (2, 5, 5),
        (17, 40, 30),
        (64, 200, 150),
        (200, 400, 400),
        (64, 20, 200),
        (200, 50, 60),
        (120, 300, 30),
    ];
    for &(n, k1, k2) in &cases {
        let g1 = rng.fill(n * k1);
        let g2 = rng.fill(n * k2);
        let (s1, s2) = (gram(&g1, n, k1, 0.0), gram(&g2, n, k2, 0.0));
        let got = trace_sqrt_product(&s1, &s2, n).unwrap();
        let scale = libm::sqrt((k1 * k2) as f64);
        let exact = trace_sqrt_factors(&g1, k1, &g2, k2, n) / scale;
        let rel = (got - exact).abs() / exact;
        let tol = if k1 >= n && k2 >= n { 1e-12 } else { 1e-7 };
        assert!(
            rel <= tol,
            "n = {n}, k = ({k1}, {k2}): {got} vs exact {exact} ({rel:e})"
        );
        let old = trace_sqrt_jacobi(&s1, &s2, n);
        let rel_old = (got - old).abs() / old;
        assert!(
            rel_old <= 1e-6,
            "n = {n}, k = ({k1}, {k2}): {got} vs Jacobi {old}"
        );
        // FD is symmetric in its arguments.
        let mu = rng.fill(n);
        let ab = frechet_distance(&mu, &s1, &mu, &s2).unwrap();
        let ba = frechet_distance(&mu, &s2, &mu, &s1).unwrap();
        assert!((ab - ba).abs() <= 1e-7 * (1.0 + ab.abs()), "{ab} vs {ba}");
    }
}

#[test]
fn fid_of_fifty_samples_in_2048_dimensions() {
    // Covariances of rank 49 (50 samples, centred): the Cholesky factor is thin.
    let (n, k) = (2048, 50);
    let mut rng = Rng(5);
    let centred = |g: Vec<f64>| {
        let mut g = g;
        for row in g.chunks_exact_mut(k) {
            let m = row.iter().sum::<f64>() / k as f64;
            row.iter_mut().for_each(|x| *x -= m);
        }
        g
    };
    let g1 = centred(rng.fill(n * k));
    let g2 = centred(rng.fill(n * k));
    let (s1, s2) = (gram(&g1, n, k, 0.0), gram(&g2, n, k, 0.0));
    let got = trace_sqrt_product(&s1, &s2, n).unwrap();
    let exact = trace_sqrt_factors(&g1, k, &g2, k, n) / k as f64;
    assert!((got - exact).abs() <= 1e-9 * exact, "{got} vs {exact}");
    let (mu1, mu2) = (rng.fill(n), rng.fill(n));
    let fd = frechet_distance(&mu1, &s1, &mu2, &s2).unwrap();
    assert!(fd.is_finite() && fd > 0.0);
    let self_fd = frechet_distance(&mu1, &s1, &mu1, &s1).unwrap();
    let tr: f64 = (0..n).map(|i| s1[i * n + i]).sum();
    assert!(self_fd.abs() <= 1e-9 * tr, "FD(Σ, Σ) = {self_fd}");
}

#[test]
fn ill_conditioned_and_degenerate_inputs() {
    // Eigenvalues spread over 1e-14..1 in a random basis.
    let n = 40;
    let mut rng = Rng(13);
    let q = sym_eigen(&symmetrise_copy(rng.fill(n * n), n), n)
        .unwrap()
        .vectors;
    let lam: Vec<f64> = (0..n)
        .map(|i| libm::pow(10.0, -14.0 * i as f64 / (n - 1) as f64))
        .collect();
    let qd: Vec<f64> = (0..n * n).map(|i| q[i] * lam[i % n]).collect();
    let s = symmetrise_copy(matmul(&qd, &transpose(&q, n, n), n, n, n, false), n);
    let want: f64 = lam.iter().sum();
    let got = trace_sqrt_product(&s, &s, n).unwrap();
    // Eigenvalues of Aᵀ Σ A = λ² below ε‖Σ‖² are rounding noise, and their roots √ε-sized:
    // the same limit as the Jacobi definition's.
    assert!((got - want).abs() <= 1e-7 * want, "{got} vs {want}");
    let old = trace_sqrt_jacobi(&s, &s, n);
    assert!((old - want).abs() <= 1e-7 * want, "Jacobi {old} vs {want}");
    // Zero covariances, and one zero against a full one.
    let zero = vec![0.0; n * n];
    assert_eq!(trace_sqrt_product(&zero, &s, n).unwrap(), 0.0);
    assert!(trace_sqrt_product(&s, &zero, n).unwrap().abs() < 1e-12);
    // An indefinite "covariance" neither panics nor gives a non-finite value.
    let ind = symmetrise_copy(rng.fill(n * n), n);
    assert!(trace_sqrt_product(&ind, &ind, n).unwrap().is_finite());
    assert!(frechet_distance(&[0.0; 40], &ind, &[0.0; 40], &s)
        .unwrap()
        .is_finite());
    // Huge entries overflow into a named error or a finite value, never a panic.
    let huge: Vec<f64> = s.iter().map(|x| x * 1e300).collect();
    if let Ok(v) = trace_sqrt_product(&huge, &huge, n) {
        assert!(v.is_finite());
    }
    if let Ok(e) = sym_eigen(&huge, n) {
        assert!(e.values.iter().all(|v| v.is_finite()));
    }
    // Empty matrices.
    assert_eq!(trace_sqrt_product(&[], &[], 0).unwrap(), 0.0);
    assert_eq!(frechet_distance(&[], &[], &[], &[]).unwrap(), 0.0);
}

#[test]
fn bad_inputs_are_named_errors() {
    let eye = [1.0, 0.0, 0.0, 1.0];
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let m = [1.0, bad, bad, 1.0];
        assert!(matches!(sym_eigen(&m, 2), Err(Error::NonFinite { .. })));
        assert!(matches!(sqrtm_psd(&m, 2), Err(Error::NonFinite { .. })));
        assert!(matches!(
            trace_sqrt_product(&m, &eye, 2),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            trace_sqrt_product(&eye, &m, 2),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            frechet_distance(&[0.0, 0.0], &eye, &[0.0, 0.0], &m),
            Err(Error::NonFinite { .. })
        ));
    }
    assert!(matches!(
        sym_eigen(&eye[..3], 2),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        sqrtm_psd(&eye, 3),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        trace_sqrt_product(&eye, &eye[..3], 2),
        Err(Error::InvalidArgument { .. })
    ));
}

/// Timing, release only: `cargo test --release -p rae-core --lib frechet_timing --
/// --ignored --nocapture`.
#[cfg(feature = "std")]
#[test]
#[ignore = "timing; run in release"]
fn frechet_timing() {
    use std::println;
    use std::time::Instant;
    let mut rng = Rng(17);
    let stats = |rng: &mut Rng, n: usize| {
        let k = n + n / 2;
        (rng.fill(n), gram(&rng.fill(n * k), n, k, 0.0))
    };
    for &n in &[512usize, 2048] {
        let (m1, s1) = stats(&mut rng, n);
        let (m2, s2) = stats(&mut rng, n);
        let t = Instant::now();
        let fd = frechet_distance(&m1, &s1, &m2, &s2).unwrap();
        let new = t.elapsed().as_secs_f64();
        println!("n = {n}: frechet_distance {fd:.12e} in {new:.3} s");
        if n <= 512 {
            let t = Instant::now();
            let old = trace_sqrt_jacobi(&s1, &s2, n);
            let secs = t.elapsed().as_secs_f64();
            let cross = trace_sqrt_product(&s1, &s2, n).unwrap();
            println!(
                "  old Jacobi trace term in {secs:.3} s; rel diff {:.2e}",
                (old - cross).abs() / cross
            );
        }
    }
}

#[cfg(feature = "std")]
#[test]
#[ignore = "timing; run in release"]
fn frechet_phase_timing() {
    use std::println;
    use std::time::Instant;
    let mut rng = Rng(19);
    let n = 2048;
    let k = 3072;
    let s1 = gram(&rng.fill(n * k), n, k, 0.0);
    let s2 = gram(&rng.fill(n * k), n, k, 0.0);
    let t = Instant::now();
    let (a, r) = linalg::pivoted_cholesky(&s1, n);
    println!("cholesky {:.3}", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let b = linalg::matmul(&s2, &a, n, n, r, false);
    let mut m = linalg::matmul(&a, &b, r, n, r, true);
    println!("products {:.3}", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let (mut d, mut e, _) = linalg::tridiagonalise(&mut m, r);
    println!("tridiag {:.3}", t.elapsed().as_secs_f64());
    let t = Instant::now();
    assert!(linalg::tridiagonal_ql(&mut d, &mut e, None));
    println!("ql {:.3}", t.elapsed().as_secs_f64());
}
