//! Test-only reference: the cyclic Jacobi eigensolver that `frechet.rs` used before the
//! Householder + implicit QL solver, kept to check the new one against the old definition.
//! Inputs are assumed checked (finite, square).

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// Sweeps after which the Jacobi iteration gives up (it normally needs about ten).
const MAX_SWEEPS: usize = 100;

/// One planned rotation of a round: indices `p < q`, cosine, sine, tangent and the old
/// `(a_pp, a_qq, a_pq)`.
#[derive(Clone, Copy)]
struct Rotation {
    p: usize,
    q: usize,
    c: f64,
    s: f64,
    t: f64,
    app: f64,
    aqq: f64,
    apq: f64,
}

/// Eigenvalues and, when `want_vectors`, eigenvectors (row-major, column `k` for value `k`;
/// empty otherwise).
pub(super) fn jacobi(a: &[f64], n: usize, want_vectors: bool) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    // W = Vᵀ, so that V ← V·J updates two contiguous rows of W.
    let mut w = if want_vectors {
        let mut w = vec![0.0; n * n];
        for i in 0..n {
            w[i * n + i] = 1.0;
        }
        w
    } else {
        Vec::new()
    };
    let frob2: f64 = m.iter().map(|x| x * x).sum();
    // Off-diagonal mass this small moves no eigenvalue by more than rounding would.
    let negligible2 = frob2 * (1e-2 * f64::EPSILON) * (1e-2 * f64::EPSILON);
    // Round-robin schedule over an even number of slots (slot `n` is a bye when n is odd).
    let slots = n + (n % 2);
    let mut order: Vec<usize> = (0..slots).collect();
    let mut rots: Vec<Rotation> = Vec::with_capacity(slots / 2);
    let mut converged = n <= 1;
    for sweep in 0..MAX_SWEEPS {
        if converged {
            break;
        }
        let off2: f64 = (0..n)
            .map(|p| {
                m[p * n + p + 1..(p + 1) * n]
                    .iter()
                    .map(|x| 2.0 * x * x)
                    .sum::<f64>()
            })
            .sum();
        if off2 <= negligible2 {
            converged = true;
            break;
        }
        let mut rotated = false;
        for _round in 1..slots {
            rots.clear();
            for i in 0..slots / 2 {
                let (x, y) = (order[i], order[slots - 1 - i]);
                let (p, q) = if x < y { (x, y) } else { (y, x) };
                if q >= n {
                    continue;
                }
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
                let theta = (aqq - app) / (2.0 * apq);
                let r = 1.0 / (theta.abs() + libm::hypot(theta, 1.0));
                let t = if theta < 0.0 { -r } else { r };
                let c = 1.0 / libm::sqrt(t * t + 1.0);
                rots.push(Rotation {
                    p,
                    q,
                    c,
                    s: t * c,
                    t,
                    app,
                    aqq,
                    apq,
                });
            }
            if !rots.is_empty() {
                rotated = true;
                apply_round(&mut m, &mut w, n, &rots);
            }
            // Keep slot 0 fixed and rotate the others by one.
            order[1..].rotate_right(1);
        }
        if !rotated {
            converged = true;
        }
    }
    if !converged {
        return Err(Error::invalid(
            "sym_eigen",
            format!("the Jacobi iteration did not converge in {MAX_SWEEPS} sweeps (n = {n})"),
        ));
    }
    let values = (0..n).map(|i| m[i * n + i]).collect();
    let mut vectors = Vec::new();
    if want_vectors {
        vectors = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                vectors[i * n + k] = w[k * n + i];
            }
        }
    }
    Ok((values, vectors))
}

/// `(x, y) ← (c·x − s·y, s·x + c·y)` element-wise on two rows.
fn rotate_rows(x: &mut [f64], y: &mut [f64], c: f64, s: f64) {
    for (xi, yi) in x.iter_mut().zip(y.iter_mut()) {
        let (a, b) = (*xi, *yi);
        *xi = c * a - s * b;
        *yi = s * a + c * b;
    }
}

/// Two distinct rows `p < q` of a row-major matrix with `n` columns.
fn two_rows(m: &mut [f64], n: usize, p: usize, q: usize) -> (&mut [f64], &mut [f64]) {
    let (lo, hi) = m.split_at_mut(q * n);
    (&mut lo[p * n..(p + 1) * n], &mut hi[..n])
}

/// Applies a round of disjoint rotations: `A ← Jᵀ A J` (rows, then columns) and `W ← Jᵀ W`
/// for `J` with `J_pp = J_qq = c`, `J_pq = s`, `J_qp = −s`; each 2×2 block is then set to its
/// exact diagonal form `a_pp − t·a_pq`, `a_qq + t·a_pq`, 0.
fn apply_round(m: &mut [f64], w: &mut [f64], n: usize, rots: &[Rotation]) {
    for r in rots {
        let (rp, rq) = two_rows(m, n, r.p, r.q);
        rotate_rows(rp, rq, r.c, r.s);
        if !w.is_empty() {
            let (wp, wq) = two_rows(w, n, r.p, r.q);
            rotate_rows(wp, wq, r.c, r.s);
        }
    }
    for row in m.chunks_exact_mut(n) {
        for r in rots {
            let (a, b) = (row[r.p], row[r.q]);
            row[r.p] = r.c * a - r.s * b;
            row[r.q] = r.s * a + r.c * b;
        }
    }
    for r in rots {
        m[r.p * n + r.p] = r.app - r.t * r.apq;
        m[r.q * n + r.q] = r.aqq + r.t * r.apq;
        m[r.p * n + r.q] = 0.0;
        m[r.q * n + r.p] = 0.0;
    }
}
