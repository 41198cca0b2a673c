//! Fixed tables and resampling matrices: the 2-D sin-cos position table (§2.6.3), the RoPE
//! tables (§3.4), and the bicubic resize matrices (§2.1.1 plain, §2.2.3 antialiased), applied
//! separably through matrix products on any backend.

use alloc::vec;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The 2-D sin-cos table `[g², D]` of §2.6.3: channels `[0, D/2)` encode the column,
/// `[D/2, D)` the row; in each half the first `D/4` channels are `sin(pos·ω_k)` and the next
/// `D/4` are `cos(pos·ω_k)`, `ω_k = 10000^(−k/(D/4))`. Computed in f64, rounded to f32.
pub fn sincos_2d(d: usize, g: usize) -> Result<Vec<f32>> {
    if !d.is_multiple_of(4) || d == 0 {
        return Err(Error::invalid(
            "sin-cos position table",
            alloc::format!("width {d} is not a positive multiple of 4"),
        ));
    }
    let k = d / 4;
    let mut out = vec![0.0f32; g * g * d];
    for i in 0..g {
        for j in 0..g {
            let row = &mut out[(i * g + j) * d..(i * g + j + 1) * d];
            for (half, pos) in [(0usize, j as f64), (1, i as f64)] {
                for kk in 0..k {
                    let omega = 1.0 / libm::pow(10000.0, kk as f64 / k as f64);
                    let a = pos * omega;
                    row[half * 2 * k + kk] = libm::sin(a) as f32;
                    row[half * 2 * k + k + kk] = libm::cos(a) as f32;
                }
            }
        }
    }
    Ok(out)
}

/// RoPE tables `(cos, sin)`, each `[G², hd]`, of §3.4: half dim `m = hd/2`, frequencies
/// `θ_k = 10000^(−2k/m)` for `k < m/2`, each used on two adjacent channels; the first half of
/// the head dimension rotates with the row index, the second with the column index.
pub fn rope_tables(hd: usize, g: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    if !hd.is_multiple_of(4) || hd == 0 {
        return Err(Error::invalid(
            "RoPE table",
            alloc::format!("head dim {hd} is not a positive multiple of 4"),
        ));
    }
    let m = hd / 2;
    let mut cos = vec![0.0f32; g * g * hd];
    let mut sin = vec![0.0f32; g * g * hd];
    for i in 0..g {
        for j in 0..g {
            let n = i * g + j;
            for c in 0..hd {
                let (pos, k) = if c < m { (i, c / 2) } else { (j, (c - m) / 2) };
                // The reference computes these in f32: θ = 1/10000^(2k/m), angle = pos·θ.
                let theta = 1.0 / libm::powf(10000.0, (2 * k) as f32 / m as f32);
                let a = pos as f32 * theta;
                cos[n * hd + c] = libm::cosf(a);
                sin[n * hd + c] = libm::sinf(a);
            }
        }
    }
    Ok((cos, sin))
}

