//! Improved precision and recall (Kynkäänniemi et al., 2019) as ADM's evaluator computes
//! them (`ManifoldEstimator`, §6.1), on pool features `[n, d]`:
//!
//! * distances are **squared** Euclidean distances;
//! * a point's radius is its `k`-th nearest-neighbour distance within its own set, the point
//!   itself counted at distance 0 (ADM sorts each row of the set's distance matrix, self
//!   included, and takes index `k`; `k = 3`);
//! * a point lies in a set's manifold when its distance to some point of that set is at most
//!   that point's radius (`≤`);
//! * precision = the fraction of samples inside the reference manifold, recall = the
//!   fraction of references inside the sample manifold.
//!
//! ADM computes distances as `‖u‖² − 2u·v + ‖v‖²` in float16 (float32 when that overflows)
//! on row blocks; the blocks do not change results. Here every distance is `Σ (u − v)²` in
//! `f64`, the exact value ADM's arithmetic approximates, so a pair within float16 rounding
//! of a radius can fall on the other side.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::inception::check_rows;
use crate::cpu::par;
use crate::error::{Error, Result};

/// ADM's neighbourhood size.
pub const ADM_NEIGHBOURS: usize = 3;

/// Precision and recall of a sample set against a reference set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    /// Fraction of samples inside the reference manifold.
    pub precision: f64,
    /// Fraction of references inside the sample manifold.
    pub recall: f64,
}

/// Squared Euclidean distance, in four lanes.
fn dist2(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..4 {
            let t = x[l] as f64 - y[l] as f64;
            acc[l] += t * t;
        }
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| {
            let t = x as f64 - y as f64;
            t * t
        })
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The radius of each of the `n` rows of `x` `[n, d]`: the `(k+1)`-th smallest squared
/// distance to the rows of `x`, the row itself included (so the `k`-th nearest other point
/// when no two rows coincide). Needs `n > k`.
pub fn manifold_radii(x: &[f32], n: usize, d: usize, k: usize) -> Result<Vec<f64>> {
    check_rows("manifold_radii", x, n, d)?;
    if n <= k {
        return Err(Error::invalid(
            "manifold_radii",
            format!("{n} feature vectors have no {k}-th nearest neighbour (need more than {k})"),
        ));
    }
    // Rows split across the CPU's threads; each part keeps its own distance row.
    let mut radii = vec![0.0f64; n];
    let part = n.div_ceil(par::threads()).max(1);
    par::for_each_part(radii.chunks_mut(part).enumerate(), |(c, out)| {
        let mut row = vec![0.0f64; n];
        for (o, r) in out.iter_mut().enumerate() {
            let i = c * part + o;
            let xi = &x[i * d..(i + 1) * d];
            for (j, v) in row.iter_mut().enumerate() {
                *v = dist2(xi, &x[j * d..(j + 1) * d]);
            }
            let (_, kth, _) = row.select_nth_unstable_by(k, f64::total_cmp);
            *r = *kth;
        }
    });
    Ok(radii)
}

/// Improved precision and recall of `samples` `[n_s, d]` against `reference` `[n_r, d]` with
/// `k`-nearest-neighbour radii (ADM: `k = 3`).
pub fn precision_recall(
    reference: &[f32],
    n_r: usize,
    samples: &[f32],
    n_s: usize,
    d: usize,
    k: usize,
) -> Result<PrecisionRecall> {
    let r_ref = manifold_radii(reference, n_r, d, k)?;
    let r_s = manifold_radii(samples, n_s, d, k)?;
    precision_recall_with_radii(reference, &r_ref, samples, &r_s, d)
}

/// [`precision_recall`] with the radii already computed (by [`manifold_radii`]).
pub fn precision_recall_with_radii(
    reference: &[f32],
    radii_ref: &[f64],
    samples: &[f32],
    radii_s: &[f64],
    d: usize,
) -> Result<PrecisionRecall> {
    let (n_r, n_s) = (radii_ref.len(), radii_s.len());
    check_rows("precision_recall (reference)", reference, n_r, d)?;
    check_rows("precision_recall (samples)", samples, n_s, d)?;
    if n_r == 0 || n_s == 0 {
        return Err(Error::invalid("precision_recall", "empty feature set"));
    }
    // Whether each row of `a` lies within the radius of some row of `b`: split across the
    // CPU's threads, each row stopping at its first hit (the answer does not depend on
    // the order).
    let inside = |a: &[f32], n_a: usize, b: &[f32], radii_b: &[f64]| -> Vec<bool> {
        let mut hit = vec![false; n_a];
        let part = n_a.div_ceil(par::threads()).max(1);
        par::for_each_part(hit.chunks_mut(part).enumerate(), |(c, out)| {
            for (o, h) in out.iter_mut().enumerate() {
                let xi = &a[(c * part + o) * d..][..d];
                *h = radii_b
                    .iter()
                    .enumerate()
                    .any(|(j, &r)| dist2(xi, &b[j * d..(j + 1) * d]) <= r);
            }
        });
        hit
    };
    let sample_in = inside(samples, n_s, reference, radii_ref);
    let ref_in = inside(reference, n_r, samples, radii_s);
    let frac = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len() as f64;
    Ok(PrecisionRecall {
        precision: frac(&sample_in),
        recall: frac(&ref_in),
    })
}
