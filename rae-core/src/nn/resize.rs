//! Bilinear resize of NCHW images with `align_corners = false` and no antialias (PyTorch's
//! `F.interpolate(x, size, mode="bilinear")`), as two matrix products with the sparse
//! interpolation matrices, so it runs, with its input gradient, on every backend.
//!
//! Row `i` of the `[out, in]` matrix of one axis holds PyTorch's two weights: the source
//! position `s = max(0, (in/out)·(i + ½) − ½)` (in f32), `i₀ = ⌊s⌋`, `i₁ = min(i₀ + 1, in − 1)`,
//! `λ = s − i₀`, weights `1 − λ` at `i₀` and `λ` at `i₁`. Forward, per image plane `X`
//! `[h, w]`: `A = Xᵀ·Rhᵀ` `[w, ho]`, then `Y = Aᵀ·Rwᵀ` `[ho, wo]` (both products take their
//! left operand transposed, so no copy is made). The zeros of the dense matrices add
//! exactly, so each output is PyTorch's two-by-two weighted sum up to rounding order.

use alloc::vec;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The `[out, inp]` bilinear interpolation matrix of one axis (row-major).
pub fn bilinear_matrix(inp: usize, out: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; out * inp];
    if inp == 0 || out == 0 {
        return m;
    }
    let scale = inp as f32 / out as f32;
    for i in 0..out {
        let s = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (s as usize).min(inp - 1);
        let i1 = if i0 + 1 < inp { i0 + 1 } else { i0 };
        let l1 = s - i0 as f32;
        let l0 = 1.0 - l1;
        m[i * inp + i0] += l0;
        m[i * inp + i1] += l1;
    }
    m
}

/// A bilinear resize from `[n, c, h, w]` to `[n, c, ho, wo]`: the two interpolation
/// matrices, uploaded once and reused.
#[derive(Debug, Clone)]
pub struct Bilinear<B: Backend> {
    /// Input size `(h, w)`.
    pub from: (usize, usize),
    /// Output size `(ho, wo)`.
    pub to: (usize, usize),
    rh: Tensor<B>,
    rw: Tensor<B>,
}

impl<B: Backend> Bilinear<B> {
    /// The resize from `from` to `to` (each side at least 1).
    pub fn new(b: &B, from: (usize, usize), to: (usize, usize)) -> Result<Self> {
        if from.0 == 0 || from.1 == 0 || to.0 == 0 || to.1 == 0 {
            return Err(Error::invalid(
                "bilinear resize",
                alloc::format!("sizes must be positive, got {from:?} -> {to:?}"),
            ));
        }
        let rh = b.upload(&bilinear_matrix(from.0, to.0), &[to.0, from.0])?;
        let rw = b.upload(&bilinear_matrix(from.1, to.1), &[to.1, from.1])?;
        Ok(Bilinear { from, to, rh, rw })
    }

    /// `n·c` of `x`, checking that it is `[n, c, h, w]` with this resize's input size.
    fn planes(&self, x: &Tensor<B>, hw: (usize, usize), what: &'static str) -> Result<usize> {
        match *x.dims() {
            [n, c, h, w] if (h, w) == hw => Ok(n * c),
            _ => Err(Error::bad_shape(
                what,
                x.shape(),
                alloc::format!("expected [n, c, {}, {}]", hw.0, hw.1),
            )),
        }
    }

    /// `x` `[n, c, h, w]` → `[n, c, ho, wo]`.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let p = self.planes(x, self.from, "bilinear resize input")?;
        let (h, w) = self.from;
        let (ho, wo) = self.to;
        let a = b.matmul(&x.reshape(&[p, h, w])?, &self.rh, true, true)?; // [p, w, ho]
        let y = b.matmul(&a, &self.rw, true, true)?; // [p, ho, wo]
        let d = x.dims();
        y.reshape(&[d[0], d[1], ho, wo])
    }

    /// The input gradient from `dy` `[n, c, ho, wo]`.
    pub fn backward(&self, b: &B, dy: &Tensor<B>) -> Result<Tensor<B>> {
        let p = self.planes(dy, self.to, "bilinear resize gradient")?;
        let (h, w) = self.from;
        let (ho, wo) = self.to;
        // Y = Aᵀ·Rwᵀ ⇒ dAᵀ = dY·Rw  [p, ho, w];  A = Xᵀ·Rhᵀ ⇒ dXᵀ = dA·Rh  [p, w, h].
        let dat = b.matmul(&dy.reshape(&[p, ho, wo])?, &self.rw, false, false)?;
        let dxt = b.matmul(&dat, &self.rh, true, false)?;
        let dx = b.permute0213(&dxt.reshape(&[p, w, h, 1])?)?;
        let d = dy.dims();
        dx.reshape(&[d[0], d[1], h, w])
    }
}
