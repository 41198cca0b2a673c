//! The Fréchet distance between two Gaussians (FID, §6.1–6.2) and the symmetric
//! eigendecomposition and matrix square root behind it, on our own dense linear algebra
//! (`linalg.rs`: Householder tridiagonalisation, implicit QL, pivoted Cholesky).
//!
//! `FD = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2·tr (Σ1 Σ2)^½`. For any factor `Σ1 = A·Aᵀ`, `Σ1 Σ2`
//! has the non-zero eigenvalues of the symmetric positive semi-definite `Aᵀ Σ2 A`, so
//! `tr (Σ1 Σ2)^½` is the sum of the square roots of the eigenvalues of `Aᵀ Σ2 A`. `A` comes
//! from a pivoted Cholesky factorisation, which stops at the numerical rank of `Σ1`: a
//! covariance from fewer samples than dimensions gives a thin `A` and a smaller eigenvalue
//! problem, and no eigenvectors are ever formed. Only symmetric matrices are decomposed, so
//! no complex arithmetic is needed (unlike `scipy.linalg.sqrtm` on the product).
//!
//! Cost at `n = 2048`: the Cholesky factorisation (`n³/3` flops), two products (`4n³`,
//! through `gemm`) and the tridiagonal reduction (`4n³/3`, single-threaded, the bulk of the
//! time); the QL iteration on the tridiagonal matrix is `O(n²)` without vectors. A whole
//! [`frechet_distance`] took about 5 s in a release build on a busy 2-core machine (the
//! Jacobi solver before it: about 6 minutes); `frechet_timing` in `frechet_tests.rs` (an
//! ignored test, run with `--release`) measures it.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};

#[path = "linalg.rs"]
mod linalg;

#[cfg(test)]
#[path = "jacobi_ref.rs"]
mod jacobi_ref;

#[cfg(test)]
#[path = "frechet_tests.rs"]
mod tests;

/// Eigenvalues and eigenvectors of a symmetric matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SymEigen {
    /// Eigenvalues, in no particular order.
    pub values: Vec<f64>,
    /// Row-major `[n, n]`; column `k` is the unit eigenvector of `values[k]`.
    pub vectors: Vec<f64>,
}

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
/// row-major `[n, n]` matrix `a`: Householder reduction to tridiagonal form, the
/// orthogonal factor accumulated from the reflectors, then the implicit QL iteration with
/// Wilkinson shifts, its rotations applied to that factor.
pub fn sym_eigen(a: &[f64], n: usize) -> Result<SymEigen> {
    check_square("sym_eigen", a, n)?;
    let (values, vt) = eigen_rows(a, n, true)?;
    let mut vectors = vec![0.0; n * n];
    for k in 0..n {
        for i in 0..n {
            vectors[i * n + k] = vt[k * n + i];
        }
    }
    Ok(SymEigen { values, vectors })
}

/// Eigenvalues of the symmetric part of the checked `[n, n]` matrix `a` and, when
/// `want_vectors`, the unit eigenvectors as the rows of a row-major `[n, n]` matrix (empty
/// otherwise).
fn eigen_rows(a: &[f64], n: usize, want_vectors: bool) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut m = a.to_vec();
    linalg::symmetrise(&mut m, n);
    let (mut d, mut e, taus) = linalg::tridiagonalise(&mut m, n);
    let mut vt = if want_vectors {
        linalg::reflectors_to_qt(&m, &taus, n)
    } else {
        Vec::new()
    };
    let z = if want_vectors {
        Some(vt.as_mut_slice())
    } else {
        None
    };
    if !linalg::tridiagonal_ql(&mut d, &mut e, z) {
        return Err(Error::invalid(
            "sym_eigen",
            format!("the QL iteration did not converge (n = {n}; entries too large?)"),
        ));
    }
    Ok((d, vt))
}

/// The principal square root `V·diag(sqrt(max(λ, 0)))·Vᵀ` of a symmetric positive
/// semi-definite `[n, n]` matrix (eigenvalues below zero from rounding count as zero). The
/// result is exactly symmetric.
pub fn sqrtm_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    check_square("sqrtm_psd", a, n)?;
    let (values, vt) = eigen_rows(a, n, true)?;
    // R = Vᵀᵀ·(diag(√λ)·Vᵀ): row k of the right factor is √λ_k times eigenvector k.
    let mut scaled = vt.clone();
    for (row, &l) in scaled.chunks_exact_mut(n.max(1)).zip(&values) {
        let root = libm::sqrt(l.max(0.0));
        row.iter_mut().for_each(|x| *x *= root);
    }
    let mut r = linalg::matmul(&vt, &scaled, n, n, n, true);
    for i in 0..n {
        for j in i + 1..n {
            r[j * n + i] = r[i * n + j];
        }
    }
    Ok(r)
}

/// `tr (Σ1 Σ2)^½ = Σ_k sqrt(λ_k(Aᵀ Σ2 A))` for symmetric PSD `[n, n]` matrices, with
/// `Σ1 ≈ A·Aᵀ` from a pivoted Cholesky factorisation (thin when `Σ1` is singular). Only the
/// symmetric parts of the inputs count; eigenvalues below zero from rounding count as zero.
pub fn trace_sqrt_product(sigma1: &[f64], sigma2: &[f64], n: usize) -> Result<f64> {
    check_square("trace_sqrt_product (sigma1)", sigma1, n)?;
    check_square("trace_sqrt_product (sigma2)", sigma2, n)?;
    let mut s1 = sigma1.to_vec();
    linalg::symmetrise(&mut s1, n);
    let mut s2 = sigma2.to_vec();
    linalg::symmetrise(&mut s2, n);
    let (a, r) = linalg::pivoted_cholesky(&s1, n);
    drop(s1);
    if r == 0 {
        return Ok(0.0);
    }
    // M = Aᵀ·(Σ2·A), [r, r].
    let b = linalg::matmul(&s2, &a, n, n, r, false);
    drop(s2);
    let mut m = linalg::matmul(&a, &b, r, n, r, true);
    drop(b);
    if let Some(bad) = m.iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("trace_sqrt_product: Aᵀ Σ2 A entry {bad} (entries too large)"),
        });
    }
    linalg::symmetrise(&mut m, r);
    let (mut d, mut e, _) = linalg::tridiagonalise(&mut m, r);
    if !linalg::tridiagonal_ql(&mut d, &mut e, None) {
        return Err(Error::invalid(
            "trace_sqrt_product",
            format!("the QL iteration did not converge (rank {r} of n = {n})"),
        ));
    }
    Ok(d.iter().map(|&l| libm::sqrt(l.max(0.0))).sum())
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
