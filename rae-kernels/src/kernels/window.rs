//! 2-D window ops on NCHW data: im2col, its adjoint col2im, max/average pooling and the
//! pooling gradient. One unit per output element; the two adjoints (col2im, the pooling
//! backward) gather every contribution to their element instead of scattering, so no
//! atomics, and they add in the CPU backend's order (window rows, then columns).
//!
//! Coordinates are kept unsigned in the padded frame (`y + ph`); the window of output row
//! `oy` covers padded rows `oy·sh .. oy·sh + kh`.

use cubecl::prelude::*;
use rae_core::backend::{Pool2d, Window2d};
use rae_core::{Result, Tensor};

use crate::device::CubeBackend;
use crate::launch::{grid_1d, kernel_args, sarr, tarr, u32_arg, Variant, CUBE_1D};

/// Kernel codes of the pooling kinds (comptime arguments must be plain values).
mod code {
    pub const MAX: u32 = 0;
    pub const AVG_COUNT_PAD: u32 = 1;
    pub const AVG: u32 = 2;
}

fn kind_code(kind: Pool2d) -> u32 {
    match kind {
        Pool2d::Max => code::MAX,
        Pool2d::Avg { count_pad: true } => code::AVG_COUNT_PAD,
        Pool2d::Avg { count_pad: false } => code::AVG,
    }
}

/// First in-bounds input coordinate of the window starting at padded coordinate `s0`.
#[cube]
fn lo_in(s0: usize, p: usize) -> usize {
    let mut v = 0usize;
    if s0 > p {
        v = s0 - p;
    }
    v
}

/// One past the last in-bounds input coordinate of that window (`s0 + k > p` always holds
/// for pooling, whose padding is at most half the window).
#[cube]
fn hi_in(s0: usize, k: usize, p: usize, len: usize) -> usize {
    let mut v = s0 + k - p;
    if v > len {
        v = len;
    }
    v
}

/// The first output coordinate whose window (size `k`, stride `s`) covers padded coordinate
/// `yp`: `⌈(yp + 1 − k)/s⌉`, or 0.
#[cube]
#[allow(clippy::manual_div_ceil)] // `div_ceil` has no CubeCL expansion.
fn first_cover(yp: usize, k: usize, s: usize) -> usize {
    let mut v = 0usize;
    if yp + 1 > k {
        v = (yp + 1 - k + s - 1) / s;
    }
    v
}

/// One past the last output coordinate covering padded coordinate `yp`: `min(yp/s + 1, o)`.
#[cube]
fn end_cover(yp: usize, s: usize, o: usize) -> usize {
    let mut v = yp / s + 1;
    if v > o {
        v = o;
    }
    v
}

#[cube(launch_unchecked)]
fn im2col_kernel(
    x: &Array<f32>,
    cols: &mut Array<f32>,
    c: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    wo: u32,
    np: u32,
    total: u32,
) {
    let q = ABSOLUTE_POS;
    if q < total as usize {
        let h = h as usize;
        let w = w as usize;
        let kh = kh as usize;
        let kw = kw as usize;
        let ph = ph as usize;
        let pw = pw as usize;
        let wo = wo as usize;
        let np = np as usize;
        let k = c as usize * kh * kw;
        // q = ((bi·np + pos)·k + (ci·kh + i)·kw + j)
        let kk = q % k;
        let r = q / k;
        let pos = r % np;
        let bi = r / np;
        let j = kk % kw;
        let i = (kk / kw) % kh;
        let ci = kk / (kw * kh);
        let yp = (pos / wo) * sh as usize + i;
        let xp = (pos % wo) * sw as usize + j;
        let mut v = f32::new(0.0);
        if yp >= ph && yp < h + ph && xp >= pw && xp < w + pw {
            v = x[((bi * c as usize + ci) * h + yp - ph) * w + xp - pw];
        }
        cols[q] = v;
    }
}

kernel_args! {
    im2col_args: im2col_kernel {
        x: input f32,
        cols: output f32,
        c: scalar u32,
        h: scalar u32,
        w: scalar u32,
        kh: scalar u32,
        kw: scalar u32,
        sh: scalar u32,
        sw: scalar u32,
        ph: scalar u32,
        pw: scalar u32,
        wo: scalar u32,
        np: scalar u32,
        total: scalar u32;
    }
}

