//! The row-wise ops of [`CpuBackend`](super::CpuBackend) on tensors: broadcast affine maps,
//! normalisations, softmax, RoPE, SwiGLU and the adaLN modulation and gate, each with its
//! backward. The scalar and row kernels they run are in [`super::ops`].

use alloc::vec;
use alloc::vec::Vec;

use super::{data, make, make_dims, ops, par, T};
use crate::backend::{ModulateGrads, NormGrads, NormStats, Unary};
use crate::check;
use crate::error::Result;

/// `y[o, m, i] = x[o, m, i] · a[m] + b[m]` on the `[outer, mid, inner]` view `dims`.
pub(super) fn bcast_affine(x: &T, a: Option<&T>, b: Option<&T>, dims: [usize; 3]) -> Result<T> {
    check::bcast_affine(x, a, b, dims)?;
    let xs = data(x);
    let [_, mid, inner] = dims;
    let av: Vec<f32> = a.map_or_else(|| vec![1.0; mid], |a| data(a).to_vec());
    let bv: Vec<f32> = b.map_or_else(|| vec![0.0; mid], |b| data(b).to_vec());
    let row = mid * inner;
    let mut out = super::pool::scratch(xs.len());
    par::for_rows(&mut out, row, 2, |first, o| {
        for (r, orow) in o.chunks_mut(row).enumerate() {
            let xrow = &xs[(first + r) * row..(first + r + 1) * row];
            if inner == 1 {
                for (((y, &x), &s), &t) in orow.iter_mut().zip(xrow).zip(&av).zip(&bv) {
                    *y = x * s + t;
                }
            } else {
                for (m, (yc, xc)) in orow.chunks_mut(inner).zip(xrow.chunks(inner)).enumerate() {
                    let (s, t) = (av[m], bv[m]);
                    for (y, &x) in yc.iter_mut().zip(xc) {
                        *y = x * s + t;
                    }
                }
            }
        }
    });
    Ok(make(out, x.shape().clone()))
}

/// LayerNorm over the last axis.
pub(super) fn layernorm(
    x: &T,
    gamma: Option<&T>,
    beta: Option<&T>,
    eps: f32,
) -> Result<(T, NormStats<super::CpuBackend>)> {
    let (rows, c) = check::norm("layernorm", x, gamma, beta)?;
    let (y, mean, rstd) = ops::layernorm(data(x), gamma.map(data), beta.map(data), c, eps);
    Ok((
        make(y, x.shape().clone()),
        NormStats {
            mean: make_dims(mean, &[rows])?,
            rstd: make_dims(rstd, &[rows])?,
        },
    ))
}

/// Backward of [`layernorm`].
pub(super) fn layernorm_backward(
    x: &T,
    stats: &NormStats<super::CpuBackend>,
    gamma: Option<&T>,
    has_beta: bool,
    dy: &T,
) -> Result<NormGrads<super::CpuBackend>> {
    let (_, c) = check::norm_backward(true, x, stats, gamma, dy)?;
    let g = ops::norm_backward(
        data(x),
        Some(data(&stats.mean)),
        data(&stats.rstd),
        gamma.map(data),
        data(dy),
        c,
    );
    Ok(NormGrads {
        dx: make(g.dx, x.shape().clone()),
        dweight: if gamma.is_some() {
            Some(make_dims(g.dw, &[c])?)
        } else {
            None
        },
        dbias: if has_beta {
            Some(make_dims(g.db, &[c])?)
        } else {
            None
        },
    })
}

/// RMSNorm over the last axis; the saved mean is zeros.
pub(super) fn rmsnorm(
    x: &T,
    weight: Option<&T>,
    eps: f32,
) -> Result<(T, NormStats<super::CpuBackend>)> {
    let (rows, c) = check::norm("rmsnorm", x, weight, None)?;
    let (y, rstd) = ops::rmsnorm(data(x), weight.map(data), c, eps);
    Ok((
        make(y, x.shape().clone()),
        NormStats {
            mean: super::filled(&[rows], 0.0)?,
            rstd: make_dims(rstd, &[rows])?,
        },
    ))
}

