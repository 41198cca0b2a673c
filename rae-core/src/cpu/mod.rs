//! [`CpuBackend`]: every op written plainly on host memory. It is the oracle for the GPU
//! backends and the CPU path for users without one.
//!
//! The trait impl below validates and dispatches; the bodies of the longer ops are in
//! `rowwise` (norms, softmax, RoPE, SwiGLU, adaLN) and `layout` (patches, permutes, slices),
//! their kernels in `ops` and `matmul`. With `std`, every op is timed by `profile` when
//! `RAE_CPU_PROFILE` is set.

mod attention;
mod conv;
mod layout;
mod matmul;
pub use matmul::{
    kernel as matmul_kernel, set_kernel as set_matmul_kernel, Kernel as MatmulKernel,
};
mod ops;
pub mod par;
pub mod pool;
#[cfg(feature = "std")]
pub mod profile;
mod rowwise;
pub mod simd;

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::backend::{
    composite, AdamWStep, AttentionGrads, Backend, Binary, ModulateGrads, NormGrads, NormStats,
    PatchOrder, Pool2d, Reduce, Unary, Window2d,
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
    Tensor::from_parts(Arc::new(pool::Buf::new(v)), shape)
}

fn make_dims(v: Vec<f32>, dims: &[usize]) -> Result<T> {
    Ok(make(v, Shape::new(dims)?))
}

/// A new tensor of shape `dims` filled with `value`.
fn filled(dims: &[usize], value: f32) -> Result<T> {
    let shape = Shape::new(dims)?;
    Ok(make(
        crate::limits::try_filled("tensor", shape.numel(), value)?,
        shape,
    ))
}

/// Times the rest of the enclosing op under `name` (a `&'static str`) when
/// `profile::enabled()`, with the op's floating-point operations `flops` and the number of
/// f32 values it reads plus writes `elems` (0 where not meaningful). The arguments are
/// evaluated only when profiling is on; when it is off the cost is one relaxed atomic load,
/// and without `std` the macro expands to nothing.
macro_rules! timed {
    ($name:expr, $flops:expr, $elems:expr) => {
        #[cfg(feature = "std")]
        let _span = if profile::enabled() {
            Some(profile::Span::start($name, $flops, $elems))
        } else {
            None
        };
    };
}

fn map(x: &T, f: impl Fn(f32) -> f32 + Sync) -> T {
    let xs = data(x);
    let mut out = pool::scratch(xs.len());
    par::for_rows(&mut out, 1, 4, |first, o| {
        // Zipped slices, not indices: no bounds checks, so the loop vectorises.
        simd::wide_loop! {
            for (v, &x) in o.iter_mut().zip(&xs[first..]) {
                *v = f(x);
            }
        }
    });
    make(out, x.shape().clone())
}

fn zip(a: &T, b: &T, f: impl Fn(f32, f32) -> f32 + Sync) -> T {
    let (xa, xb) = (data(a), data(b));
    let mut out = pool::scratch(xa.len());
    par::for_rows(&mut out, 1, 4, |first, o| {
        simd::wide_loop! {
            for ((v, &x), &y) in o.iter_mut().zip(&xa[first..]).zip(&xb[first..]) {
                *v = f(x, y);
            }
        }
    });
    make(out, a.shape().clone())
}

impl Backend for CpuBackend {
    type Storage = Arc<pool::Buf>;

