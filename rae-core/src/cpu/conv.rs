//! The 2-D window ops of [`CpuBackend`](super::CpuBackend) on NCHW data: im2col and its
//! adjoint col2im, max and average pooling and the pooling gradient. Each is threaded over
//! output rows with [`par::for_rows`]; nothing allocates per element.

use super::{data, make_dims, par, pool, T};
use crate::backend::{Pool2d, Window2d};
use crate::check;
use crate::error::Result;

/// The window's first input coordinate for output coordinate `o` (may be negative).
fn start(o: usize, s: usize, p: usize) -> isize {
    (o * s) as isize - p as isize
}

/// `x` `[n, c, h, w]` → `[n, ho·wo, c·kh·kw]`, zero outside the input.
pub(super) fn im2col(x: &T, g: Window2d) -> Result<T> {
    let (_, wo) = check::window2d("im2col", x.shape(), &g, false)?;
    let [n, np, k] = g.cols_dims();
    let xs = data(x);
    let mut out = pool::scratch(n * np * k);
    par::for_rows(&mut out, k, 2, |first, rows| {
        for (r, row) in rows.chunks_mut(k).enumerate() {
            let r = first + r;
            let (bi, pos) = (r / np, r % np);
            let (y0, x0) = (start(pos / wo, g.sh, g.ph), start(pos % wo, g.sw, g.pw));
            let mut cols = row.iter_mut();
            for ci in 0..g.c {
                let plane = &xs[(bi * g.c + ci) * g.h * g.w..][..g.h * g.w];
                for i in 0..g.kh {
                    let y = y0 + i as isize;
                    let line =
                        (y >= 0 && (y as usize) < g.h).then(|| &plane[y as usize * g.w..][..g.w]);
                    for j in 0..g.kw {
                        let xx = x0 + j as isize;
                        let v = match line {
                            Some(l) if xx >= 0 && (xx as usize) < g.w => l[xx as usize],
                            _ => 0.0,
                        };
                        if let Some(c) = cols.next() {
                            *c = v;
                        }
                    }
                }
            }
        }
    });
    make_dims(out, &[n, np, k])
}

/// The adjoint of [`im2col`]: `cols` `[n, ho·wo, c·kh·kw]` → `[n, c, h, w]`, each output
/// element gathering its contributions (window rows, then columns, in increasing order).
pub(super) fn col2im(cols: &T, g: Window2d) -> Result<T> {
    let (ho, wo) = check::window2d("col2im", cols.shape(), &g, true)?;
    let kk = g.kh * g.kw;
    let k = g.c * kk;
    let cs = data(cols);
    let plane = g.h * g.w;
    let mut out = pool::zeroed(g.n * g.c * plane);
    // Each task owns a run of planes `(n, c)`; per image in it, the rows of `cols` are read
    // in order, each giving its channels' `kh·kw` values as one contiguous run, and added
    // into the planes (the few lines a row touches stay in cache). Every input position
    // receives its terms in increasing `(oy, ox)`, as a gather would add them.
    par::for_rows(&mut out, plane, kk, |first, planes| {
        let count = planes.len() / plane.max(1);
        let mut p = 0;
        while p < count {
            let (bi, c_lo) = ((first + p) / g.c, (first + p) % g.c);
            let nc = (g.c - c_lo).min(count - p);
            let dst = &mut planes[p * plane..][..nc * plane];
            let base = &cs[bi * ho * wo * k..][..ho * wo * k];
            for oy in 0..ho {
                let y0 = start(oy, g.sh, g.ph);
                let (y_lo, y_hi) = clip(y0, g.kh, g.h);
                for ox in 0..wo {
                    let x0 = start(ox, g.sw, g.pw);
                    let (x_lo, x_hi) = clip(x0, g.kw, g.w);
                    let src = &base[(oy * wo + ox) * k + c_lo * kk..][..nc * kk];
                    for (ch, taps_c) in src.chunks_exact(kk).enumerate() {
                        let pl = &mut dst[ch * plane..][..plane];
                        for y in y_lo..y_hi {
                            let i = (y as isize - y0) as usize;
                            let line = &mut pl[y * g.w..][..g.w];
                            let taps = &taps_c[i * g.kw..][..g.kw];
                            for x in x_lo..x_hi {
                                line[x] += taps[(x as isize - x0) as usize];
                            }
                        }
                    }
                }
            }
            p += nc;
        }
    });
    make_dims(out, &g.input_dims())
}

