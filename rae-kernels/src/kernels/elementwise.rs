//! Element-wise kernels: the [`Unary`] functions and their derivatives, [`Binary`] ops,
//! `scale`, `axpy` and constant fills (spec §0 for SiLU and both GELUs).
//!
//! Every kernel works on `Vector<f32, N>`: the host picks `N = 4` when every length is a
//! multiple of four (one 128-bit load per unit) and falls back to `N = 2` or the scalar
//! path `N = 1` otherwise.

use cubecl::prelude::*;
use rae_core::{Binary, Result, Tensor, Unary};

use crate::device::{CubeBackend, CubeStorage};
use crate::launch::{grid_1d, kernel_args, sarr, tarr, vector_width, Variant, CUBE_1D, WIDTHS};

/// Kernel codes of the unary functions (comptime arguments must be plain values).
pub(crate) mod code {
    pub const SILU: u32 = 0;
    pub const GELU_ERF: u32 = 1;
    pub const GELU_TANH: u32 = 2;
    pub const SIGMOID: u32 = 3;
    pub const SQUARE: u32 = 4;
    pub const ABS: u32 = 5;
    pub const RELU: u32 = 6;
    pub const LEAKY_RELU: u32 = 7;
    /// The last unary code (the variant lists run `SILU..=LAST_UNARY`).
    pub const LAST_UNARY: u32 = LEAKY_RELU;
    pub const ADD: u32 = 0;
    pub const SUB: u32 = 1;
    pub const MUL: u32 = 2;
}