/// Backward of [`rmsnorm`].
pub(super) fn rmsnorm_backward(
    x: &T,
    stats: &NormStats<super::CpuBackend>,
    weight: Option<&T>,
    dy: &T,
) -> Result<NormGrads<super::CpuBackend>> {
    let (_, c) = check::norm_backward(false, x, stats, weight, dy)?;
    let g = ops::norm_backward(
        data(x),
        None,
        data(&stats.rstd),
        weight.map(data),
        data(dy),
        c,
    );
    Ok(NormGrads {
        dx: make(g.dx, x.shape().clone()),
        dweight: if weight.is_some() {
            Some(make_dims(g.dw, &[c])?)
        } else {
            None
        },
        dbias: None,
    })
}

/// Softmax over the last axis.
pub(super) fn softmax(x: &T, scale: f32) -> Result<T> {
    let c = x.shape().last();
    let xs = data(x);
    let mut out = super::pool::scratch(xs.len());
    par::for_rows(&mut out, c, 8, |first, o| {
        super::simd::wide_loop! {
            for (r, orow) in o.chunks_mut(c).enumerate() {
                let row = &xs[(first + r) * c..(first + r + 1) * c];
                ops::softmax_row(row, orow, scale);
            }
        }
    });
    Ok(make(out, x.shape().clone()))
}

/// Backward of [`softmax`] from its output `y`, times `scale` (the backward of the scaled
/// softmax with respect to the unscaled scores).
pub(super) fn softmax_backward(y: &T, dy: &T, scale: f32) -> Result<T> {
    check::same_shape("softmax_backward", y.shape(), dy.shape())?;
    let c = y.shape().last();
    let (ys, ds) = (data(y), data(dy));
    let mut out = super::pool::scratch(ys.len());
    par::for_rows(&mut out, c, 4, |first, o| {
        for (r, orow) in o.chunks_mut(c).enumerate() {
            let base = (first + r) * c;
            ops::softmax_backward_row(&ys[base..base + c], &ds[base..base + c], orow, scale);
        }
    });
    Ok(make(out, y.shape().clone()))
}

/// Rotary embedding (or its inverse, the backward) on `[.., N, hd]`.
pub(super) fn rope(x: &T, cos: &T, sin: &T, inverse: bool) -> Result<T> {
    let (_, n, hd) = check::rope(x, cos, sin)?;
    let (xs, cs, ss) = (data(x), data(cos), data(sin));
    let mut out = super::pool::scratch(xs.len());
    par::for_rows(&mut out, hd, 4, |first, o| {
        for (r, orow) in o.chunks_mut(hd).enumerate() {
            let row = first + r;
            let t = row % n;
            let xr = &xs[row * hd..(row + 1) * hd];
            ops::rope_row(
                xr,
                &cs[t * hd..(t + 1) * hd],
                &ss[t * hd..(t + 1) * hd],
                orow,
                inverse,
            );
        }
    });
    Ok(make(out, x.shape().clone()))
}

/// SwiGLU `SiLU(u1) ⊙ u2`: `[.., 2H] → [.., H]`.
pub(super) fn swiglu(u: &T) -> Result<T> {
    let (rows, h) = check::swiglu(u.shape())?;
    let us = data(u);
    let mut out = super::pool::scratch(rows * h);
    par::for_rows(&mut out, h, 8, |first, o| {
        super::simd::wide_loop! {
            for (r, orow) in o.chunks_mut(h).enumerate() {
                let base = (first + r) * 2 * h;
                let (a, b) = us[base..base + 2 * h].split_at(h);
                for ((y, &a), &b) in orow.iter_mut().zip(a).zip(b) {
                    *y = ops::silu(a) * b;
                }
            }
        }
    });
    Ok(make(out, u.shape().with_last(h)))
}