#[cube(launch_unchecked)]
fn col2im_kernel(
    cols: &Array<f32>,
    dx: &mut Array<f32>,
    c: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    ho: u32,
    wo: u32,
    total: u32,
) {
    let q = ABSOLUTE_POS;
    if q < total as usize {
        let c = c as usize;
        let h = h as usize;
        let w = w as usize;
        let kh = kh as usize;
        let kw = kw as usize;
        let sh = sh as usize;
        let sw = sw as usize;
        let ho = ho as usize;
        let wo = wo as usize;
        let k = c * kh * kw;
        let xp = q % w + pw as usize;
        let yp = (q / w) % h + ph as usize;
        let ci = (q / (w * h)) % c;
        let bi = q / (w * h * c);
        let ox0 = first_cover(xp, kw, sw);
        let ox1 = end_cover(xp, sw, wo);
        let mut acc = f32::new(0.0);
        let mut oy = first_cover(yp, kh, sh);
        let oy1 = end_cover(yp, sh, ho);
        while oy < oy1 {
            let row = (bi * ho + oy) * wo;
            let col = (ci * kh + yp - oy * sh) * kw;
            let mut ox = ox0;
            while ox < ox1 {
                acc += cols[(row + ox) * k + col + xp - ox * sw];
                ox += 1;
            }
            oy += 1;
        }
        dx[q] = acc;
    }
}

kernel_args! {
    col2im_args: col2im_kernel {
        cols: input f32,
        dx: output f32,
        c: scalar u32,
        h: scalar u32,
        w: scalar u32,
        kh: scalar u32,
        kw: scalar u32,
        sh: scalar u32,
        sw: scalar u32,
        ph: scalar u32,
        pw: scalar u32,
        ho: scalar u32,
        wo: scalar u32,
        total: scalar u32;
    }
}

/// The plane index of the first maximum of rows `y0..y1`, columns `x0..x1` of the plane
/// at `base` (row-major; the first NaN wins, as on the CPU: `v != v` is the NaN test).
#[cube]
#[allow(clippy::eq_op)]
fn window_argmax(
    x: &Array<f32>,
    base: usize,
    w: usize,
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
) -> usize {
    let mut best = y0 * w + x0;
    let mut m = x[base + best];
    let mut y = y0;
    while y < y1 {
        let mut xx = x0;
        while xx < x1 {
            let v = x[base + y * w + xx];
            if v > m || (v != v && m == m) {
                m = v;
                best = y * w + xx;
            }
            xx += 1;
        }
        y += 1;
    }
    best
}

/// The divisor of an average window of in-bounds extent `(y1 − y0)·(x1 − x0)`.
#[cube]
fn avg_divisor(
    kh: usize,
    kw: usize,
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
    #[comptime] kind: u32,
) -> f32 {
    let mut n = (y1 - y0) * (x1 - x0);
    if kind == code::AVG_COUNT_PAD {
        n = kh * kw;
    }
    f32::cast_from(n as u32)
}

#[cube(launch_unchecked)]
fn pool2d_kernel(
    x: &Array<f32>,
    y: &mut Array<f32>,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    ho: u32,
    wo: u32,
    total: u32,
    #[comptime] kind: u32,
) {
    let q = ABSOLUTE_POS;
    if q < total as usize {
        let h = h as usize;
        let w = w as usize;
        let kh = kh as usize;
        let kw = kw as usize;
        let ho = ho as usize;
        let wo = wo as usize;
        let ox = q % wo;
        let oy = (q / wo) % ho;
        let base = (q / (wo * ho)) * h * w;
        let ys = oy * sh as usize;
        let xs = ox * sw as usize;
        let y0 = lo_in(ys, ph as usize);
        let y1 = hi_in(ys, kh, ph as usize, h);
        let x0 = lo_in(xs, pw as usize);
        let x1 = hi_in(xs, kw, pw as usize, w);
        if kind == code::MAX {
            y[q] = x[base + window_argmax(x, base, w, y0, y1, x0, x1)];
        } else {
            let mut s = f32::new(0.0);
            let mut yy = y0;
            while yy < y1 {
                let mut row = f32::new(0.0);
                let mut xx = x0;
                while xx < x1 {
                    row += x[base + yy * w + xx];
                    xx += 1;
                }
                s += row;
                yy += 1;
            }
            y[q] = s / avg_divisor(kh, kw, y0, y1, x0, x1, kind);
        }
    }
}