/// The in-bounds input range `[lo, hi)` of a window starting at `s0` of size `k` over `len`.
fn clip(s0: isize, k: usize, len: usize) -> (usize, usize) {
    let lo = s0.max(0) as usize;
    let hi = (s0 + k as isize).clamp(0, len as isize) as usize;
    (lo, hi.max(lo))
}

/// The first maximal element of a window (row-major; NaN wins, as in PyTorch) as the flat
/// index into the plane, and its value.
fn window_max(
    plane: &[f32],
    w: usize,
    (y0, y1): (usize, usize),
    (x0, x1): (usize, usize),
) -> (usize, f32) {
    let mut best = y0 * w + x0;
    let mut m = plane[best];
    for y in y0..y1 {
        for (xx, &v) in plane[y * w + x0..y * w + x1].iter().enumerate() {
            if v > m || (v.is_nan() && !m.is_nan()) {
                (best, m) = (y * w + x0 + xx, v);
            }
        }
    }
    (best, m)
}

/// The divisor of an average window with in-bounds extent `cnt`.
fn divisor(g: &Window2d, count_pad: bool, cnt: usize) -> f32 {
    if count_pad {
        (g.kh * g.kw) as f32
    } else {
        cnt as f32
    }
}

/// Max or average pooling `[n, c, h, w]` → `[n, c, ho, wo]`.
pub(super) fn pool2d(x: &T, g: Window2d, kind: Pool2d) -> Result<T> {
    let (ho, wo) = check::pool2d("pool2d", x.shape(), None, &g)?;
    let xs = data(x);
    let mut out = pool::scratch(g.n * g.c * ho * wo);
    par::for_rows(&mut out, wo, g.kh * g.kw, |first, rows| {
        for (r, row) in rows.chunks_mut(wo).enumerate() {
            let r = first + r;
            let (oy, plane) = (r % ho, r / ho);
            let plane = &xs[plane * g.h * g.w..][..g.h * g.w];
            let ys = clip(start(oy, g.sh, g.ph), g.kh, g.h);
            for (ox, v) in row.iter_mut().enumerate() {
                let xr = clip(start(ox, g.sw, g.pw), g.kw, g.w);
                *v = match kind {
                    Pool2d::Max => window_max(plane, g.w, ys, xr).1,
                    Pool2d::Avg { count_pad } => {
                        let mut s = 0.0f32;
                        for y in ys.0..ys.1 {
                            s += plane[y * g.w + xr.0..y * g.w + xr.1].iter().sum::<f32>();
                        }
                        s / divisor(&g, count_pad, (ys.1 - ys.0) * (xr.1 - xr.0))
                    }
                };
            }
        }
    });
    make_dims(out, &g.pooled_dims())
}

/// Gradient of [`pool2d`] with respect to `x`: per `(n, c)` plane, each output's gradient
/// goes to its window's first maximum (max) or is spread over its in-bounds elements
/// (average), outputs in row-major order.
pub(super) fn pool2d_backward(x: &T, dy: &T, g: Window2d, kind: Pool2d) -> Result<T> {
    let (ho, wo) = check::pool2d("pool2d_backward", x.shape(), Some(dy.shape()), &g)?;
    let (xs, ds) = (data(x), data(dy));
    let hw = g.h * g.w;
    let mut out = pool::zeroed(g.n * g.c * hw);
    par::for_rows(&mut out, hw, g.kh * g.kw * 2, |first, planes| {
        for (p, dx) in planes.chunks_mut(hw).enumerate() {
            let p = first + p;
            let plane = &xs[p * hw..][..hw];
            let dyp = &ds[p * ho * wo..][..ho * wo];
            for oy in 0..ho {
                let ys = clip(start(oy, g.sh, g.ph), g.kh, g.h);
                for ox in 0..wo {
                    let xr = clip(start(ox, g.sw, g.pw), g.kw, g.w);
                    let d = dyp[oy * wo + ox];
                    match kind {
                        Pool2d::Max => dx[window_max(plane, g.w, ys, xr).0] += d,
                        Pool2d::Avg { count_pad } => {
                            let cnt = (ys.1 - ys.0) * (xr.1 - xr.0);
                            let d = d / divisor(&g, count_pad, cnt);
                            for y in ys.0..ys.1 {
                                dx[y * g.w + xr.0..y * g.w + xr.1]
                                    .iter_mut()
                                    .for_each(|v| *v += d);
                            }
                        }
                    }
                }
            }
        }
    });
    make_dims(out, &g.input_dims())
}
