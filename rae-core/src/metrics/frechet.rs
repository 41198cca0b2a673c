//! The Fréchet distance between two Gaussians (FID, §6.1–6.2) with matrix square roots
//! from our own cyclic Jacobi eigendecomposition of symmetric matrices.
//!
//! `FD = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2·tr (Σ1 Σ2)^½`, and since `Σ1 Σ2` is similar to the
//! symmetric positive semi-definite `Σ1^½ Σ2 Σ1^½`, `tr (Σ1 Σ2)^½ = tr (Σ1^½ Σ2 Σ1^½)^½` =
//! the sum of the square roots of its eigenvalues. Only symmetric matrices are decomposed,
//! so no complex arithmetic is needed (unlike `scipy.linalg.sqrtm` on the product).
//!
//! Cost: a Jacobi sweep is `O(n³)` and typically 6–10 sweeps are needed; for 2048-dimensional
//! Inception features this takes on the order of a minute per decomposition on one core.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// Eigenvalues and eigenvectors of a symmetric matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SymEigen {
    /// Eigenvalues, in no particular order.
    pub values: Vec<f64>,
    /// Row-major `[n, n]`; column `k` is the unit eigenvector of `values[k]`.
    pub vectors: Vec<f64>,
}

/// Sweeps after which the Jacobi iteration gives up (it normally needs about ten).
const MAX_SWEEPS: usize = 100;

fn check_square(what: &str, a: &[f64], n: usize) -> Result<()> {
    if a.len() != n * n {
        return Err(Error::invalid(
            what,
            format!(
                "expected an {n}x{n} matrix ({} values), got {}",
                n * n,
                a.len()
            ),
        ));
    }
    if let Some(bad) = a.iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("{what}: matrix entry {bad}"),
        });
    }
    Ok(())
}

/// Eigendecomposition `A = V·diag(λ)·Vᵀ` of the symmetric part `(A + Aᵀ)/2` of the
/// row-major `[n, n]` matrix `a`, by the cyclic Jacobi method.
///
/// Each rotation zeroes one off-diagonal pair `(p, q)` with `t = tan φ` the smaller root of
/// `t² + 2θt − 1 = 0`, `θ = (a_qq − a_pp)/(2a_pq)`. After a few sweeps, entries that are
/// negligible next to both diagonal entries are set to zero without a rotation; the
/// iteration stops when a sweep leaves nothing to rotate or the off-diagonal mass is below
/// `1e-2·ε·‖A‖_F`.
pub fn sym_eigen(a: &[f64], n: usize) -> Result<SymEigen> {
    check_square("sym_eigen", a, n)?;
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let frob2: f64 = m.iter().map(|x| x * x).sum();
    // Off-diagonal mass this small moves no eigenvalue by more than rounding would.
    let negligible2 = frob2 * (1e-2 * f64::EPSILON) * (1e-2 * f64::EPSILON);
    let mut converged = false;
    for sweep in 0..MAX_SWEEPS {
        let off2: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| 2.0 * m[p * n + q] * m[p * n + q])
            .sum();
        if off2 <= negligible2 {
            converged = true;
            break;
        }
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let app = m[p * n + p];
                let aqq = m[q * n + q];
                let g = 100.0 * apq.abs();
                if sweep > 3 && app.abs() + g == app.abs() && aqq.abs() + g == aqq.abs() {
                    m[p * n + q] = 0.0;
                    m[q * n + p] = 0.0;
                    continue;
                }
                rotated = true;
                let theta = (aqq - app) / (2.0 * apq);
                let t = {
                    let r = 1.0 / (theta.abs() + libm::hypot(theta, 1.0));
                    if theta < 0.0 {
                        -r
                    } else {
                        r
                    }
                };
                let c = 1.0 / libm::sqrt(t * t + 1.0);
                let s = t * c;
                rotate(&mut m, &mut v, n, p, q, c, s);
                m[p * n + p] = app - t * apq;
                m[q * n + q] = aqq + t * apq;
                m[p * n + q] = 0.0;
                m[q * n + p] = 0.0;
            }
        }
        if !rotated {
            converged = true;
            break;
        }
    }
    if !converged {
        return Err(Error::invalid(
            "sym_eigen",
            format!("the Jacobi iteration did not converge in {MAX_SWEEPS} sweeps (n = {n})"),
        ));
    }
    let values = (0..n).map(|i| m[i * n + i]).collect();
    Ok(SymEigen { values, vectors: v })
}