/// The kernel code of a unary op.
pub(crate) fn unary_code(op: Unary) -> u32 {
    match op {
        Unary::Silu => code::SILU,
        Unary::GeluErf => code::GELU_ERF,
        Unary::GeluTanh => code::GELU_TANH,
        Unary::Sigmoid => code::SIGMOID,
        Unary::Square => code::SQUARE,
        Unary::Abs => code::ABS,
        Unary::Relu => code::RELU,
        Unary::LeakyRelu => code::LEAKY_RELU,
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_TANH_C: f32 = 0.044_715;
const INV_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;
const GELU_TANH_3C: f32 = 3.0 * GELU_TANH_C;
const LEAKY_SLOPE: f32 = 0.2;

/// `1 / (1 + exp(−x))`. Written `0 − x`, not `-x`: CubeCL 0.10's CUDA generator emits unary
/// minus on its `float_2`/`float_4` structs, which define no such operator (NVRTC rejects
/// it; `tests/tests/cuda_nvrtc.rs` compiles every variant). `0 − x` equals `−x` except for
/// the sign of zero, and `exp(±0) = 1`.
#[cube]
pub(crate) fn sigmoid<N: Size>(x: Vector<f32, N>) -> Vector<f32, N> {
    Vector::new(1.0f32) / (Vector::exp(Vector::new(0.0f32) - x) + 1.0f32)
}

/// `tanh` with its argument clamped to ±10 (where tanh is ±1 in f32), so no
/// implementation overflows `exp` into `inf / inf`.
#[cube]
pub(crate) fn tanh_safe<N: Size>(u: Vector<f32, N>) -> Vector<f32, N> {
    Vector::tanh(u.clamp(Vector::new(-10.0f32), Vector::new(10.0f32)))
}

/// The tanh-GELU inner argument `√(2/π)·(x + 0.044715·x³)`.
#[cube]
fn gelu_tanh_arg<N: Size>(x: Vector<f32, N>) -> Vector<f32, N> {
    (x + x * x * x * Vector::new(GELU_TANH_C)) * Vector::new(SQRT_2_OVER_PI)
}

/// `f(x)` of the unary function `op`.
#[cube]
#[allow(unused_assignments)]
pub(crate) fn unary_fwd<N: Size>(x: Vector<f32, N>, #[comptime] op: u32) -> Vector<f32, N> {
    let mut y = Vector::new(0.0f32);
    if op == code::SILU {
        y = x * sigmoid(x);
    } else if op == code::GELU_ERF {
        y = x * (Vector::erf(x * Vector::new(INV_SQRT_2)) + 1.0f32) * 0.5f32;
    } else if op == code::GELU_TANH {
        y = x * (tanh_safe(gelu_tanh_arg(x)) + 1.0f32) * 0.5f32;
    } else if op == code::SIGMOID {
        y = sigmoid(x);
    } else if op == code::SQUARE {
        y = x * x;
    } else if op == code::ABS {
        y = Vector::abs(x);
    } else if op == code::LEAKY_RELU {
        // x where x > 0, else 0.2·x: NaN takes the second branch and stays NaN.
        y = select_many(
            x.greater_than(Vector::new(0.0f32)),
            x,
            x * Vector::new(LEAKY_SLOPE),
        );
    } else {
        // max(x, 0) as a select on `x < 0`, so NaN passes through as on the CPU.
        let zero = Vector::new(0.0f32);
        y = select_many(x.less_than(zero), zero, x);
    }
    y
}

/// `f'(x)` of the unary function `op`.
#[cube]
#[allow(unused_assignments)]
pub(crate) fn unary_grad<N: Size>(x: Vector<f32, N>, #[comptime] op: u32) -> Vector<f32, N> {
    let mut d = Vector::new(0.0f32);
    if op == code::SILU {
        let s = sigmoid(x);
        d = s * (x * (Vector::new(1.0f32) - s) + 1.0f32);
    } else if op == code::GELU_ERF {
        let cdf = (Vector::erf(x * Vector::new(INV_SQRT_2)) + 1.0f32) * 0.5f32;
        let pdf = Vector::exp(x * x * Vector::new(-0.5f32)) * Vector::new(INV_SQRT_2PI);
        d = cdf + x * pdf;
    } else if op == code::GELU_TANH {
        let th = tanh_safe(gelu_tanh_arg(x));
        let du = (x * x * Vector::new(GELU_TANH_3C) + 1.0f32) * Vector::new(SQRT_2_OVER_PI);
        d = (th + 1.0f32) * 0.5f32 + x * (Vector::new(1.0f32) - th * th) * du * 0.5f32;
    } else if op == code::SIGMOID {
        let s = sigmoid(x);
        d = s * (Vector::new(1.0f32) - s);
    } else if op == code::SQUARE {
        d = x * 2.0f32;
    } else if op == code::RELU {
        let zero = Vector::new(0.0f32);
        d = select_many(x.greater_than(zero), Vector::new(1.0f32), zero);
    } else if op == code::LEAKY_RELU {
        let pos = x.greater_than(Vector::new(0.0f32));
        d = select_many(pos, Vector::new(1.0f32), Vector::new(LEAKY_SLOPE));
    } else {
        // sign(x), 0 at 0 (and NaN stays NaN through the comparisons' false branches).
        let zero = Vector::new(0.0f32);
        let pos = select_many(x.greater_than(zero), Vector::new(1.0f32), zero);
        d = select_many(x.less_than(zero), Vector::new(-1.0f32), pos);
    }
    d
}

#[cube(launch_unchecked)]
fn unary_kernel<N: Size>(
    x: &Array<Vector<f32, N>>,
    y: &mut Array<Vector<f32, N>>,
    #[comptime] op: u32,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        y[i] = unary_fwd(x[i], op);
    }
}

kernel_args! {
    unary_args: unary_kernel<N> { x: input V, y: output V; op: u32 }
}

#[cube(launch_unchecked)]
fn unary_backward_kernel<N: Size>(
    x: &Array<Vector<f32, N>>,
    dy: &Array<Vector<f32, N>>,
    dx: &mut Array<Vector<f32, N>>,
    #[comptime] op: u32,
) {
    let i = ABSOLUTE_POS;
    if i < dx.len() {
        if op == code::RELU {
            // `dy` where x > 0, else 0: a select, so an infinite `dy` at x ≤ 0 gives 0
            // (PyTorch's `threshold_backward`, and the CPU backend), not inf·0 = NaN.
            let zero = Vector::new(0.0f32);
            dx[i] = select_many(x[i].greater_than(zero), dy[i], zero);
        } else {
            dx[i] = dy[i] * unary_grad(x[i], op);
        }
    }
}

kernel_args! {
    unary_backward_args: unary_backward_kernel<N> { x: input V, dy: input V, dx: output V; op: u32 }
}

#[cube(launch_unchecked)]
fn binary_kernel<N: Size>(
    a: &Array<Vector<f32, N>>,
    b: &Array<Vector<f32, N>>,
    y: &mut Array<Vector<f32, N>>,
    #[comptime] op: u32,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        if op == code::ADD {
            y[i] = a[i] + b[i];
        } else if op == code::SUB {
            y[i] = a[i] - b[i];
        } else {
            y[i] = a[i] * b[i];
        }
    }
}

kernel_args! {
    binary_args: binary_kernel<N> { a: input V, b: input V, y: output V; op: u32 }
}

/// `y = alpha·x + beta` (scale when `beta = 0`).
#[cube(launch_unchecked)]
fn affine_kernel<N: Size>(
    x: &Array<Vector<f32, N>>,
    y: &mut Array<Vector<f32, N>>,
    alpha: f32,
    beta: f32,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        y[i] = x[i] * Vector::new(alpha) + Vector::new(beta);
    }
}

kernel_args! {
    affine_args: affine_kernel<N> { x: input V, y: output V, alpha: scalar f32, beta: scalar f32; }
}

/// `y = alpha·x + z`.
#[cube(launch_unchecked)]
fn axpy_kernel<N: Size>(
    x: &Array<Vector<f32, N>>,
    z: &Array<Vector<f32, N>>,
    y: &mut Array<Vector<f32, N>>,
    alpha: f32,
) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        y[i] = x[i] * Vector::new(alpha) + z[i];
    }
}

kernel_args! {
    axpy_args: axpy_kernel<N> { x: input V, z: input V, y: output V, alpha: scalar f32; }
}

/// `y = value` everywhere.
#[cube(launch_unchecked)]
fn fill_kernel<N: Size>(y: &mut Array<Vector<f32, N>>, value: f32) {
    let i = ABSOLUTE_POS;
    if i < y.len() {
        y[i] = Vector::new(value);
    }
}

