//! `Conv2d` on NCHW images (groups = 1) as im2col + one matrix product, and the pooling
//! wrappers [`max_pool2d`] and [`avg_pool2d`].
//!
//! Forward: `cols = im2col(x)` `[n, ho·wo, c·kh·kw]`, `cols·Wᵀ` (one product over the
//! `n·ho·wo` rows) with the weight viewed as `[o, c·kh·kw]` gives `[n, ho·wo, o]`, permuted
//! to `[n, o, ho·wo]`, plus the bias.
//! Backward: `dcols = dyᵀ·W` then `dx = col2im(dcols)`; `dW = Σ dyᵀ·cols`, `db = Σ dy`.
//! Where the device limits a buffer's size, the work runs in pieces ([`ConvSplit`]).

mod split;

pub use split::ConvSplit;

use alloc::format;

use super::{Grads, Init, Module, Param};
use crate::backend::{Backend, Pool2d, Reduce, Window2d};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// A 2-D convolution `y = W ⋆ x + b` with zero padding.
#[derive(Debug, Clone)]
pub struct Conv2d<B: Backend> {
    /// `{prefix}.weight`, `[o, c, kh, kw]`.
    pub weight: Param<B>,
    /// `{prefix}.bias`, `[o]`.
    pub bias: Option<Param<B>>,
    /// Stride `(sh, sw)`.
    pub stride: (usize, usize),
    /// Zero padding `(ph, pw)` on each side.
    pub padding: (usize, usize),
}

impl<B: Backend> Conv2d<B> {
    /// A layer named `prefix` with weight `[o, c, kh, kw]` and PyTorch's default init
    /// `U(−1/√fan_in, 1/√fan_in)` (`fan_in = c·kh·kw`) for weight and bias.
    pub fn new(
        b: &B,
        init: &mut Init,
        prefix: &str,
        wdims: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
        bias: bool,
    ) -> Result<Self> {
        let fan_in = wdims[1] * wdims[2] * wdims[3];
        let bound = 1.0 / libm::sqrtf(fan_in.max(1) as f32);
        let weight = Param::new(
            format!("{prefix}.weight"),
            init.uniform(b, &wdims, -bound, bound)?,
        );
        let bias = match bias {
            true => Some(Param::new(
                format!("{prefix}.bias"),
                init.uniform(b, &[wdims[0]], -bound, bound)?,
            )),
            false => None,
        };
        Ok(Conv2d {
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// `x` `[n, c, h, w]` → `[n, o, ho, wo]`.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let bias = self.bias.as_ref().map(|p| &p.value);
        conv2d(b, x, &self.weight.value, bias, self.stride, self.padding)
    }

    /// Backward from the saved input `x` (im2col recomputed): adds `dweight` and `dbias` to
    /// `grads` and returns `dx` `[n, c, h, w]`.
    pub fn backward(
        &self,
        b: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let g = conv2d_backward(
            b,
            x,
            &self.weight.value,
            self.bias.is_some(),
            self.stride,
            self.padding,
            dy,
        )?;
        grads.add(b, &self.weight, g.dweight)?;
        if let (Some(p), Some(db)) = (&self.bias, g.dbias) {
            grads.add(b, p, db)?;
        }
        Ok(g.dx)
    }
}

/// The gradients of one convolution.
#[derive(Debug, Clone)]
pub struct ConvGrads<B: Backend> {
    /// With respect to the input.
    pub dx: Tensor<B>,
    /// With respect to the weight (its shape).
    pub dweight: Tensor<B>,
    /// With respect to the bias, when there is one.
    pub dbias: Option<Tensor<B>>,
}

/// `[o, c, kh, kw]` of a weight (an error unless it has rank 4).
fn wdims<B: Backend>(w: &Tensor<B>) -> Result<[usize; 4]> {
    match *w.dims() {
        [o, c, kh, kw] => Ok([o, c, kh, kw]),
        _ => Err(Error::bad_shape(
            "conv2d weight",
            w.shape(),
            "expected [out, in, kh, kw]",
        )),
    }
}

/// The window over `x` and the weight's `[o, c·kh·kw]` view; checks `x`'s channels.
fn geometry<B: Backend>(
    x: &Tensor<B>,
    w: &Tensor<B>,
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<(Window2d, Tensor<B>)> {
    let [o, c, kh, kw] = wdims(w)?;
    let g = Window2d::nchw("conv2d", x.dims(), (kh, kw), stride, padding)?;
    if g.c != c {
        let want = Shape::new(&[g.n, c, g.h, g.w])?;
        return Err(Error::shape("conv2d", &want, x.shape()));
    }
    Ok((g, w.reshape(&[o, c * kh * kw])?))
}

/// `conv2d(x, w) + bias` with zero padding: `x` `[n, c, h, w]`, `w` `[o, c, kh, kw]`,
/// `bias` `[o]` → `[n, o, ho, wo]`.
pub fn conv2d<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w: &Tensor<B>,
    bias: Option<&Tensor<B>>,
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor<B>> {
    conv2d_with(b, x, w, bias, stride, padding, None)
}

/// [`conv2d`] in the pieces `split` (`None`: as the backend's buffer limit needs).
pub fn conv2d_with<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w: &Tensor<B>,
    bias: Option<&Tensor<B>>,
    stride: (usize, usize),
    padding: (usize, usize),
    split: Option<ConvSplit>,
) -> Result<Tensor<B>> {
    let (g, w2) = geometry(x, w, stride, padding)?;
    let [n, np, k] = g.cols_dims();
    let o = w2.dims()[0];
    if let Some(bias) = bias {
        crate::check::same_shape("conv2d bias", &Shape::new(&[o])?, bias.shape())?;
    }
    let (ho, wo) = g.out_hw();
    let pointwise = (g.kh, g.kw, g.sh, g.sw, g.ph, g.pw) == (1, 1, 1, 1, 0, 0);
    let y = if pointwise {
        // A 1×1 convolution: `x[n]ᵀ·Wᵀ` straight from `x` viewed `[n, c, h·w]`.
        b.matmul(&x.reshape(&[n, k, np])?, &w2, true, true)?
    } else {
        // [n·P, K]·[o, K]ᵀ products: the batch folded into the rows.
        let split = plan(b, &g, o, split)?;
        split::forward_rows(b, x, &w2, g, split)?
    };
    let y = y.reshape(&[n, np, o, 1])?;
    let y = b.permute0213(&y)?;
    let y = match bias {
        Some(bias) => b.bcast_affine(&y, None, Some(bias), [n, o, np])?,
        None => y,
    };
    y.reshape(&[n, o, ho, wo])
}

/// `split`, or the plan for the backend's buffer limit.
fn plan<B: Backend>(b: &B, g: &Window2d, o: usize, split: Option<ConvSplit>) -> Result<ConvSplit> {
    match split {
        Some(s) => Ok(s),
        None => ConvSplit::for_backend(b, g, o),
    }
}

/// What both backwards start from: the window, the weight's `[o, c·kh·kw]` view and `dy`
/// `[n, o, P]` as rows `[n·P, o]` (its shape checked against the forward's output).
fn backward_rows<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w: &Tensor<B>,
    stride: (usize, usize),
    padding: (usize, usize),
    dy: &Tensor<B>,
) -> Result<(Window2d, Tensor<B>, Tensor<B>)> {
    let (g, w2) = geometry(x, w, stride, padding)?;
    let [n, np, _] = g.cols_dims();
    let o = w2.dims()[0];
    let (ho, wo) = g.out_hw();
    crate::check::same_shape("conv2d backward", &Shape::new(&[n, o, ho, wo])?, dy.shape())?;
    let dyt = b
        .permute0213(&dy.reshape(&[n, o, np, 1])?)?
        .reshape(&[n * np, o])?;
    Ok((g, w2, dyt))
}

/// The gradients of [`conv2d`] from its input `x` (im2col recomputed), weight `w` and the
/// output gradient `dy`; `dbias` only when `has_bias`.
pub fn conv2d_backward<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w: &Tensor<B>,
    has_bias: bool,
    stride: (usize, usize),
    padding: (usize, usize),
    dy: &Tensor<B>,
) -> Result<ConvGrads<B>> {
    conv2d_backward_with(b, x, w, has_bias, stride, padding, dy, None)
}

