//! [`CpuBackend`]: every op written plainly on host memory. It is the oracle for the GPU
//! backends and the CPU path for users without one.

mod matmul;
mod ops;
pub mod par;

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use crate::backend::{
    AdamWStep, Backend, Binary, ModulateGrads, NormGrads, NormStats, PatchOrder, Reduce, Unary,
};
use crate::check;
use crate::error::Result;
use crate::precision::Precision;
use crate::rng::{self, PhiloxKey};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The CPU backend: storage is a reference-counted host vector. Matrix products and
/// attention round their operands to the chosen [`Precision`] (§7.5), emulating what a GPU's
/// tensor cores do, so that `tf32` and `bf16` numerics can be tested on a CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuBackend {
    precision: Precision,
}

impl CpuBackend {
    /// A CPU backend in f32.
    pub const fn new() -> Self {
        CpuBackend {
            precision: Precision::Fp32,
        }
    }

    /// The same backend with matrix-product operands rounded to `precision`.
    pub const fn with_precision(precision: Precision) -> Self {
        CpuBackend { precision }
    }
}

type T = Tensor<CpuBackend>;

fn data(x: &T) -> &[f32] {
    x.storage().as_slice()
}

/// The data of a tensor this code may update in place: copied first only when the storage
/// is shared with another tensor (copy on write), so the update never shows through a clone.
fn data_mut(x: &mut T) -> &mut [f32] {
    Arc::make_mut(x.storage_mut()).as_mut_slice()
}

fn make(v: Vec<f32>, shape: Shape) -> T {
    Tensor::from_parts(Arc::new(v), shape)
}

fn make_dims(v: Vec<f32>, dims: &[usize]) -> Result<T> {
    Ok(make(v, Shape::new(dims)?))
}

fn map(x: &T, f: impl Fn(f32) -> f32 + Sync) -> T {
    let xs = data(x);
    let mut out = vec![0.0f32; xs.len()];
    par::for_rows(&mut out, 1, 4, |first, o| {
        for (i, v) in o.iter_mut().enumerate() {
            *v = f(xs[first + i]);
        }
    });
    make(out, x.shape().clone())
}

fn zip(a: &T, b: &T, f: impl Fn(f32, f32) -> f32 + Sync) -> T {
    let (xa, xb) = (data(a), data(b));
    let mut out = vec![0.0f32; xa.len()];
    par::for_rows(&mut out, 1, 4, |first, o| {
        for (i, v) in o.iter_mut().enumerate() {
            *v = f(xa[first + i], xb[first + i]);
        }
    });
    make(out, a.shape().clone())
}

impl Backend for CpuBackend {
    type Storage = Arc<Vec<f32>>;