kernel_args! {
    pool2d_args: pool2d_kernel {
        x: input f32,
        y: output f32,
        h: scalar u32,
        w: scalar u32,
        kh: scalar u32,
        kw: scalar u32,
        sh: scalar u32,
        sw: scalar u32,
        ph: scalar u32,
        pw: scalar u32,
        ho: scalar u32,
        wo: scalar u32,
        total: scalar u32;
        kind: u32,
    }
}

#[cube(launch_unchecked)]
fn pool2d_backward_kernel(
    x: &Array<f32>,
    dy: &Array<f32>,
    dx: &mut Array<f32>,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    ho: u32,
    wo: u32,
    total: u32,
    #[comptime] kind: u32,
) {
    let q = ABSOLUTE_POS;
    if q < total as usize {
        let h = h as usize;
        let w = w as usize;
        let kh = kh as usize;
        let kw = kw as usize;
        let sh = sh as usize;
        let sw = sw as usize;
        let ph = ph as usize;
        let pw = pw as usize;
        let ho = ho as usize;
        let wo = wo as usize;
        let me = q % (h * w);
        let plane = q / (h * w);
        let base = plane * h * w;
        let xp = q % w + pw;
        let yp = (q / w) % h + ph;
        let ox0 = first_cover(xp, kw, sw);
        let ox1 = end_cover(xp, sw, wo);
        let mut acc = f32::new(0.0);
        let mut oy = first_cover(yp, kh, sh);
        let oy1 = end_cover(yp, sh, ho);
        while oy < oy1 {
            let y0 = lo_in(oy * sh, ph);
            let y1 = hi_in(oy * sh, kh, ph, h);
            let mut ox = ox0;
            while ox < ox1 {
                let x0 = lo_in(ox * sw, pw);
                let x1 = hi_in(ox * sw, kw, pw, w);
                let d = dy[(plane * ho + oy) * wo + ox];
                if kind == code::MAX {
                    if window_argmax(x, base, w, y0, y1, x0, x1) == me {
                        acc += d;
                    }
                } else {
                    acc += d / avg_divisor(kh, kw, y0, y1, x0, x1, kind);
                }
                ox += 1;
            }
            oy += 1;
        }
        dx[q] = acc;
    }
}

kernel_args! {
    pool2d_backward_args: pool2d_backward_kernel {
        x: input f32,
        dy: input f32,
        dx: output f32,
        h: scalar u32,
        w: scalar u32,
        kh: scalar u32,
        kw: scalar u32,
        sh: scalar u32,
        sw: scalar u32,
        ph: scalar u32,
        pw: scalar u32,
        ho: scalar u32,
        wo: scalar u32,
        total: scalar u32;
        kind: u32,
    }
}

type T<R> = Tensor<CubeBackend<R>>;

/// The geometry's sizes as kernel arguments: `[c, h, w, kh, kw, sh, sw, ph, pw, ho, wo]`.
fn geo(g: &Window2d) -> Result<[u32; 11]> {
    let (ho, wo) = g.out_hw();
    let v = [g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, ho, wo];
    let mut out = [0u32; 11];
    for (o, &x) in out.iter_mut().zip(&v) {
        *o = u32_arg("2-D window size", x)?;
    }
    Ok(out)
}