kernel_args! {
    fill_args: fill_kernel<N> { y: output V, value: scalar f32; }
}

type T<R> = Tensor<CubeBackend<R>>;

/// `op(x)` element-wise.
pub(crate) fn unary<R: Runtime>(be: &CubeBackend<R>, op: Unary, x: &T<R>) -> Result<T<R>> {
    let n = x.numel();
    let out = be.alloc(n)?;
    if n > 0 {
        let w = vector_width(be, &[n]);
        let (count, dim) = grid_1d(n / w);
        // SAFETY: every unit checks its index against the output length; x has n floats.
        unsafe {
            unary_args::Args {
                x: tarr(x),
                y: sarr(&out),
                op: unary_code(op),
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor(out, x.shape().clone())
}

/// `dy ⊙ op'(x)`; shapes are checked by the caller.
pub(crate) fn unary_backward<R: Runtime>(
    be: &CubeBackend<R>,
    op: Unary,
    x: &T<R>,
    dy: &T<R>,
) -> Result<T<R>> {
    let n = x.numel();
    let out = be.alloc(n)?;
    if n > 0 {
        let w = vector_width(be, &[n]);
        let (count, dim) = grid_1d(n / w);
        // SAFETY: x, dy and the output hold n floats; units check the output length.
        unsafe {
            unary_backward_args::Args {
                x: tarr(x),
                dy: tarr(dy),
                dx: sarr(&out),
                op: unary_code(op),
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor(out, x.shape().clone())
}

/// `a ∘ b` on equal shapes (checked by the caller).
pub(crate) fn binary<R: Runtime>(
    be: &CubeBackend<R>,
    op: Binary,
    a: &T<R>,
    b: &T<R>,
) -> Result<T<R>> {
    let n = a.numel();
    let out = be.alloc(n)?;
    if n > 0 {
        let w = vector_width(be, &[n]);
        let (count, dim) = grid_1d(n / w);
        let op = match op {
            Binary::Add => code::ADD,
            Binary::Sub => code::SUB,
            Binary::Mul => code::MUL,
        };
        // SAFETY: a, b and the output hold n floats; units check the output length.
        unsafe {
            binary_args::Args {
                a: tarr(a),
                b: tarr(b),
                y: sarr(&out),
                op,
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor(out, a.shape().clone())
}

/// `alpha·x + beta` into a new tensor.
pub(crate) fn affine<R: Runtime>(
    be: &CubeBackend<R>,
    x: &T<R>,
    alpha: f32,
    beta: f32,
) -> Result<T<R>> {
    let n = x.numel();
    let out = be.alloc(n)?;
    if n > 0 {
        let w = vector_width(be, &[n]);
        let (count, dim) = grid_1d(n / w);
        // SAFETY: x and the output hold n floats; units check the output length.
        unsafe {
            affine_args::Args {
                x: tarr(x),
                y: sarr(&out),
                alpha,
                beta,
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor(out, x.shape().clone())
}

/// `alpha·x + z` on equal shapes (checked by the caller).
pub(crate) fn axpy<R: Runtime>(
    be: &CubeBackend<R>,
    alpha: f32,
    x: &T<R>,
    z: &T<R>,
) -> Result<T<R>> {
    let n = x.numel();
    let out = be.alloc(n)?;
    if n > 0 {
        let w = vector_width(be, &[n]);
        let (count, dim) = grid_1d(n / w);
        // SAFETY: x, z and the output hold n floats; units check the output length.
        unsafe {
            axpy_args::Args {
                x: tarr(x),
                z: tarr(z),
                y: sarr(&out),
                alpha,
            }
            .launch(be, count, dim, w)
        }
    }
    be.tensor(out, z.shape().clone())
}

/// A new buffer of `n` floats, all `value`.
pub(crate) fn fill<R: Runtime>(be: &CubeBackend<R>, n: usize, value: f32) -> Result<CubeStorage> {
    let out = be.alloc(n)?;
    if n > 0 {
        let w = vector_width(be, &[n]);
        let (count, dim) = grid_1d(n / w);
        // SAFETY: the output holds n floats; units check its length.
        unsafe {
            fill_args::Args {
                y: sarr(&out),
                value,
            }
            .launch(be, count, dim, w)
        }
    }
    Ok(out)
}

/// Every variant of this family, for [`crate::lowering`].
pub(crate) fn variants(v: &mut Vec<Variant>) {
    let dim = CubeDim::new_1d(CUBE_1D);
    for w in WIDTHS {
        for op in code::SILU..=code::LAST_UNARY {
            v.push(unary_args::variant(&format!("op={op} w={w}"), dim, w, op));
            v.push(unary_backward_args::variant(
                &format!("op={op} w={w}"),
                dim,
                w,
                op,
            ));
        }
        for op in code::ADD..=code::MUL {
            v.push(binary_args::variant(&format!("op={op} w={w}"), dim, w, op));
        }
        v.push(affine_args::variant(&format!("w={w}"), dim, w));
        v.push(axpy_args::variant(&format!("w={w}"), dim, w));
        v.push(fill_args::variant(&format!("w={w}"), dim, w));
    }
}
