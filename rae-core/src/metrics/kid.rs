//! Kernel Inception Distance (Bińkowski et al., 2018) as torch-fidelity computes it: the
//! unbiased estimate of the squared MMD under the cubic polynomial kernel
//! `k(x, y) = (x·y / d + 1)³`, averaged over random subsets of both feature sets.
//!
//! Subsets are drawn as torch-fidelity draws them, with numpy's legacy `RandomState(seed)`
//! ([`NumpyRandomState`]): per subset, `choice(n1, m, replace=False)` then
//! `choice(n2, m, replace=False)` from the one stream. With the same seed (2020 by default)
//! the numbers equal torch-fidelity's.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::inception::{check_rows, mean_std};
use super::mt19937::NumpyRandomState;
use crate::error::{Error, Result};

/// How KID draws its subsets (torch-fidelity's defaults: 100 subsets of 1000, seed 2020).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KidOptions {
    /// Number of subsets averaged.
    pub subsets: usize,
    /// Rows per subset, from each set (at least 2, at most either set's size).
    pub subset_size: usize,
    /// Seed of numpy's `RandomState` that draws the subsets.
    pub seed: u32,
}

impl Default for KidOptions {
    fn default() -> Self {
        KidOptions {
            subsets: 100,
            subset_size: 1000,
            seed: super::inception::TORCH_FIDELITY_SEED,
        }
    }
}

/// KID: the mean and population standard deviation over the subsets of the MMD² estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    /// Mean over the subsets.
    pub mean: f64,
    /// Standard deviation over the subsets (`np.std`).
    pub std: f64,
}

/// Dot product in four independent lanes (vectorises; the order differs from numpy's only
/// by rounding).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `Σ_{i≠j} k(x_i, x_j)` for the rows of `x` `[m, d]` (the kernel is symmetric).
fn off_diagonal_sum(x: &[f64], m: usize, d: usize, gamma: f64) -> f64 {
    let mut s = 0.0;
    for i in 0..m {
        let xi = &x[i * d..(i + 1) * d];
        for j in i + 1..m {
            let k = dot(xi, &x[j * d..(j + 1) * d]) * gamma + 1.0;
            s += k * k * k;
        }
    }
    2.0 * s
}

/// `Σ_{i,j} k(x_i, y_j)` for rows of `x` and `y`, both `[m, d]`.
fn cross_sum(x: &[f64], y: &[f64], m: usize, d: usize, gamma: f64) -> f64 {
    let mut s = 0.0;
    for i in 0..m {
        let xi = &x[i * d..(i + 1) * d];
        for j in 0..m {
            let k = dot(xi, &y[j * d..(j + 1) * d]) * gamma + 1.0;
            s += k * k * k;
        }
    }
    s
}

/// The unbiased MMD² of two equally sized samples `[m, d]` (`m ≥ 2`) under
/// `k(x, y) = (x·y/d + 1)³`:
/// `Σ_{i≠j} (k(x_i,x_j) + k(y_i,y_j)) / (m(m−1)) − 2 Σ_{i,j} k(x_i,y_j) / m²`.
pub fn mmd2_unbiased_poly(x: &[f64], y: &[f64], m: usize, d: usize) -> Result<f64> {
    if m < 2 || d == 0 || x.len() != m * d || y.len() != m * d {
        return Err(Error::invalid(
            "mmd2_unbiased_poly",
            format!(
                "need two [m, d] samples with m ≥ 2 and d ≥ 1, got {} and {} values for m = {m}, d = {d}",
                x.len(),
                y.len()
            ),
        ));
    }
    let gamma = 1.0 / d as f64;
    let mf = m as f64;
    let kxx = off_diagonal_sum(x, m, d, gamma);
    let kyy = off_diagonal_sum(y, m, d, gamma);
    let kxy = cross_sum(x, y, m, d, gamma);
    Ok((kxx + kyy) / (mf * (mf - 1.0)) - 2.0 * kxy / (mf * mf))
}

fn gather(x: &[f32], rows: &[usize], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows.len() * d];
    for (o, &r) in out.chunks_exact_mut(d).zip(rows) {
        for (v, &s) in o.iter_mut().zip(&x[r * d..(r + 1) * d]) {
            *v = s as f64;
        }
    }
    out
}

/// KID between `a` `[n1, d]` and `b` `[n2, d]` (§6.1): torch-fidelity's
/// `kid_features_to_metric` with the polynomial kernel (degree 3, `γ = 1/d`, coef 1).
///
/// Cost: `3·subsets·m²·d` multiply-adds, single-threaded (100 subsets of 1000 at
/// `d = 2048` is about 6·10¹¹).
pub fn kid(a: &[f32], n1: usize, b: &[f32], n2: usize, d: usize, opt: KidOptions) -> Result<Kid> {
    check_rows("kid (first set)", a, n1, d)?;
    check_rows("kid (second set)", b, n2, d)?;
    let m = opt.subset_size;
    if opt.subsets == 0 || m < 2 || m > n1 || m > n2 {
        return Err(Error::invalid(
            "kid",
            format!(
                "{} subsets of {m} rows cannot be drawn from sets of {n1} and {n2} rows \
                 (need at least 1 subset and 2 ≤ subset size ≤ both set sizes)",
                opt.subsets
            ),
        ));
    }
    let mut rng = NumpyRandomState::new(opt.seed);
    let mut mmds = Vec::with_capacity(opt.subsets);
    for _ in 0..opt.subsets {
        let ia = rng.choice_without_replacement(n1, m);
        let ib = rng.choice_without_replacement(n2, m);
        mmds.push(mmd2_unbiased_poly(
            &gather(a, &ia, d),
            &gather(b, &ib, d),
            m,
            d,
        )?);
    }
    let (mean, std) = mean_std(&mmds);
    Ok(Kid { mean, std })
}