/// `x` `[n, c, h, w]` → `[n, ho·wo, c·kh·kw]` (checked by the caller).
pub(crate) fn im2col<R: Runtime>(be: &CubeBackend<R>, x: &T<R>, g: Window2d) -> Result<T<R>> {
    let dims = g.cols_dims();
    let total = dims.iter().product::<usize>();
    let out = be.alloc(total)?;
    let [c, h, w, kh, kw, sh, sw, ph, pw, _, wo] = geo(&g)?;
    let (count, dim) = grid_1d(total);
    // SAFETY: q < total = n·np·k indexes the output; the input index is that of an
    // in-bounds (bi < n, ci < c, y < h, x < w) element of x [n, c, h, w].
    unsafe {
        im2col_args::Args {
            x: tarr(x),
            cols: sarr(&out),
            c,
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            wo,
            np: u32_arg("im2col positions", dims[1])?,
            total: u32_arg("im2col size", total)?,
        }
        .launch(be, count, dim)
    }
    be.tensor_dims(out, &dims)
}

/// `cols` `[n, ho·wo, c·kh·kw]` → `[n, c, h, w]` (checked by the caller).
pub(crate) fn col2im<R: Runtime>(be: &CubeBackend<R>, cols: &T<R>, g: Window2d) -> Result<T<R>> {
    let dims = g.input_dims();
    let total = dims.iter().product::<usize>();
    let out = be.alloc(total)?;
    let [c, h, w, kh, kw, sh, sw, ph, pw, ho, wo] = geo(&g)?;
    let (count, dim) = grid_1d(total);
    // SAFETY: q < total indexes dx; every cols index has oy < ho, ox < wo, i < kh, j < kw
    // (the covering ranges), so it lies inside cols [n, ho·wo, c·kh·kw].
    unsafe {
        col2im_args::Args {
            cols: tarr(cols),
            dx: sarr(&out),
            c,
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            ho,
            wo,
            total: u32_arg("col2im size", total)?,
        }
        .launch(be, count, dim)
    }
    be.tensor_dims(out, &dims)
}

/// Pooling `[n, c, h, w]` → `[n, c, ho, wo]` (checked by the caller).
pub(crate) fn pool2d<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    g: Window2d,
    kind: Pool2d,
) -> Result<T<R>> {
    let dims = g.pooled_dims();
    let total = dims.iter().product::<usize>();
    let out = be.alloc(total)?;
    let [_, h, w, kh, kw, sh, sw, ph, pw, ho, wo] = geo(&g)?;
    let (count, dim) = grid_1d(total);
    // SAFETY: q < total indexes y; the window rows and columns are clipped to the plane
    // (padding at most half the window, so each window is non-empty).
    unsafe {
        pool2d_args::Args {
            x: tarr(x),
            y: sarr(&out),
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            ho,
            wo,
            total: u32_arg("pool2d size", total)?,
            kind: kind_code(kind),
        }
        .launch(be, count, dim)
    }
    be.tensor_dims(out, &dims)
}

/// Gradient of [`pool2d`] with respect to `x` (checked by the caller).
pub(crate) fn pool2d_backward<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    dy: &T<R>,
    g: Window2d,
    kind: Pool2d,
) -> Result<T<R>> {
    let dims = g.input_dims();
    let total = dims.iter().product::<usize>();
    let out = be.alloc(total)?;
    let [_, h, w, kh, kw, sh, sw, ph, pw, ho, wo] = geo(&g)?;
    let (count, dim) = grid_1d(total);
    // SAFETY: q < total indexes x and dx; dy indices have oy < ho, ox < wo.
    unsafe {
        pool2d_backward_args::Args {
            x: tarr(x),
            dy: tarr(dy),
            dx: sarr(&out),
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            ho,
            wo,
            total: u32_arg("pool2d_backward size", total)?,
            kind: kind_code(kind),
        }
        .launch(be, count, dim)
    }
    be.tensor_dims(out, &dims)
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    let dim = CubeDim::new_1d(CUBE_1D);
    v.push(im2col_args::variant("", dim));
    v.push(col2im_args::variant("", dim));
    for kind in [code::MAX, code::AVG_COUNT_PAD, code::AVG] {
        v.push(pool2d_args::variant(&format!("kind={kind}"), dim, kind));
        v.push(pool2d_backward_args::variant(
            &format!("kind={kind}"),
            dim,
            kind,
        ));
    }
}