/// [`conv2d_backward`] in the pieces `split` (`None`: as the backend's buffer limit needs).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_with<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w: &Tensor<B>,
    has_bias: bool,
    stride: (usize, usize),
    padding: (usize, usize),
    dy: &Tensor<B>,
    split: Option<ConvSplit>,
) -> Result<ConvGrads<B>> {
    let (g, w2, dyt) = backward_rows(b, x, w, stride, padding, dy)?;
    let [n, np, _] = g.cols_dims();
    let o = w2.dims()[0];
    let split = plan(b, &g, o, split)?;
    let (dx, dweight) = split::backward_rows(b, Some(x), &w2, g, &dyt, split)?;
    let dweight = dweight.ok_or_else(split::no_channels)?.reshape(w.dims())?;
    let dbias = match has_bias {
        true => Some(b.reduce(Reduce::Sum, &dyt, [1, n * np, o])?.reshape(&[o])?),
        false => None,
    };
    Ok(ConvGrads { dx, dweight, dbias })
}

/// Only the input gradient of [`conv2d`] (a frozen layer): `x` gives the geometry, its
/// values are not read.
pub fn conv2d_input_grad<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w: &Tensor<B>,
    stride: (usize, usize),
    padding: (usize, usize),
    dy: &Tensor<B>,
) -> Result<Tensor<B>> {
    conv2d_input_grad_with(b, x, w, stride, padding, dy, None)
}

/// [`conv2d_input_grad`] in the pieces `split` (`None`: as the backend's buffer limit
/// needs).
pub fn conv2d_input_grad_with<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w: &Tensor<B>,
    stride: (usize, usize),
    padding: (usize, usize),
    dy: &Tensor<B>,
    split: Option<ConvSplit>,
) -> Result<Tensor<B>> {
    let (g, w2, dyt) = backward_rows(b, x, w, stride, padding, dy)?;
    let split = plan(b, &g, w2.dims()[0], split)?;
    Ok(split::backward_rows(b, None, &w2, g, &dyt, split)?.0)
}

impl<B: Backend> Module<B> for Conv2d<B> {
    crate::module_params!(weight, bias);
}

/// Max pooling of `x` `[n, c, h, w]` with window `k`, stride `s` and padding `p` (PyTorch
/// `F.max_pool2d`, `ceil_mode=False`).
pub fn max_pool2d<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
) -> Result<Tensor<B>> {
    b.pool2d(
        x,
        Window2d::nchw("max_pool2d", x.dims(), k, s, p)?,
        Pool2d::Max,
    )
}

/// Average pooling of `x` `[n, c, h, w]` (PyTorch `F.avg_pool2d`, `ceil_mode=False`;
/// `count_pad` is its `count_include_pad`).
pub fn avg_pool2d<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    count_pad: bool,
) -> Result<Tensor<B>> {
    let g = Window2d::nchw("avg_pool2d", x.dims(), k, s, p)?;
    b.pool2d(x, g, Pool2d::Avg { count_pad })
}