/// `A ← Jᵀ A J`, `V ← V J` for the plane rotation `J` with `J_pp = J_qq = c`, `J_pq = s`,
/// `J_qp = −s`. Rows `p`, `q` are updated contiguously and mirrored into the columns; the
/// 2×2 block is set by the caller.
fn rotate(m: &mut [f64], v: &mut [f64], n: usize, p: usize, q: usize, c: f64, s: f64) {
    for k in 0..n {
        if k == p || k == q {
            continue;
        }
        let apk = m[p * n + k];
        let aqk = m[q * n + k];
        let np = c * apk - s * aqk;
        let nq = s * apk + c * aqk;
        m[p * n + k] = np;
        m[q * n + k] = nq;
        m[k * n + p] = np;
        m[k * n + q] = nq;
    }
    for k in 0..n {
        let vkp = v[k * n + p];
        let vkq = v[k * n + q];
        v[k * n + p] = c * vkp - s * vkq;
        v[k * n + q] = s * vkp + c * vkq;
    }
}

/// `C = A·B` for row-major `[n, n]` matrices.
fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        let ci = &mut c[i * n..(i + 1) * n];
        for k in 0..n {
            let aik = a[i * n + k];
            if aik == 0.0 {
                continue;
            }
            let bk = &b[k * n..(k + 1) * n];
            for (cij, &bkj) in ci.iter_mut().zip(bk) {
                *cij += aik * bkj;
            }
        }
    }
    c
}

/// The principal square root `V·diag(sqrt(max(λ, 0)))·Vᵀ` of a symmetric positive
/// semi-definite `[n, n]` matrix (eigenvalues below zero from rounding count as zero).
pub fn sqrtm_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let e = sym_eigen(a, n)?;
    let roots: Vec<f64> = e.values.iter().map(|&l| libm::sqrt(l.max(0.0))).collect();
    let mut r = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let mut acc = 0.0;
            for k in 0..n {
                acc += e.vectors[i * n + k] * roots[k] * e.vectors[j * n + k];
            }
            r[i * n + j] = acc;
            r[j * n + i] = acc;
        }
    }
    Ok(r)
}

/// `tr (Σ1 Σ2)^½ = Σ_k sqrt(λ_k(Σ1^½ Σ2 Σ1^½))` for symmetric PSD `[n, n]` matrices.
pub fn trace_sqrt_product(sigma1: &[f64], sigma2: &[f64], n: usize) -> Result<f64> {
    check_square("trace_sqrt_product (sigma2)", sigma2, n)?;
    let r = sqrtm_psd(sigma1, n)?;
    let m = matmul(&matmul(&r, sigma2, n), &r, n);
    let e = sym_eigen(&m, n)?;
    Ok(e.values.iter().map(|&l| libm::sqrt(l.max(0.0))).sum())
}

/// The Fréchet distance `‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2·tr (Σ1 Σ2)^½` between
/// `N(μ1, Σ1)` and `N(μ2, Σ2)`; means `[n]`, covariances row-major `[n, n]` (§6.1).
///
/// Not clamped: a tiny negative value from rounding is reported as computed.
pub fn frechet_distance(mu1: &[f64], sigma1: &[f64], mu2: &[f64], sigma2: &[f64]) -> Result<f64> {
    let n = mu1.len();
    if mu2.len() != n {
        return Err(Error::invalid(
            "frechet_distance",
            format!("means differ in length ({n} vs {})", mu2.len()),
        ));
    }
    if let Some(bad) = mu1.iter().chain(mu2).find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("frechet_distance: mean entry {bad}"),
        });
    }
    check_square("frechet_distance (sigma1)", sigma1, n)?;
    check_square("frechet_distance (sigma2)", sigma2, n)?;
    let diff: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let tr1: f64 = (0..n).map(|i| sigma1[i * n + i]).sum();
    let tr2: f64 = (0..n).map(|i| sigma2[i * n + i]).sum();
    let cross = trace_sqrt_product(sigma1, sigma2, n)?;
    Ok(diff + tr1 + tr2 - 2.0 * cross)
}