/// Backward of [`swiglu`].
pub(super) fn swiglu_backward(u: &T, dy: &T) -> Result<T> {
    let (rows, h) = check::swiglu(u.shape())?;
    check::same_shape("swiglu_backward", &u.shape().with_last(h), dy.shape())?;
    let (us, ds) = (data(u), data(dy));
    let mut out = super::pool::scratch(rows * 2 * h);
    par::for_rows(&mut out, 2 * h, 8, |first, o| {
        super::simd::wide_loop! {
            for (r, orow) in o.chunks_mut(2 * h).enumerate() {
                let row = first + r;
                let (ua, ub) = us[row * 2 * h..(row + 1) * 2 * h].split_at(h);
                let (da, db) = orow.split_at_mut(h);
                let drow = &ds[row * h..(row + 1) * h];
                for ((((oa, ob), &a), &b), &d) in
                    da.iter_mut().zip(db).zip(ua).zip(ub).zip(drow)
                {
                    *oa = d * b * ops::unary_grad(Unary::Silu, a);
                    *ob = d * ops::silu(a);
                }
            }
        }
    });
    Ok(make(out, u.shape().clone()))
}

/// adaLN modulation `x ⊙ (1 + scale) + shift`.
pub(super) fn modulate(x: &T, shift: Option<&T>, scale: Option<&T>) -> Result<T> {
    let d = check::modulate(x, shift, scale)?;
    let (xs, sh, sc) = (data(x), shift.map(data), scale.map(data));
    let mut out = super::pool::scratch(xs.len());
    par::for_rows(&mut out, d.c, 2, |first, o| {
        for (r, orow) in o.chunks_mut(d.c).enumerate() {
            let row = first + r;
            let crow = ops::cond_row(row, &d);
            for j in 0..d.c {
                let s = sc.map_or(0.0, |s| s[crow * d.c + j]);
                let t = sh.map_or(0.0, |t| t[crow * d.c + j]);
                orow[j] = xs[row * d.c + j] * (1.0 + s) + t;
            }
        }
    });
    Ok(make(out, x.shape().clone()))
}

/// Backward of [`modulate`].
pub(super) fn modulate_backward(
    x: &T,
    shift: Option<&T>,
    scale: Option<&T>,
    dy: &T,
) -> Result<ModulateGrads<super::CpuBackend>> {
    let d = check::modulate(x, shift, scale)?;
    check::same_shape("modulate_backward", x.shape(), dy.shape())?;
    let (xs, ds, sc) = (data(x), data(dy), scale.map(data));
    let dx = match sc {
        Some(s) => {
            let mut out = super::pool::scratch(xs.len());
            for (row, orow) in out.chunks_mut(d.c).enumerate() {
                let crow = ops::cond_row(row, &d);
                for j in 0..d.c {
                    orow[j] = ds[row * d.c + j] * (1.0 + s[crow * d.c + j]);
                }
            }
            make(out, x.shape().clone())
        }
        None => dy.clone(),
    };
    let cshape = [d.b, d.nc, d.c];
    let dshift = match shift {
        Some(_) => Some(make_dims(ops::cond_reduce(ds, None, &d), &cshape)?),
        None => None,
    };
    let dscale = match scale {
        Some(_) => Some(make_dims(ops::cond_reduce(ds, Some(xs), &d), &cshape)?),
        None => None,
    };
    Ok(ModulateGrads { dx, dshift, dscale })
}

/// adaLN gate `x ⊙ g`, `g` broadcast over the tokens sharing a conditioning row.
pub(super) fn gate(x: &T, g: &T) -> Result<T> {
    let d = check::cond("gate", x.shape(), g.shape())?;
    let (xs, gs) = (data(x), data(g));
    let mut out = super::pool::scratch(xs.len());
    par::for_rows(&mut out, d.c, 1, |first, o| {
        for (r, orow) in o.chunks_mut(d.c).enumerate() {
            let row = first + r;
            let crow = ops::cond_row(row, &d);
            for j in 0..d.c {
                orow[j] = xs[row * d.c + j] * gs[crow * d.c + j];
            }
        }
    });
    Ok(make(out, x.shape().clone()))
}

/// Backward of [`gate`]: `(dx, dg)`.
pub(super) fn gate_backward(x: &T, g: &T, dy: &T) -> Result<(T, T)> {
    let d = check::cond("gate_backward", x.shape(), g.shape())?;
    check::same_shape("gate_backward", x.shape(), dy.shape())?;
    let dx = gate(dy, g)?;
    let dg = ops::cond_reduce(data(dy), Some(data(x)), &d);
    Ok((dx, make(dg, g.shape().clone())))
}
