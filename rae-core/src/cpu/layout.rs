//! The layout ops of [`CpuBackend`](super::CpuBackend): patches, the `0213` permutation,
//! slices and concatenations of a middle axis, row gathers and scatters, and the Fourier
//! time features. They move values and compute (almost) nothing.

use alloc::vec::Vec;

use super::{data, make_dims, ops, T};
use crate::backend::PatchOrder;
use crate::check;
use crate::error::Result;
use crate::shape::Shape;

/// Rows `idx` of `table` `[V, C]`.
pub(super) fn gather_rows(table: &T, idx: &[u32]) -> Result<T> {
    let (_, c) = check::gather(table.shape(), idx)?;
    let ts = data(table);
    let mut out = Vec::with_capacity(idx.len() * c);
    for &i in idx {
        out.extend_from_slice(&ts[i as usize * c..(i as usize + 1) * c]);
    }
    make_dims(out, &[idx.len(), c])
}

/// `out[idx[i]] += dy[i]` into `[rows, C]` zeros.
pub(super) fn scatter_add_rows(dy: &T, idx: &[u32], rows: usize) -> Result<T> {
    let c = check::scatter_rows(dy.shape(), idx, rows)?;
    let ds = data(dy);
    let mut out = super::pool::zeroed(rows * c);
    for (r, &i) in idx.iter().enumerate() {
        for j in 0..c {
            out[i as usize * c + j] += ds[r * c + j];
        }
    }
    make_dims(out, &[rows, c])
}

/// `[sin(2π·t·w) | cos(2π·t·w)]` `[B, 2F]`.
pub(super) fn fourier_features(t: &T, w: &T) -> Result<T> {
    let (b, f) = check::fourier(t.shape(), w.shape())?;
    let (ts, ws) = (data(t), data(w));
    let mut out = super::pool::zeroed(b * 2 * f);
    for i in 0..b {
        for j in 0..f {
            let phase = ops::fourier_phase(ts[i], ws[j]);
            out[i * 2 * f + j] = libm::sinf(phase);
            out[i * 2 * f + f + j] = libm::cosf(phase);
        }
    }
    make_dims(out, &[b, 2 * f])
}

/// Images `[B, C, H, W]` → patch tokens `[B, (H/p)·(W/p), p·p·C]`.
pub(super) fn patchify(x: &T, p: usize, order: PatchOrder) -> Result<T> {
    let (b, c, h, w) = check::patchify(x.shape(), p)?;
    let (gh, gw) = (h / p, w / p);
    let xs = data(x);
    let mut out = super::pool::scratch(xs.len());
    let pc = p * p * c;
    for bi in 0..b {
        for ci in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let n = (y / p) * gw + xx / p;
                    let (r, s) = (y % p, xx % p);
                    let k = ops::patch_index(order, c, p, ci, r, s);
                    out[(bi * gh * gw + n) * pc + k] = xs[((bi * c + ci) * h + y) * w + xx];
                }
            }
        }
    }
    make_dims(out, &[b, gh * gw, pc])
}

/// Patch tokens `[B, gh·gw, p·p·C]` → images `[B, C, gh·p, gw·p]`.
pub(super) fn unpatchify(
    x: &T,
    channels: usize,
    grid: (usize, usize),
    p: usize,
    order: PatchOrder,
) -> Result<T> {
    let b = check::unpatchify(x.shape(), channels, grid, p)?;
    let (gh, gw) = grid;
    let (h, w, c) = (gh * p, gw * p, channels);
    let xs = data(x);
    let mut out = super::pool::scratch(xs.len());
    let pc = p * p * c;
    for bi in 0..b {
        for ci in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let n = (y / p) * gw + xx / p;
                    let k = ops::patch_index(order, c, p, ci, y % p, xx % p);
                    out[((bi * c + ci) * h + y) * w + xx] = xs[(bi * gh * gw + n) * pc + k];
                }
            }
        }
    }
    make_dims(out, &[b, c, h, w])
}

/// Tile side of [`permute0213`]: 32 output rows × 32 source rows keep both sides of the
/// transpose in L1 when `D` is small.
const PERMUTE_TILE: usize = 32;

