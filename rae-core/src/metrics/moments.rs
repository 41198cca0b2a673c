//! Streaming mean and covariance of feature vectors in f64 (the `mu`, `sigma` statistics of
//! FID, §6.1), with Welford updates and the pairwise merge of Chan et al., so statistics
//! can be gathered in shards and combined.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// Running count, mean and co-moment `Σ (x − μ)(x − μ)ᵀ` of `dim`-dimensional vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    dim: usize,
    count: u64,
    mean: Vec<f64>,
    /// Row-major `[dim, dim]`; only the upper triangle is maintained between reads.
    comoment: Vec<f64>,
}

impl Moments {
    /// Empty statistics of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        Moments {
            dim,
            count: 0,
            mean: vec![0.0; dim],
            comoment: vec![0.0; dim * dim],
        }
    }

    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The running mean `[dim]`.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Adds one vector `[dim]` (Welford: `δ = x − μ`, `μ += δ/n`,
    /// `C += (n − 1)/n · δδᵀ`). A non-finite value is [`Error::NonFinite`].
    pub fn push(&mut self, x: &[f32]) -> Result<()> {
        if x.len() != self.dim {
            return Err(Error::invalid(
                "Moments::push",
                format!(
                    "vector of length {} for statistics of dimension {}",
                    x.len(),
                    self.dim
                ),
            ));
        }
        if let Some(bad) = x.iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("feature value {bad}"),
            });
        }
        self.count += 1;
        let n = self.count as f64;
        let f = (n - 1.0) / n;
        let d = self.dim;
        let delta: Vec<f64> = x
            .iter()
            .zip(&self.mean)
            .map(|(&v, &m)| v as f64 - m)
            .collect();
        for (m, &dl) in self.mean.iter_mut().zip(&delta) {
            *m += dl / n;
        }
        for i in 0..d {
            let fi = f * delta[i];
            let row = &mut self.comoment[i * d..(i + 1) * d];
            for j in i..d {
                row[j] += fi * delta[j];
            }
        }
        Ok(())
    }

    /// Adds the rows of a row-major `[rows, dim]` batch.
    pub fn push_rows(&mut self, rows: &[f32]) -> Result<()> {
        if self.dim == 0 || !rows.len().is_multiple_of(self.dim) {
            return Err(Error::invalid(
                "Moments::push_rows",
                format!(
                    "{} values are not whole rows of dimension {}",
                    rows.len(),
                    self.dim
                ),
            ));
        }
        for r in rows.chunks_exact(self.dim) {
            self.push(r)?;
        }
        Ok(())
    }

    /// Merges another accumulator of the same dimension (Chan et al.):
    /// `μ = μ_a + δ·n_b/n`, `C = C_a + C_b + δδᵀ·n_a·n_b/n`, `δ = μ_b − μ_a`.
    pub fn merge(&mut self, other: &Moments) -> Result<()> {
        if other.dim != self.dim {
            return Err(Error::invalid(
                "Moments::merge",
                format!("dimensions differ ({} vs {})", self.dim, other.dim),
            ));
        }
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            *self = other.clone();
            return Ok(());
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let d = self.dim;
        let delta: Vec<f64> = other
            .mean
            .iter()
            .zip(&self.mean)
            .map(|(b, a)| b - a)
            .collect();
        let w = na * nb / n;
        for i in 0..d {
            for j in i..d {
                self.comoment[i * d + j] += other.comoment[i * d + j] + w * delta[i] * delta[j];
            }
        }
        for (m, &dl) in self.mean.iter_mut().zip(&delta) {
            *m += dl * nb / n;
        }
        self.count += other.count;
        Ok(())
    }

    /// The unbiased covariance `C/(n − 1)` as a row-major symmetric `[dim, dim]` matrix (the
    /// `np.cov` convention of FID). Needs at least two vectors.
    pub fn covariance(&self) -> Result<Vec<f64>> {
        if self.count < 2 {
            return Err(Error::invalid(
                "Moments::covariance",
                format!("needs at least 2 vectors, have {}", self.count),
            ));
        }
        let d = self.dim;
        let denom = (self.count - 1) as f64;
        let mut c = vec![0.0; d * d];
        for i in 0..d {
            for j in i..d {
                let v = self.comoment[i * d + j] / denom;
                c[i * d + j] = v;
                c[j * d + i] = v;
            }
        }
        Ok(c)
    }
}