    fn name(&self) -> String {
        String::from("cpu")
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn upload(&self, host: &[f32], dims: &[usize]) -> Result<T> {
        let shape = Shape::new(dims)?;
        check::numel("upload", &shape, host.len())?;
        Ok(make(crate::limits::try_copy("upload", host)?, shape))
    }

    fn download(&self, x: &T) -> Result<Vec<f32>> {
        Ok(data(x)[..x.numel()].to_vec())
    }

    fn full(&self, dims: &[usize], value: f32) -> Result<T> {
        let shape = Shape::new(dims)?;
        Ok(make(
            crate::limits::try_filled("tensor", shape.numel(), value)?,
            shape,
        ))
    }

    fn unary(&self, op: Unary, x: &T) -> Result<T> {
        Ok(map(x, move |v| ops::unary(op, v)))
    }

    fn unary_backward(&self, op: Unary, x: &T, dy: &T) -> Result<T> {
        check::same_shape("unary_backward", x.shape(), dy.shape())?;
        Ok(zip(x, dy, move |v, d| d * ops::unary_grad(op, v)))
    }

    fn binary(&self, op: Binary, a: &T, b: &T) -> Result<T> {
        check::same_shape("binary", a.shape(), b.shape())?;
        Ok(match op {
            Binary::Add => zip(a, b, |x, y| x + y),
            Binary::Sub => zip(a, b, |x, y| x - y),
            Binary::Mul => zip(a, b, |x, y| x * y),
        })
    }

    fn scale(&self, x: &T, alpha: f32) -> Result<T> {
        Ok(map(x, move |v| alpha * v))
    }

    fn axpy(&self, alpha: f32, x: &T, y: &T) -> Result<T> {
        check::same_shape("axpy", y.shape(), x.shape())?;
        Ok(zip(x, y, move |a, b| alpha * a + b))
    }

    fn bcast_affine(&self, x: &T, a: Option<&T>, b: Option<&T>, dims: [usize; 3]) -> Result<T> {
        check::bcast_affine(x, a, b, dims)?;
        let xs = data(x);
        let [_, mid, inner] = dims;
        let av: Vec<f32> = a.map_or_else(|| vec![1.0; mid], |a| data(a).to_vec());
        let bv: Vec<f32> = b.map_or_else(|| vec![0.0; mid], |b| data(b).to_vec());
        let row = mid * inner;
        let mut out = vec![0.0f32; xs.len()];
        par::for_rows(&mut out, row, 2, |first, o| {
            for (r, orow) in o.chunks_mut(row).enumerate() {
                let xrow = &xs[(first + r) * row..(first + r + 1) * row];
                if inner == 1 {
                    for (((y, &x), &s), &t) in orow.iter_mut().zip(xrow).zip(&av).zip(&bv) {
                        *y = x * s + t;
                    }
                } else {
                    for (m, (yc, xc)) in orow.chunks_mut(inner).zip(xrow.chunks(inner)).enumerate()
                    {
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

    fn reduce(&self, op: Reduce, x: &T, dims: [usize; 3]) -> Result<T> {
        check::view3("reduce", x.shape(), dims)?;
        make_dims(ops::reduce(op, data(x), dims), &[dims[0], dims[2]])
    }

    fn matmul(&self, a: &T, b: &T, ta: bool, tb: bool) -> Result<T> {
        let d = check::matmul(a.shape(), b.shape(), ta, tb)?;
        let out = matmul::matmul_in(self.precision, data(a), data(b), &d, ta, tb)?;
        Ok(make(out, d.out))
    }

    fn layernorm(
        &self,
        x: &T,
        gamma: Option<&T>,
        beta: Option<&T>,
        eps: f32,
    ) -> Result<(T, NormStats<Self>)> {
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

    fn layernorm_backward(
        &self,
        x: &T,
        stats: &NormStats<Self>,
        gamma: Option<&T>,
        has_beta: bool,
        dy: &T,
    ) -> Result<NormGrads<Self>> {
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

    fn rmsnorm(&self, x: &T, weight: Option<&T>, eps: f32) -> Result<(T, NormStats<Self>)> {
        let (rows, c) = check::norm("rmsnorm", x, weight, None)?;
        let (y, rstd) = ops::rmsnorm(data(x), weight.map(data), c, eps);
        Ok((
            make(y, x.shape().clone()),
            NormStats {
                mean: self.zeros(&[rows])?,
                rstd: make_dims(rstd, &[rows])?,
            },
        ))
    }

    fn rmsnorm_backward(
        &self,
        x: &T,
        stats: &NormStats<Self>,
        weight: Option<&T>,
        dy: &T,
    ) -> Result<NormGrads<Self>> {
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

    fn softmax(&self, x: &T) -> Result<T> {
        let c = x.shape().last();
        let xs = data(x);
        let mut out = vec![0.0f32; xs.len()];
        par::for_rows(&mut out, c, 8, |first, o| {
            for (r, orow) in o.chunks_mut(c).enumerate() {
                let row = &xs[(first + r) * c..(first + r + 1) * c];
                ops::softmax_row(row, orow);
            }
        });
        Ok(make(out, x.shape().clone()))
    }

    fn softmax_backward(&self, y: &T, dy: &T) -> Result<T> {
        check::same_shape("softmax_backward", y.shape(), dy.shape())?;
        let c = y.shape().last();
        let (ys, ds) = (data(y), data(dy));
        let mut out = vec![0.0f32; ys.len()];
        par::for_rows(&mut out, c, 4, |first, o| {
            for (r, orow) in o.chunks_mut(c).enumerate() {
                let base = (first + r) * c;
                let yr = &ys[base..base + c];
                let dr = &ds[base..base + c];
                let dot: f32 = yr.iter().zip(dr).map(|(a, b)| a * b).sum();
                for j in 0..c {
                    orow[j] = yr[j] * (dr[j] - dot);
                }
            }
        });
        Ok(make(out, y.shape().clone()))
    }

    fn rope(&self, x: &T, cos: &T, sin: &T, inverse: bool) -> Result<T> {
        let (_, n, hd) = check::rope(x, cos, sin)?;
        let (xs, cs, ss) = (data(x), data(cos), data(sin));
        let mut out = vec![0.0f32; xs.len()];
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

    fn swiglu(&self, u: &T) -> Result<T> {
        let (rows, h) = check::swiglu(u.shape())?;
        let us = data(u);
        let mut out = vec![0.0f32; rows * h];
        par::for_rows(&mut out, h, 8, |first, o| {
            for (r, orow) in o.chunks_mut(h).enumerate() {
                let base = (first + r) * 2 * h;
                for j in 0..h {
                    orow[j] = ops::silu(us[base + j]) * us[base + h + j];
                }
            }
        });
        Ok(make(out, u.shape().with_last(h)))
    }

    fn swiglu_backward(&self, u: &T, dy: &T) -> Result<T> {
        let (rows, h) = check::swiglu(u.shape())?;
        check::same_shape("swiglu_backward", &u.shape().with_last(h), dy.shape())?;
        let (us, ds) = (data(u), data(dy));
        let mut out = vec![0.0f32; rows * 2 * h];
        par::for_rows(&mut out, 2 * h, 8, |first, o| {
            for (r, orow) in o.chunks_mut(2 * h).enumerate() {
                let row = first + r;
                let base = row * 2 * h;
                for j in 0..h {
                    let (a, b) = (us[base + j], us[base + h + j]);
                    let d = ds[row * h + j];
                    orow[j] = d * b * ops::unary_grad(Unary::Silu, a);
                    orow[h + j] = d * ops::silu(a);
                }
            }
        });
        Ok(make(out, u.shape().clone()))
    }

    fn modulate(&self, x: &T, shift: Option<&T>, scale: Option<&T>) -> Result<T> {
        let d = check::modulate(x, shift, scale)?;
        let (xs, sh, sc) = (data(x), shift.map(data), scale.map(data));
        let mut out = vec![0.0f32; xs.len()];
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

    fn modulate_backward(
        &self,
        x: &T,
        shift: Option<&T>,
        scale: Option<&T>,
        dy: &T,
    ) -> Result<ModulateGrads<Self>> {
        let d = check::modulate(x, shift, scale)?;
        check::same_shape("modulate_backward", x.shape(), dy.shape())?;
        let (xs, ds, sc) = (data(x), data(dy), scale.map(data));
        let dx = match sc {
            Some(s) => {
                let mut out = vec![0.0f32; xs.len()];
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

    fn gate(&self, x: &T, g: &T) -> Result<T> {
        let d = check::cond("gate", x.shape(), g.shape())?;
        let (xs, gs) = (data(x), data(g));
        let mut out = vec![0.0f32; xs.len()];
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

    fn gate_backward(&self, x: &T, g: &T, dy: &T) -> Result<(T, T)> {
        let d = check::cond("gate_backward", x.shape(), g.shape())?;
        check::same_shape("gate_backward", x.shape(), dy.shape())?;
        let dx = self.gate(dy, g)?;
        let dg = ops::cond_reduce(data(dy), Some(data(x)), &d);
        Ok((dx, make(dg, g.shape().clone())))
    }

    fn gather_rows(&self, table: &T, idx: &[u32]) -> Result<T> {
        let (_, c) = check::gather(table.shape(), idx)?;
        let ts = data(table);
        let mut out = Vec::with_capacity(idx.len() * c);
        for &i in idx {
            out.extend_from_slice(&ts[i as usize * c..(i as usize + 1) * c]);
        }
        make_dims(out, &[idx.len(), c])
    }

    fn scatter_add_rows(&self, dy: &T, idx: &[u32], rows: usize) -> Result<T> {
        let c = check::scatter_rows(dy.shape(), idx, rows)?;
        let ds = data(dy);
        let mut out = vec![0.0f32; rows * c];
        for (r, &i) in idx.iter().enumerate() {
            for j in 0..c {
                out[i as usize * c + j] += ds[r * c + j];
            }
        }
        make_dims(out, &[rows, c])
    }

    fn fourier_features(&self, t: &T, w: &T) -> Result<T> {
        let (b, f) = check::fourier(t.shape(), w.shape())?;
        let (ts, ws) = (data(t), data(w));
        let mut out = vec![0.0f32; b * 2 * f];
        for i in 0..b {
            for j in 0..f {
                let phase = ops::fourier_phase(ts[i], ws[j]);
                out[i * 2 * f + j] = libm::sinf(phase);
                out[i * 2 * f + f + j] = libm::cosf(phase);
            }
        }
        make_dims(out, &[b, 2 * f])
    }

    fn patchify(&self, x: &T, p: usize, order: PatchOrder) -> Result<T> {
        let (b, c, h, w) = check::patchify(x.shape(), p)?;
        let (gh, gw) = (h / p, w / p);
        let xs = data(x);
        let mut out = vec![0.0f32; xs.len()];
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

    fn unpatchify(
        &self,
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
        let mut out = vec![0.0f32; xs.len()];
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

    fn permute0213(&self, x: &T) -> Result<T> {
        let [a, b, c, d] = check::permute0213(x.shape())?;
        let xs = data(x);
        let mut out = vec![0.0f32; xs.len()];
        for i in 0..a {
            for j in 0..b {
                for k in 0..c {
                    let src = ((i * b + j) * c + k) * d;
                    let dst = ((i * c + k) * b + j) * d;
                    out[dst..dst + d].copy_from_slice(&xs[src..src + d]);
                }
            }
        }
        make_dims(out, &[a, c, b, d])
    }

    fn slice_mid(&self, x: &T, dims: [usize; 3], start: usize, len: usize) -> Result<T> {
        check::slice_mid(x.shape(), dims, start, len)?;
        let [a, b, c] = dims;
        let xs = data(x);
        let mut out = Vec::with_capacity(a * len * c);
        for i in 0..a {
            let base = (i * b + start) * c;
            out.extend_from_slice(&xs[base..base + len * c]);
        }
        make_dims(out, &[a, len, c])
    }

    fn concat_mid(&self, xs: &[&T], outer: usize, inner: usize) -> Result<T> {
        let shapes: Vec<&Shape> = xs.iter().map(|x| x.shape()).collect();
        let mids = check::concat_mid(&shapes, outer, inner)?;
        let total: usize = mids.iter().sum();
        let mut out = Vec::with_capacity(outer * total * inner);
        for o in 0..outer {
            for (x, &m) in xs.iter().zip(&mids) {
                let base = o * m * inner;
                out.extend_from_slice(&data(x)[base..base + m * inner]);
            }
        }
        make_dims(out, &[outer, total, inner])
    }

    fn adamw_step(
        &self,
        param: &mut T,
        grad: &T,
        m: &mut T,
        v: &mut T,
        hp: &AdamWStep,
    ) -> Result<()> {
        check::adamw(param, grad, m, v)?;
        ops::adamw(data_mut(param), data(grad), data_mut(m), data_mut(v), hp);
        Ok(())
    }

    fn ema_update(&self, ema: &mut T, param: &T, decay: f32) -> Result<()> {
        check::same_shape("ema_update", ema.shape(), param.shape())?;
        for (e, &p) in data_mut(ema).iter_mut().zip(data(param)) {
            *e = *e * decay + p * (1.0 - decay);
        }
        Ok(())
    }

    fn fill_uniform(&self, dims: &[usize], key: PhiloxKey, offset: u64) -> Result<T> {
        let shape = Shape::new(dims)?;
        let mut out = vec![0.0f32; shape.numel()];
        rng::fill_uniform(&mut out, key, offset);
        Ok(make(out, shape))
    }

    fn fill_normal(&self, dims: &[usize], key: PhiloxKey, offset: u64) -> Result<T> {
        let shape = Shape::new(dims)?;
        let mut out = vec![0.0f32; shape.numel()];
        par::for_rows(&mut out, 1, 16, |first, o| {
            rng::fill_normal(o, key, offset.wrapping_add(first as u64));
        });
        Ok(make(out, shape))
    }
}