    fn name(&self) -> String {
        String::from("cpu")
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn upload(&self, host: &[f32], dims: &[usize]) -> Result<T> {
        timed!("upload", 0, 2 * host.len());
        let shape = Shape::new(dims)?;
        check::numel("upload", &shape, host.len())?;
        Ok(make(crate::limits::try_copy("upload", host)?, shape))
    }

    fn download(&self, x: &T) -> Result<Vec<f32>> {
        timed!("download", 0, 2 * x.numel());
        Ok(data(x)[..x.numel()].to_vec())
    }

    fn full(&self, dims: &[usize], value: f32) -> Result<T> {
        timed!("full", 0, profile::numel(dims));
        filled(dims, value)
    }

    fn unary(&self, op: Unary, x: &T) -> Result<T> {
        timed!(profile::unary_name(op), 0, 2 * x.numel());
        // The common activations get loops of their own (no per-element `match`).
        Ok(match op {
            Unary::GeluErf => map(x, ops::gelu_erf),
            Unary::Silu => map(x, ops::silu),
            Unary::Relu => map(x, ops::relu),
            _ => map(x, move |v| ops::unary(op, v)),
        })
    }

    fn unary_backward(&self, op: Unary, x: &T, dy: &T) -> Result<T> {
        timed!(profile::unary_backward_name(op), 0, 3 * x.numel());
        check::same_shape("unary_backward", x.shape(), dy.shape())?;
        Ok(match op {
            Unary::GeluErf => zip(x, dy, |v, d| d * ops::gelu_erf_grad(v)),
            Unary::Silu => zip(x, dy, |v, d| d * ops::unary_grad(Unary::Silu, v)),
            // A select, not a product: `dy` where `x > 0`, so an infinite `dy` at `x ≤ 0`
            // gives 0 as PyTorch's `threshold_backward` does, not NaN.
            Unary::Relu => zip(x, dy, |v, d| if v > 0.0 { d } else { 0.0 }),
            _ => zip(x, dy, move |v, d| d * ops::unary_grad(op, v)),
        })
    }

    fn binary(&self, op: Binary, a: &T, b: &T) -> Result<T> {
        timed!(profile::binary_name(op), 0, 3 * a.numel());
        check::same_shape("binary", a.shape(), b.shape())?;
        Ok(match op {
            Binary::Add => zip(a, b, |x, y| x + y),
            Binary::Sub => zip(a, b, |x, y| x - y),
            Binary::Mul => zip(a, b, |x, y| x * y),
        })
    }

    fn scale(&self, x: &T, alpha: f32) -> Result<T> {
        timed!("scale", 0, 2 * x.numel());
        Ok(map(x, move |v| alpha * v))
    }

    fn axpy(&self, alpha: f32, x: &T, y: &T) -> Result<T> {
        timed!("axpy", 0, 3 * x.numel());
        check::same_shape("axpy", y.shape(), x.shape())?;
        Ok(zip(x, y, move |a, b| alpha * a + b))
    }

    fn bcast_affine(&self, x: &T, a: Option<&T>, b: Option<&T>, dims: [usize; 3]) -> Result<T> {
        timed!("bcast_affine", 0, 2 * x.numel());
        rowwise::bcast_affine(x, a, b, dims)
    }

    fn reduce(&self, op: Reduce, x: &T, dims: [usize; 3]) -> Result<T> {
        timed!(
            profile::reduce_name(op),
            0,
            x.numel() + dims[0].saturating_mul(dims[2])
        );
        check::view3("reduce", x.shape(), dims)?;
        make_dims(ops::reduce(op, data(x), dims), &[dims[0], dims[2]])
    }

    fn linear(&self, x: &T, w: &T, b: Option<&T>) -> Result<T> {
        let (rows, inp, out) = check::linear(x, w, b)?;
        let d = check::matmul(&Shape::new(&[rows, inp])?, w.shape(), false, true)?;
        timed!(
            profile::matmul_name(d.b_batched, false, true),
            profile::product_flops(&d),
            0
        );
        // Many rows in f32: the weight in `[k, n]` order, copied once and kept.
        let wt = (self.precision == Precision::Fp32 && rows >= matmul::weights_t::MIN_ROWS)
            .then(|| matmul::weights_t::get(w.storage(), out, inp))
            .flatten();
        let wt = wt.as_ref().map(|t| t.as_slice());
        let y = matmul::linear_in(self.precision, data(x), data(w), wt, b.map(data), &d)?;
        make_dims(y, x.shape().with_last(out).dims())
    }

    fn matmul(&self, a: &T, b: &T, ta: bool, tb: bool) -> Result<T> {
        let d = check::matmul(a.shape(), b.shape(), ta, tb)?;
        timed!(
            profile::matmul_name(d.b_batched, ta, tb),
            profile::product_flops(&d),
            0
        );
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
        timed!("layernorm", 0, 2 * x.numel());
        rowwise::layernorm(x, gamma, beta, eps)
    }

    fn layernorm_backward(
        &self,
        x: &T,
        stats: &NormStats<Self>,
        gamma: Option<&T>,
        has_beta: bool,
        dy: &T,
    ) -> Result<NormGrads<Self>> {
        timed!("layernorm_bwd", 0, 3 * x.numel());
        rowwise::layernorm_backward(x, stats, gamma, has_beta, dy)
    }

    fn rmsnorm(&self, x: &T, weight: Option<&T>, eps: f32) -> Result<(T, NormStats<Self>)> {
        timed!("rmsnorm", 0, 2 * x.numel());
        rowwise::rmsnorm(x, weight, eps)
    }

    fn rmsnorm_backward(
        &self,
        x: &T,
        stats: &NormStats<Self>,
        weight: Option<&T>,
        dy: &T,
    ) -> Result<NormGrads<Self>> {
        timed!("rmsnorm_bwd", 0, 3 * x.numel());
        rowwise::rmsnorm_backward(x, stats, weight, dy)
    }

    fn softmax(&self, x: &T) -> Result<T> {
        timed!("softmax", 0, 2 * x.numel());
        rowwise::softmax(x, 1.0)
    }

    fn softmax_backward(&self, y: &T, dy: &T) -> Result<T> {
        timed!("softmax_bwd", 0, 3 * y.numel());
        rowwise::softmax_backward(y, dy, 1.0)
    }

    fn softmax_scaled(&self, x: &T, scale: f32) -> Result<T> {
        // Folding the scale into the row pass gives the same bits only for a positive scale.
        if !(scale > 0.0 && scale.is_finite()) {
            let s = self.scale(x, scale)?;
            return self.softmax(&s);
        }
        timed!("softmax", 0, 2 * x.numel());
        rowwise::softmax(x, scale)
    }

    fn softmax_scaled_backward(&self, y: &T, dy: &T, scale: f32) -> Result<T> {
        timed!("softmax_bwd", 0, 3 * y.numel());
        rowwise::softmax_backward(y, dy, scale)
    }

    fn attention(&self, q: &T, k: &T, v: &T, scale: f32) -> Result<(T, T)> {
        check::attention(q, k, v)?;
        if self.precision != Precision::Fp32 || !(scale > 0.0 && scale.is_finite()) {
            // Rounded operands, or a scale the row kernel does not fold: the composite.
            return composite::attention(self, q, k, v, scale);
        }
        timed!("attention", profile::attention_flops(q.dims()), 0);
        attention::forward(q, k, v, scale)
    }

    fn attention_backward(
        &self,
        q: &T,
        k: &T,
        v: &T,
        p: &T,
        dout: &T,
        scale: f32,
    ) -> Result<AttentionGrads<Self>> {
        check::attention(q, k, v)?;
        check::same_shape("attention_backward", q.shape(), dout.shape())?;
        let pdims = attention::probs_dims(q.dims());
        check::same_shape("attention_backward (p)", &Shape::new(&pdims)?, p.shape())?;
        if self.precision != Precision::Fp32 || !scale.is_finite() {
            return composite::attention_backward(self, q, k, v, p, dout, scale);
        }
        timed!("attention_bwd", 2 * profile::attention_flops(q.dims()), 0);
        attention::backward(q, k, v, p, dout, scale)
    }

    fn rope(&self, x: &T, cos: &T, sin: &T, inverse: bool) -> Result<T> {
        timed!("rope", 0, 2 * x.numel());
        rowwise::rope(x, cos, sin, inverse)
    }

    fn swiglu(&self, u: &T) -> Result<T> {
        timed!("swiglu", 0, u.numel() + u.numel() / 2);
        rowwise::swiglu(u)
    }

    fn swiglu_backward(&self, u: &T, dy: &T) -> Result<T> {
        timed!("swiglu_bwd", 0, 2 * u.numel() + dy.numel());
        rowwise::swiglu_backward(u, dy)
    }

    fn modulate(&self, x: &T, shift: Option<&T>, scale: Option<&T>) -> Result<T> {
        timed!("modulate", 0, 2 * x.numel());
        rowwise::modulate(x, shift, scale)
    }

    fn modulate_backward(
        &self,
        x: &T,
        shift: Option<&T>,
        scale: Option<&T>,
        dy: &T,
    ) -> Result<ModulateGrads<Self>> {
        timed!("modulate_bwd", 0, 3 * x.numel());
        rowwise::modulate_backward(x, shift, scale, dy)
    }

    fn gate(&self, x: &T, g: &T) -> Result<T> {
        timed!("gate", 0, 2 * x.numel());
        rowwise::gate(x, g)
    }

    fn gate_backward(&self, x: &T, g: &T, dy: &T) -> Result<(T, T)> {
        timed!("gate_bwd", 0, 3 * x.numel());
        rowwise::gate_backward(x, g, dy)
    }

    fn gather_rows(&self, table: &T, idx: &[u32]) -> Result<T> {
        timed!(
            "gather_rows",
            0,
            profile::numel(&[2, idx.len(), table.shape().last()])
        );
        layout::gather_rows(table, idx)
    }

    fn scatter_add_rows(&self, dy: &T, idx: &[u32], rows: usize) -> Result<T> {
        timed!("scatter_add_rows", 0, 2 * dy.numel());
        layout::scatter_add_rows(dy, idx, rows)
    }

    fn fourier_features(&self, t: &T, w: &T) -> Result<T> {
        timed!(
            "fourier_features",
            0,
            profile::numel(&[2, t.numel(), w.numel()])
        );
        layout::fourier_features(t, w)
    }

    fn patchify(&self, x: &T, p: usize, order: PatchOrder) -> Result<T> {
        timed!("patchify", 0, 2 * x.numel());
        layout::patchify(x, p, order)
    }

    fn unpatchify(
        &self,
        x: &T,
        channels: usize,
        grid: (usize, usize),
        p: usize,
        order: PatchOrder,
    ) -> Result<T> {
        timed!("unpatchify", 0, 2 * x.numel());
        layout::unpatchify(x, channels, grid, p, order)
    }

    fn permute0213(&self, x: &T) -> Result<T> {
        timed!("permute0213", 0, 2 * x.numel());
        layout::permute0213(x)
    }

    fn im2col(&self, x: &T, g: Window2d) -> Result<T> {
        timed!("im2col", 0, 2 * profile::numel(&g.cols_dims()));
        conv::im2col(x, g)
    }

    fn col2im(&self, cols: &T, g: Window2d) -> Result<T> {
        timed!("col2im", 0, 2 * cols.numel());
        conv::col2im(cols, g)
    }

    fn pool2d(&self, x: &T, g: Window2d, kind: Pool2d) -> Result<T> {
        timed!("pool2d", 0, 2 * x.numel());
        conv::pool2d(x, g, kind)
    }

    fn pool2d_backward(&self, x: &T, dy: &T, g: Window2d, kind: Pool2d) -> Result<T> {
        timed!("pool2d_backward", 0, 3 * x.numel());
        conv::pool2d_backward(x, dy, g, kind)
    }

    fn slice_mid(&self, x: &T, dims: [usize; 3], start: usize, len: usize) -> Result<T> {
        timed!("slice_mid", 0, profile::numel(&[2, dims[0], len, dims[2]]));
        layout::slice_mid(x, dims, start, len)
    }

    fn concat_mid(&self, xs: &[&T], outer: usize, inner: usize) -> Result<T> {
        timed!(
            "concat_mid",
            0,
            2 * xs.iter().map(|x| x.numel()).sum::<usize>()
        );
        layout::concat_mid(xs, outer, inner)
    }

    fn adamw_step(
        &self,
        param: &mut T,
        grad: &T,
        m: &mut T,
        v: &mut T,
        hp: &AdamWStep,
    ) -> Result<()> {
        // Reads param, grad, m, v; writes param, m, v.
        timed!("adamw_step", 0, 7 * grad.numel());
        check::adamw(param, grad, m, v)?;
        ops::adamw(data_mut(param), data(grad), data_mut(m), data_mut(v), hp);
        Ok(())
    }

    fn ema_update(&self, ema: &mut T, param: &T, decay: f32) -> Result<()> {
        timed!("ema_update", 0, 3 * param.numel());
        check::same_shape("ema_update", ema.shape(), param.shape())?;
        ops::ema(data_mut(ema), data(param), decay);
        Ok(())
    }

    fn fill_uniform(&self, dims: &[usize], key: PhiloxKey, offset: u64) -> Result<T> {
        timed!("fill_uniform", 0, profile::numel(dims));
        let shape = Shape::new(dims)?;
        let mut out = pool::zeroed(shape.numel());
        rng::fill_uniform(&mut out, key, offset);
        Ok(make(out, shape))
    }

    fn fill_normal(&self, dims: &[usize], key: PhiloxKey, offset: u64) -> Result<T> {
        timed!("fill_normal", 0, profile::numel(dims));
        let shape = Shape::new(dims)?;
        let mut out = pool::zeroed(shape.numel());
        par::for_rows(&mut out, 1, 16, |first, o| {
            rng::fill_normal(o, key, offset.wrapping_add(first as u64));
        });
        Ok(make(out, shape))
    }
}