/// `[A, B, C, D] → [A, C, B, D]`: output rows `(a, c)` of `B·D` values, threaded over rows
/// and tiled, so the transpose of a `[B, C]` matrix (`D = 1`, the conv's output layout)
/// reads and writes whole cache lines instead of one value per line.
pub(super) fn permute0213(x: &T) -> Result<T> {
    let [a, b, c, d] = check::permute0213(x.shape())?;
    let xs = data(x);
    let mut out = super::pool::scratch(xs.len());
    let row = b * d;
    super::par::for_rows(&mut out, row, 1, |first, rows| {
        let nrows = rows.len() / row.max(1);
        let mut r0 = 0;
        while r0 < nrows {
            let (i, k0) = ((first + r0) / c, (first + r0) % c);
            // Rows of one tile share `i` and are consecutive in `k`.
            let kn = (c - k0).min(nrows - r0).min(PERMUTE_TILE);
            for j0 in (0..b).step_by(PERMUTE_TILE) {
                let jn = (b - j0).min(PERMUTE_TILE);
                for kk in 0..kn {
                    let dst = &mut rows[(r0 + kk) * row..][..row];
                    let src_at = |j: usize| ((i * b + j) * c + k0 + kk) * d;
                    if d == 1 {
                        for j in j0..j0 + jn {
                            dst[j] = xs[src_at(j)];
                        }
                    } else {
                        for j in j0..j0 + jn {
                            dst[j * d..(j + 1) * d].copy_from_slice(&xs[src_at(j)..][..d]);
                        }
                    }
                }
            }
            r0 += kn;
        }
    });
    make_dims(out, &[a, c, b, d])
}

/// `[start, start + len)` of the middle axis of the `[A, B, C]` view `dims`.
pub(super) fn slice_mid(x: &T, dims: [usize; 3], start: usize, len: usize) -> Result<T> {
    check::slice_mid(x.shape(), dims, start, len)?;
    let [a, b, c] = dims;
    let xs = data(x);
    // A kept buffer: no fresh pages to fault in on every call.
    let mut out = super::pool::scratch(a * len * c);
    let row = len * c;
    // Threaded over the outer rows: one thread copies at a fraction of the memory bandwidth.
    super::par::for_rows(&mut out, row, 1, |first, rows| {
        for (i, o) in rows.chunks_exact_mut(row).enumerate() {
            let base = ((first + i) * b + start) * c;
            o.copy_from_slice(&xs[base..base + row]);
        }
    });
    make_dims(out, &[a, len, c])
}

/// Concatenation along the middle axis of `[outer, B_i, inner]` views.
pub(super) fn concat_mid(xs: &[&T], outer: usize, inner: usize) -> Result<T> {
    let shapes: Vec<&Shape> = xs.iter().map(|x| x.shape()).collect();
    let mids = check::concat_mid(&shapes, outer, inner)?;
    let total: usize = mids.iter().sum();
    let mut out = super::pool::scratch(outer * total * inner);
    let srcs: Vec<&[f32]> = xs.iter().map(|x| data(x)).collect();
    // Threaded over the outer rows, each of which is the parts one after another.
    super::par::for_rows(&mut out, total * inner, 1, |first, rows| {
        let mut at = 0;
        for o in first..first + rows.len() / (total * inner) {
            for (src, &m) in srcs.iter().zip(&mids) {
                let seg = m * inner;
                rows[at..at + seg].copy_from_slice(&src[o * seg..(o + 1) * seg]);
                at += seg;
            }
        }
    });
    make_dims(out, &[outer, total, inner])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes above the threading threshold, with an outer count that does not split evenly
    /// between threads and parts of unequal (and zero) length: the threaded copies against
    /// their definitions.
    #[test]
    fn threaded_slice_and_concat_mid_match_definitions() -> Result<()> {
        let (a, mid, c) = (301, 41, 17);
        let x: Vec<f32> = (0..a * mid * c).map(|i| i as f32).collect();
        let xt = make_dims(x.clone(), &[a, mid * c])?;
        let cuts = [(0, 0), (0, 13), (13, 28)];
        let mut parts: Vec<T> = Vec::new();
        for &(start, len) in &cuts {
            let y = slice_mid(&xt, [a, mid, c], start, len)?;
            let yv = data(&y);
            for i in 0..a {
                for m in 0..len {
                    for j in 0..c {
                        assert_eq!(yv[(i * len + m) * c + j], x[(i * mid + start + m) * c + j]);
                    }
                }
            }
            parts.push(y);
        }
        let refs: Vec<&T> = parts.iter().collect();
        let back = concat_mid(&refs, a, c)?;
        assert_eq!(back.shape().dims(), &[a, mid, c]);
        assert_eq!(data(&back), &x[..]);
        Ok(())
    }
}
