//! Dense symmetric linear algebra in `f64` for the Fréchet distance: Householder reduction
//! to tridiagonal form, the implicit QL iteration with Wilkinson shifts on the tridiagonal
//! matrix, a pivoted (semi-definite) Cholesky factorisation and matrix products.
//!
//! Matrices are row-major. The reduction keeps the full symmetric matrix (both triangles),
//! so every inner loop runs over a contiguous row: the symmetric matrix–vector product is a
//! dot product per row and the rank-2 update an element-wise pass, and the two are fused
//! into one sweep over the trailing matrix per step. Products go through the `gemm` crate
//! (run-time AVX2/AVX-512 kernels, threaded) when that feature is on.

use alloc::vec;
use alloc::vec::Vec;

/// QL iterations allowed per eigenvalue before giving up (two or three are typical).
const MAX_QL_ITERATIONS: usize = 60;

/// `Σ x_i y_i` with eight independent partial sums, so that the loop vectorises.
pub(super) fn dot(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0.0f64; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    let mut tail = 0.0;
    for (a, b) in xr.iter().zip(yr) {
        tail += a * b;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `C[m, n] = op(A)·B` with `B` row-major `[k, n]` and `op(A)` either `A` row-major
/// `[m, k]` or, when `a_transposed`, `Aᵀ` for `A` row-major `[k, m]`.
pub(super) fn matmul(
    a: &[f64],
    b: &[f64],
    m: usize,
    k: usize,
    n: usize,
    a_transposed: bool,
) -> Vec<f64> {
    assert!(
        a.len() >= m * k && b.len() >= k * n,
        "matmul operands too short"
    );
    let mut c = vec![0.0; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    // Element (i, p) of op(A) is at a[i·rs + p·cs].
    let (rs, cs) = if a_transposed { (1, m) } else { (k, 1) };
    #[cfg(feature = "gemm")]
    {
        use crate::cpu::par;
        let par = if par::threads() > 1 && m * n * k >= 1 << 18 {
            gemm::Parallelism::Rayon(par::threads())
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: `a` holds at least m·k elements and every (i, p) with i < m, p < k maps to
        // i·rs + p·cs < m·k; `b` holds k·n elements addressed with row stride n; `c` holds
        // m·n elements addressed with row stride n. The three buffers do not overlap.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                cs as isize,
                rs as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }
    #[cfg(not(feature = "gemm"))]
    {
        // Blocks of rows of B that stay in cache while every row of C takes its share.
        const KB: usize = 64;
        for p0 in (0..k).step_by(KB) {
            let p1 = (p0 + KB).min(k);
            for i in 0..m {
                let ci = &mut c[i * n..(i + 1) * n];
                for p in p0..p1 {
                    let aip = a[i * rs + p * cs];
                    if aip == 0.0 {
                        continue;
                    }
                    for (cij, &bpj) in ci.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                        *cij += aip * bpj;
                    }
                }
            }
        }
    }
    c
}

/// Makes the row-major `[n, n]` matrix exactly symmetric: both triangles become `(A + Aᵀ)/2`.
pub(super) fn symmetrise(a: &mut [f64], n: usize) {
    for i in 0..n {
        for j in i + 1..n {
            let s = 0.5 * (a[i * n + j] + a[j * n + i]);
            a[i * n + j] = s;
            a[j * n + i] = s;
        }
    }
}

/// A Householder reflector `H = I − τ·v·vᵀ` with `H·x = β·e₁`, built in place over `x`
/// (which becomes `v`, with `v₀ = x₀ − β`); returns `(τ, β)`. `τ = 0` (`H = I`) when
/// `x[1..]` is zero.
fn householder(x: &mut [f64]) -> (f64, f64) {
    let Some((&x0, rest)) = x.split_first() else {
        return (0.0, 0.0);
    };
    let scale = rest.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 {
        return (0.0, x0);
    }
    let scale = scale.max(x0.abs());
    let ss: f64 = x.iter().map(|v| (v / scale) * (v / scale)).sum();
    let norm = scale * libm::sqrt(ss);
    let beta = if x0 >= 0.0 { -norm } else { norm };
    let v0 = x0 - beta;
    x[0] = v0;
    // vᵀv = 2β(β − x₀) = −2β·v₀.
    let tau = -1.0 / (beta * v0);
    (tau, beta)
}

/// Householder reduction `A = Q·T·Qᵀ` of the symmetric row-major `[n, n]` matrix `a` (both
/// triangles must be set) to the tridiagonal `T` with diagonal `d` and off-diagonal `e`
/// (`e[i]` couples `i` and `i + 1`; `e[n − 1] = 0`). Reflector `k` acts on indices `k + 1..n`;
/// its vector is left in `a[k, k + 1..n]` and its `τ` in the returned `taus[k]`.
pub(super) fn tridiagonalise(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    let mut taus = vec![0.0; n];
    if n == 0 {
        return (d, e, taus);
    }
    // p = A₂₂·v for the current reflector (trailing block k + 1..n), w the update vector.
    let mut p = vec![0.0; n];
    let mut w = vec![0.0; n];
    // The first reflector and its product, computed on their own.
    if n >= 2 {
        let (tau, beta) = householder(&mut a[1..n]);
        taus[0] = tau;
        e[0] = beta;
        for i in 1..n {
            p[i] = dot(&a[i * n + 1..(i + 1) * n], &a[1..n]);
        }
    }
    d[0] = a[0];
    for k in 0..n.saturating_sub(1) {
        let tau = taus[k];
        let lo = k + 1;
        let (head, tail) = a.split_at_mut(lo * n);
        let v = &head[k * n + lo..(k + 1) * n];
        // w = τp − (τ²/2)(vᵀp)·v, so that H·A₂₂·H = A₂₂ − v·wᵀ − w·vᵀ.
        let half = 0.5 * tau * tau * dot(v, &p[lo..n]);
        for (wi, (&pi, &vi)) in w[lo..n].iter_mut().zip(p[lo..n].iter().zip(v)) {
            *wi = tau * pi - half * vi;
        }
        let w = &w[lo..n];
        // Row k + 1 first: it holds the next reflector.
        let (vr, wr) = (v[0], w[0]);
        let row = &mut tail[lo..n];
        for (x, (&vj, &wj)) in row.iter_mut().zip(v.iter().zip(w)) {
            *x -= vr * wj + wr * vj;
        }
        d[lo] = row[0];
        if lo + 1 >= n {
            break;
        }
        let (tau_next, beta) = householder(&mut row[1..]);
        taus[lo] = tau_next;
        e[lo] = beta;
        let (first, rest) = tail.split_at_mut(n);
        let v_next = &first[lo + 1..n];
        // Rows k + 2..n: update the trailing columns and take the next product in one pass.
        // (Splitting this pass over threads made it slower: one spawn and join per column.)
        for (r, rowi) in rest.chunks_exact_mut(n).enumerate() {
            let i = r + 1; // offset of this row within v and w
            let (vi, wi) = (v[i], w[i]);
            let seg = &mut rowi[lo + 1..n];
            for (x, (&vj, &wj)) in seg.iter_mut().zip(v[1..].iter().zip(&w[1..])) {
                *x -= vi * wj + wi * vj;
            }
            p[lo + i] = dot(seg, v_next);
        }
    }
    (d, e, taus)
}

/// The orthogonal `Qᵀ` (row-major `[n, n]`) of [`tridiagonalise`], from the reflectors it
/// left in `a` and `taus`: `Q = H₀·H₁·…`, accumulated backwards (`Qᵀ = …·H₁·H₀`, applied
/// from the right to rows so that every update is contiguous).
pub(super) fn reflectors_to_qt(a: &[f64], taus: &[f64], n: usize) -> Vec<f64> {
    let mut q = vec![0.0; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    let mut u = vec![0.0; n];
    // Q = H₀…H_{n−2}; build it as Q ← H_k·Q for k from the last down, each H_k touching rows
    // and columns k + 1..n only (Q is the identity elsewhere in those steps).
    for k in (0..n.saturating_sub(1)).rev() {
        let tau = taus[k];
        if tau == 0.0 {
            continue;
        }
        let lo = k + 1;
        let v = &a[k * n + lo..(k + 1) * n];
        // u = vᵀ·Q[lo.., lo..]; then Q[i, lo..] −= τ·v_i·u.
        let u = &mut u[lo..n];
        u.fill(0.0);
        for (r, &vr) in v.iter().enumerate() {
            let qrow = &q[(lo + r) * n + lo..(lo + r + 1) * n];
            for (uj, &qj) in u.iter_mut().zip(qrow) {
                *uj += vr * qj;
            }
        }
        for (r, &vr) in v.iter().enumerate() {
            let f = tau * vr;
            let qrow = &mut q[(lo + r) * n + lo..(lo + r + 1) * n];
            for (qj, &uj) in qrow.iter_mut().zip(u.iter()) {
                *qj -= f * uj;
            }
        }
    }
    // Q is symmetric only by accident; transpose into Qᵀ.
    let mut qt = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            qt[j * n + i] = q[i * n + j];
        }
    }
    qt
}

/// `sqrt(a² + b²)` without overflow.
fn pythag(a: f64, b: f64) -> f64 {
    libm::hypot(a, b)
}

/// Eigenvalues of the symmetric tridiagonal matrix `(d, e)` (see [`tridiagonalise`]) by the
/// implicit QL iteration with Wilkinson shifts; on return `d` holds them (unordered) and `e`
/// is destroyed. With `zt` (row-major `[n, n]`, rows are the vectors to rotate), every plane
/// rotation `(i, i + 1)` is applied to rows `i` and `i + 1` of `zt`: start from `Qᵀ` to get
/// the eigenvectors of `A = Q·T·Qᵀ` as the rows of `zt`. Returns `false` when some
/// eigenvalue did not converge (or the data are not finite).
pub(super) fn tridiagonal_ql(d: &mut [f64], e: &mut [f64], mut zt: Option<&mut [f64]>) -> bool {
    let n = d.len();
    if n == 0 {
        return true;
    }
    e[n - 1] = 0.0;
    // A coupling below ε·‖T‖ is negligible: splitting there moves no eigenvalue by more than
    // the reduction's own rounding (a purely relative test can stall on clusters of
    // eigenvalues that are zero up to rounding).
    let norm = (0..n).fold(0.0f64, |m, i| {
        let below = if i > 0 { e[i - 1].abs() } else { 0.0 };
        m.max(d[i].abs() + e[i].abs() + below)
    });
    let negligible = f64::EPSILON * norm;
    for l in 0..n {
        let mut iterations = 0;
        loop {
            // The first negligible coupling at or after l splits off the block l..=m.
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd || e[m].abs() <= negligible {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > MAX_QL_ITERATIONS || !d[l].is_finite() || !e[l].is_finite() {
                return false;
            }
            // Wilkinson shift from the leading 2×2 block, in the form d[m] − d[l] + shift.
            let theta = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let r = pythag(theta, 1.0);
            let denom = theta + if theta >= 0.0 { r } else { -r };
            let mut g = d[m] - d[l] + e[l] / denom;
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut underflow = false;
            // Chase the bulge from the bottom of the block up to l.
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                let r = pythag(f, g);
                e[i + 1] = r;
                if r == 0.0 {
                    // Exact deflation: undo the shift on d[i + 1] and restart the block.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                let gg = d[i + 1] - p;
                let rr = (d[i] - gg) * s + 2.0 * c * b;
                p = s * rr;
                d[i + 1] = gg + p;
                g = c * rr - b;
                if let Some(z) = zt.as_deref_mut() {
                    let (upper, lower) = z.split_at_mut((i + 1) * n);
                    let zi = &mut upper[i * n..];
                    let zi1 = &mut lower[..n];
                    for (x, y) in zi.iter_mut().zip(zi1.iter_mut()) {
                        let (a, b) = (*x, *y);
                        *y = s * a + c * b;
                        *x = c * a - s * b;
                    }
                }
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    d.iter().all(|v| v.is_finite())
}

/// Pivoted Cholesky factorisation `A ≈ L·Lᵀ` of the symmetric positive semi-definite
/// row-major `[n, n]` matrix `a` (read through its rows `a[p, ·]` only). At each step the
/// largest remaining diagonal of the Schur complement is the pivot; the factorisation stops
/// when that is at most `n·ε·max_i a_ii`, so a singular (rank-deficient) `A` gives a thin
/// `L`. Returns `L` row-major `[n, r]` in the original row order (no permutation to undo)
/// and the rank `r`. A Schur complement that turns negative (an indefinite `A`) is dropped
/// like a zero one.
pub(super) fn pivoted_cholesky(a: &[f64], n: usize) -> (Vec<f64>, usize) {
    let mut diag: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    let max_diag = diag.iter().fold(0.0f64, |m, &v| m.max(v));
    let tol = n as f64 * f64::EPSILON * max_diag;
    // Row i of L holds its first `rank` columns in l[i·n..]; compacted at the end.
    let mut l = vec![0.0; n * n];
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut rank = 0;
    while !remaining.is_empty() {
        let (slot, &p) = remaining
            .iter()
            .enumerate()
            .max_by(|x, y| diag[*x.1].total_cmp(&diag[*y.1]))
            .unwrap_or((0, &0));
        // Also stops on a NaN diagonal.
        if diag[p].partial_cmp(&tol) != Some(core::cmp::Ordering::Greater) {
            break;
        }
        remaining.swap_remove(slot);
        let k = rank;
        let pivot = libm::sqrt(diag[p]);
        l[p * n + k] = pivot;
        let (lp, arow) = (p * n, &a[p * n..(p + 1) * n]);
        let inv = 1.0 / pivot;
        for &i in &remaining {
            let s = arow[i] - dot(&l[i * n..i * n + k], &l[lp..lp + k]);
            let lik = s * inv;
            l[i * n + k] = lik;
            diag[i] -= lik * lik;
        }
        rank += 1;
    }
    let mut out = vec![0.0; n * rank];
    for i in 0..n {
        out[i * rank..(i + 1) * rank].copy_from_slice(&l[i * n..i * n + rank]);
    }
    (out, rank)
}
