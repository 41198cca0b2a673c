//! The generation metrics of §6.1 on Inception feature arrays: FID and sFID (the Fréchet
//! distance of pool-3 features and of ADM's spatial `mixed_6/conv` features), and the
//! Inception Score as torch-fidelity computes it from `logits_unbiased`.
//!
//! Feature arrays are row-major `[n, d]` `f32` (what an extractor gives); every statistic is
//! accumulated in `f64`.

use alloc::format;
use alloc::vec::Vec;

use super::frechet::frechet_distance;
use super::moments::Moments;
use super::mt19937::NumpyRandomState;
use crate::error::{Error, Result};

/// Checks that `x` is `n` whole finite rows of width `d ≥ 1`.
pub(crate) fn check_rows(what: &str, x: &[f32], n: usize, d: usize) -> Result<()> {
    if d == 0 || n.checked_mul(d) != Some(x.len()) {
        return Err(Error::invalid(
            what,
            format!(
                "{} values are not {n} rows of width {d} (width must be at least 1)",
                x.len()
            ),
        ));
    }
    if let Some(bad) = x.iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("{what}: feature value {bad}"),
        });
    }
    Ok(())
}

/// Gaussian statistics of a feature set: mean `[d]` and unbiased covariance `[d, d]`
/// (`np.mean(x, 0)`, `np.cov(x, rowvar=False)`).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    /// Mean, `[d]`.
    pub mu: Vec<f64>,
    /// Covariance, row-major `[d, d]`.
    pub sigma: Vec<f64>,
}

impl GaussianStats {
    /// The statistics of `n ≥ 2` rows of `x` `[n, d]`.
    pub fn from_features(x: &[f32], n: usize, d: usize) -> Result<Self> {
        check_rows("GaussianStats::from_features", x, n, d)?;
        let mut m = Moments::new(d);
        m.push_rows(x)?;
        Self::from_moments(&m)
    }

    /// The statistics gathered in `m` (at least two vectors).
    pub fn from_moments(m: &Moments) -> Result<Self> {
        Ok(GaussianStats {
            sigma: m.covariance()?,
            mu: m.mean().to_vec(),
        })
    }

    /// The feature width `d`.
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// The Fréchet distance to `other` (FID on pool features, sFID on spatial ones).
    pub fn frechet_distance(&self, other: &GaussianStats) -> Result<f64> {
        frechet_distance(&self.mu, &self.sigma, &other.mu, &other.sigma)
    }
}

/// FID between two feature sets `[n1, d]` and `[n2, d]`: the Fréchet distance of their
/// Gaussian statistics (§6.1). sFID is the same on ADM's 2023-d spatial features.
pub fn fid_from_features(a: &[f32], n1: usize, b: &[f32], n2: usize, d: usize) -> Result<f64> {
    let sa = GaussianStats::from_features(a, n1, d)?;
    let sb = GaussianStats::from_features(b, n2, d)?;
    sa.frechet_distance(&sb)
}

/// An Inception Score: the mean and the population standard deviation over the splits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InceptionScore {
    /// Mean of `exp(mean KL)` over the splits.
    pub mean: f64,
    /// Standard deviation over the splits (`np.std`, divisor = number of splits).
    pub std: f64,
}

/// torch-fidelity's default shuffle seed (`rng_seed`), shared with KID.
pub const TORCH_FIDELITY_SEED: u32 = 2020;

/// The Inception Score of `logits` `[n, c]` (torch-fidelity's `logits_unbiased`, c = 1008),
/// as `isc_features_to_metric` computes it:
///
/// 1. when `shuffle_seed` is given, the rows are permuted by numpy's
///    `RandomState(seed).permutation(n)` (torch-fidelity's default: shuffle with 2020);
/// 2. `p = softmax(logits)` per row, in `f64`;
/// 3. split `k` holds rows `k·n/splits .. (k+1)·n/splits` (integer division);
/// 4. per split, `exp(mean_i Σ_c p_ic (log p_ic − log q_c))` with `q` the split's mean of `p`;
/// 5. mean and population std of the split scores.
///
/// ADM's evaluator scores contiguous chunks of 5000 without shuffling: with `n = 50 000`
/// that is `splits = 10`, `shuffle_seed = None` (ADM reports only the mean).
pub fn inception_score(
    logits: &[f32],
    n: usize,
    c: usize,
    splits: usize,
    shuffle_seed: Option<u32>,
) -> Result<InceptionScore> {
    check_rows("inception_score", logits, n, c)?;
    if splits == 0 || n < splits {
        return Err(Error::invalid(
            "inception_score",
            format!("{n} samples cannot fill {splits} splits (need at least one per split)"),
        ));
    }
    let order: Vec<usize> = match shuffle_seed {
        Some(seed) => NumpyRandomState::new(seed).permutation(n),
        None => (0..n).collect(),
    };
    // log p for every row, in the shuffled order.
    let mut log_p = Vec::with_capacity(n * c);
    for &r in &order {
        let row = &logits[r * c..(r + 1) * c];
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum: f64 = row.iter().map(|&v| libm::exp(v as f64 - max)).sum();
        let lse = max + libm::log(sum);
        log_p.extend(row.iter().map(|&v| v as f64 - lse));
    }
    let mut scores = Vec::with_capacity(splits);
    for k in 0..splits {
        let (lo, hi) = (k * n / splits, (k + 1) * n / splits);
        let rows = hi - lo;
        let mut q = alloc::vec![0.0f64; c];
        for i in lo..hi {
            for (qj, &lp) in q.iter_mut().zip(&log_p[i * c..(i + 1) * c]) {
                *qj += libm::exp(lp);
            }
        }
        let log_q: Vec<f64> = q.iter().map(|&s| libm::log(s / rows as f64)).collect();
        let mut kl_sum = 0.0;
        for i in lo..hi {
            kl_sum += log_p[i * c..(i + 1) * c]
                .iter()
                .zip(&log_q)
                .map(|(&lp, &lq)| libm::exp(lp) * (lp - lq))
                .sum::<f64>();
        }
        scores.push(libm::exp(kl_sum / rows as f64));
    }
    let (mean, std) = mean_std(&scores);
    Ok(InceptionScore { mean, std })
}

/// Mean and population standard deviation (`np.mean`, `np.std`) of a non-empty slice.
pub(crate) fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, libm::sqrt(var))
}