fn cubic1(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

fn cubic2(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// The `[out, in]` matrix of PyTorch's non-antialiased bicubic resize along one axis with
/// `align_corners = false` and Keys `a = −0.75` (§2.1.1), edge taps clamped.
pub fn bicubic_matrix(inp: usize, out: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; out * inp];
    if inp == 0 {
        return m;
    }
    let scale = inp as f32 / out as f32;
    let a = -0.75f32;
    for i in 0..out {
        let real = scale * (i as f32 + 0.5) - 0.5;
        let i0 = libm::floorf(real);
        let t = real - i0;
        let w = [
            cubic2(t + 1.0, a),
            cubic1(t, a),
            cubic1(1.0 - t, a),
            cubic2(2.0 - t, a),
        ];
        for (tap, wt) in w.iter().enumerate() {
            let idx = (i0 as i64 - 1 + tap as i64).clamp(0, inp as i64 - 1) as usize;
            m[i * inp + idx] += wt;
        }
    }
    m
}

fn keys_aa(x: f32) -> f32 {
    let a = -0.5f32;
    let x = libm::fabsf(x);
    if x < 1.0 {
        cubic1(x, a)
    } else if x < 2.0 {
        cubic2(x, a)
    } else {
        0.0
    }
}

/// The `[out, in]` matrix of PyTorch's antialiased bicubic resize (Keys `a = −0.5`, support
/// stretched by the downscale factor, weights normalised; §2.2.3), computed in f32.
pub fn bicubic_aa_matrix(inp: usize, out: usize) -> Vec<f32> {
    bicubic_aa_matrix_with_scale(inp, out, inp as f32 / out as f32)
}

/// [`bicubic_aa_matrix`] with an explicit kernel scale (PyTorch uses `1/scale_factor` when
/// the resize is given by a scale factor instead of a size).
pub fn bicubic_aa_matrix_with_scale(inp: usize, out: usize, scale: f32) -> Vec<f32> {
    let mut m = vec![0.0f32; out * inp];
    let (support, invscale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    for i in 0..out {
        let center = scale * (i as f32 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(inp as i64).max(0) as usize;
        let mut w: Vec<f32> = (xmin..xmax)
            .map(|j| keys_aa((j as f32 - center + 0.5) * invscale))
            .collect();
        let total: f32 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        for (j, wt) in w.into_iter().enumerate() {
            m[i * inp + xmin + j] = wt;
        }
    }
    m
}

/// Applies per-axis resize matrices `rh` `[H', H]` and `rw` `[W', W]` to `x` `[B, C, H, W]`:
/// first along the width, then along the height (the reference's order).
pub fn resize_2d<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    rh: &Tensor<B>,
    rw: &Tensor<B>,
) -> Result<Tensor<B>> {
    let d = x.dims();
    if d.len() != 4 {
        return Err(Error::bad_shape("resize", x.shape(), "needs [B, C, H, W]"));
    }
    let (bs, c, h, w) = (d[0], d[1], d[2], d[3]);
    let (h2, w2) = (rh.dims()[0], rw.dims()[0]);
    // Along W: [B·C·H, W] · rwᵀ → [B·C·H, W'].
    let xw = b.matmul(&x.reshape(&[bs * c * h, w])?, rw, false, true)?;
    // Along H: move H last, multiply, move it back.
    let t = b.permute0213(&xw.reshape(&[bs * c, h, w2, 1])?)?;
    let th = b.matmul(&t.reshape(&[bs * c * w2, h])?, rh, false, true)?;
    b.permute0213(&th.reshape(&[bs * c, w2, h2, 1])?)?
        .reshape(&[bs, c, h2, w2])
}

/// Resizes `x` `[B, C, H, W]` to `(oh, ow)` with the plain bicubic of §2.1.1 (no-op when the
/// size already matches).
pub fn resize_bicubic<B: Backend>(b: &B, x: &Tensor<B>, oh: usize, ow: usize) -> Result<Tensor<B>> {
    let d = x.dims();
    if d.len() != 4 {
        return Err(Error::bad_shape("resize", x.shape(), "needs [B, C, H, W]"));
    }
    if d[2] == oh && d[3] == ow {
        return Ok(x.clone());
    }
    let rh = b.upload(&bicubic_matrix(d[2], oh), &[oh, d[2]])?;
    let rw = b.upload(&bicubic_matrix(d[3], ow), &[ow, d[3]])?;
    resize_2d(b, x, &rh, &rw)
}

/// `r` with `r² = n`, if `n` is a perfect square (the side of a square position grid).
pub fn integer_sqrt(n: usize) -> Option<usize> {
    let r = libm::sqrt(n as f64) as usize;
    (r.saturating_sub(1)..=r + 1).find(|&x| x * x == n)
}

/// Resizes the rows of a square position table, `grid` `[g·g, D]` in row-major grid order,
/// to a `gh × gw` grid with the host resize matrices `mh` `[gh, g]` and `mw` `[gw, g]`
/// (§2.1.1, §2.2.3): `[gh·gw, D]`.
#[allow(clippy::too_many_arguments)]
pub fn resize_grid_rows<B: Backend>(
    b: &B,
    grid: &Tensor<B>,
    g: usize,
    d: usize,
    mh: &[f32],
    mw: &[f32],
    gh: usize,
    gw: usize,
) -> Result<Tensor<B>> {
    // [g·g, D] → channels first [D, g, g] → resize → [D, gh, gw] → [gh·gw, D].
    let chw = b
        .permute0213(&grid.reshape(&[1, g * g, d, 1])?)?
        .reshape(&[1, d, g, g])?;
    let rh = b.upload(mh, &[gh, g])?;
    let rw = b.upload(mw, &[gw, g])?;
    let resized = resize_2d(b, &chw, &rh, &rw)?;
    b.permute0213(&resized.reshape(&[1, d, gh * gw, 1])?)?
        .reshape(&[gh * gw, d])
}

/// [`resize_grid_rows`] for a table with a CLS row first, `[1 + g·g, D]`: the CLS row is
/// kept as is; `[1 + gh·gw, D]`.
#[allow(clippy::too_many_arguments)]
pub fn resize_cls_grid_rows<B: Backend>(
    b: &B,
    table: &Tensor<B>,
    g: usize,
    d: usize,
    mh: &[f32],
    mw: &[f32],
    gh: usize,
    gw: usize,
) -> Result<Tensor<B>> {
    let total = 1 + g * g;
    let t = table.reshape(&[1, total, d])?;
    let cls = b.slice_mid(&t, [1, total, d], 0, 1)?;
    let grid = b.slice_mid(&t, [1, total, d], 1, g * g)?;
    let tokens = resize_grid_rows(b, &grid, g, d, mh, mw, gh, gw)?;
    b.concat_mid(&[&cls, &tokens.reshape(&[1, gh * gw, d])?], 1, d)?
        .reshape(&[1 + gh * gw, d])
}
