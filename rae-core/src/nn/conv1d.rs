//! 1-D convolution over sequences `[n, c, l]` with circular padding `k/2` on each side
//! (PyTorch's `nn.Conv1d(c, o, k, padding=k//2, padding_mode="circular")`, odd `k`), as
//! the discriminator heads use it (§2.7.4).
//!
//! The padded sequence is the last `p` positions, the sequence, then the first `p`
//! ([`Backend::slice_mid`] and [`Backend::concat_mid`]); the convolution is then
//! [`conv2d`] over a `[n, c, 1, l + 2p]` image with a `1 × k` window. The backward folds
//! the padding's gradient back onto the positions it copied.

use super::conv::{conv2d, conv2d_backward, ConvGrads};
use crate::backend::{Backend, Binary};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `(n, c, l, o, k)` of a circular convolution, checked: `x` `[n, c, l]`, `w` `[o, c, k]`
/// with `k` odd and `k/2 ≤ l`.
fn dims1d<B: Backend>(x: &Tensor<B>, w: &Tensor<B>) -> Result<(usize, usize, usize, usize, usize)> {
    let (n, c, l) = match *x.dims() {
        [n, c, l] => (n, c, l),
        _ => return Err(Error::bad_shape("conv1d", x.shape(), "expected [n, c, l]")),
    };
    let (o, k) = match *w.dims() {
        [o, wc, k] if wc == c && k % 2 == 1 => (o, k),
        _ => {
            return Err(Error::bad_shape(
                "conv1d weight",
                w.shape(),
                alloc::format!("expected [out, {c}, k] with k odd"),
            ))
        }
    };
    if k / 2 > l {
        return Err(Error::invalid(
            "conv1d",
            alloc::format!("circular padding {} exceeds the length {l}", k / 2),
        ));
    }
    Ok((n, c, l, o, k))
}

/// `x` `[n, c, l]` circularly padded by `p` on each side: `[n, c, 1, l + 2p]`.
fn pad_circular<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    n: usize,
    c: usize,
    l: usize,
    p: usize,
) -> Result<Tensor<B>> {
    if p == 0 {
        return x.reshape(&[n, c, 1, l]);
    }
    let rows = [n * c, l, 1];
    let tail = b.slice_mid(x, rows, l - p, p)?;
    let head = b.slice_mid(x, rows, 0, p)?;
    b.concat_mid(&[&tail, x, &head], n * c, 1)?
        .reshape(&[n, c, 1, l + 2 * p])
}

/// The convolution of `x` `[n, c, l]` with `w` `[o, c, k]` (circular padding `k/2`) plus
/// `bias` `[o]`: `[n, o, l]`.
pub fn conv1d_circular<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w: &Tensor<B>,
    bias: Option<&Tensor<B>>,
) -> Result<Tensor<B>> {
    let (n, c, l, o, k) = dims1d(x, w)?;
    let xp = pad_circular(b, x, n, c, l, k / 2)?;
    let w4 = w.reshape(&[o, c, 1, k])?;
    conv2d(b, &xp, &w4, bias, (1, 1), (0, 0))?.reshape(&[n, o, l])
}

/// The gradients of [`conv1d_circular`] with respect to `x`, `w` (and the bias when
/// `has_bias`) from the output gradient `dy` `[n, o, l]`.
pub fn conv1d_circular_backward<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w: &Tensor<B>,
    has_bias: bool,
    dy: &Tensor<B>,
) -> Result<ConvGrads<B>> {
    let (n, c, l, o, k) = dims1d(x, w)?;
    let p = k / 2;
    let xp = pad_circular(b, x, n, c, l, p)?;
    let w4 = w.reshape(&[o, c, 1, k])?;
    let dy4 = dy.reshape(&[n, o, 1, l])?;
    let g = conv2d_backward(b, &xp, &w4, has_bias, (1, 1), (0, 0), &dy4)?;
    let dweight = g.dweight.reshape(w.dims())?;
    let dx = if p == 0 {
        g.dx.reshape(&[n, c, l])?
    } else {
        // d(padded) [n·c, l + 2p]: the middle is dx; the left pad copied x[l−p..l], the
        // right pad x[0..p].
        let rows = [n * c, l + 2 * p, 1];
        let mid = b.slice_mid(&g.dx, rows, p, l)?;
        let left = b.slice_mid(&g.dx, rows, 0, p)?;
        let right = b.slice_mid(&g.dx, rows, l + p, p)?;
        let zeros = (l > p).then(|| b.zeros(&[n * c, l - p])).transpose()?;
        let fold = |parts: &[&Tensor<B>]| b.concat_mid(parts, n * c, 1);
        // `right` lands on positions 0..p and `left` on l−p..l (they overlap when 2p > l).
        let from_right = match &zeros {
            Some(z) => fold(&[&right, z])?,
            None => right,
        };
        let from_left = match &zeros {
            Some(z) => fold(&[z, &left])?,
            None => left,
        };
        let dx = b.binary(Binary::Add, &mid, &from_right)?;
        b.binary(Binary::Add, &dx, &from_left)?
            .reshape(&[n, c, l])?
    };
    Ok(ConvGrads {
        dx,
        dweight,
        dbias: g.dbias,
    })
}
