//! Convolutions in pieces, for devices that bind buffers of limited size
//! ([`Backend::max_buffer_floats`]): the im2col scratch of VGG-16's first layers on one
//! 256² image is 144 MiB, over a 128 MiB WGPU binding limit.
//!
//! A [`ConvSplit`] runs the images in chunks and, when one image's scratch is still too
//! large, the input channels in groups: `cols·Wᵀ` is the sum over channel groups of each
//! group's columns times its block of the weight (the column index `(ci·kh + i)·kw + j`
//! keeps a group's columns contiguous), and the input gradient of a group is `col2im` of
//! the product with that block alone. Unsplit, the ops are exactly those of one pass.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::{Backend, Binary, Window2d};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// How a convolution splits its work: images per chunk, input channels per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSplit {
    /// Images per chunk (≥ 1).
    pub images: usize,
    /// Input channels per group (≥ 1).
    pub channels: usize,
}

impl ConvSplit {
    /// No split: the whole batch and every channel in one pass.
    pub fn whole(g: &Window2d) -> Self {
        ConvSplit {
            images: g.n,
            channels: g.c,
        }
    }

    /// The largest pieces whose im2col scratch, its gradient and the output rows
    /// (`o` channels) each fit `budget` floats; [`ConvSplit::whole`] without a budget.
    /// An error when even one channel of one image does not fit.
    pub fn plan(g: &Window2d, o: usize, budget: Option<usize>) -> Result<Self> {
        let whole = Self::whole(g);
        let Some(budget) = budget else {
            return Ok(whole);
        };
        let [n, np, k] = g.cols_dims();
        let per_image = np.saturating_mul(k.max(o));
        if n.saturating_mul(per_image) <= budget {
            return Ok(whole);
        }
        if per_image <= budget {
            return Ok(ConvSplit {
                images: budget / per_image,
                channels: g.c,
            });
        }
        let per_channel = np.saturating_mul(g.kh * g.kw);
        if per_channel > budget || np.saturating_mul(o) > budget {
            return Err(Error::invalid(
                "conv2d",
                format!(
                    "one {}×{} image needs buffers of {} floats even one input channel at a time, more than this device binds ({budget}); use smaller images",
                    g.h,
                    g.w,
                    per_channel.max(np.saturating_mul(o))
                ),
            ));
        }
        Ok(ConvSplit {
            images: 1,
            channels: budget / per_channel,
        })
    }

    /// The plan for `b`'s buffer limit.
    pub fn for_backend<B: Backend>(b: &B, g: &Window2d, o: usize) -> Result<Self> {
        Self::plan(g, o, b.max_buffer_floats())
    }

    fn check(self) -> Result<Self> {
        match self.images > 0 && self.channels > 0 {
            true => Ok(self),
            false => Err(Error::invalid(
                "conv2d split",
                "images and channels must be ≥ 1",
            )),
        }
    }
}

/// `[start, start + len)` pieces of `0..total` of at most `step`.
fn pieces(total: usize, step: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..total)
        .step_by(step)
        .map(move |s| (s, step.min(total - s)))
}

/// The axis of `x` `[n, c, h, w]` a piece is cut along.
#[derive(Clone, Copy)]
enum Axis {
    Images,
    Channels,
}

/// The piece `[start, start + len)` of `x` along `axis` (`x` itself when that is all of it)
/// and its window.
fn piece<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    g: Window2d,
    axis: Axis,
    start: usize,
    len: usize,
) -> Result<(Tensor<B>, Window2d)> {
    let (gp, whole, view) = match axis {
        Axis::Images => (Window2d { n: len, ..g }, g.n, [1, g.n, g.c * g.h * g.w]),
        Axis::Channels => (Window2d { c: len, ..g }, g.c, [g.n, g.c, g.h * g.w]),
    };
    if len == whole {
        return Ok((x.clone(), gp));
    }
    let xp = b.slice_mid(x, view, start, len)?;
    Ok((xp.reshape(&gp.input_dims())?, gp))
}

/// The block of `w2` `[o, c·kh·kw]` for channels `[c0, c0 + len)`: `[o, len·kh·kw]`.
fn weight_block<B: Backend>(
    b: &B,
    w2: &Tensor<B>,
    g: Window2d,
    c0: usize,
    len: usize,
) -> Result<Tensor<B>> {
    if len == g.c {
        return Ok(w2.clone());
    }
    let (o, kk) = (w2.dims()[0], g.kh * g.kw);
    b.slice_mid(w2, [o, g.c, kk], c0, len)?
        .reshape(&[o, len * kk])
}

/// Flat concatenation of pieces (one piece is returned as it is).
fn join<B: Backend>(
    b: &B,
    mut parts: Vec<Tensor<B>>,
    outer: usize,
    inner: usize,
) -> Result<Tensor<B>> {
    if parts.len() == 1 {
        if let Some(one) = parts.pop() {
            return Ok(one);
        }
    }
    let refs: Vec<&Tensor<B>> = parts.iter().collect();
    b.concat_mid(&refs, outer, inner)
}

/// The error of a window with no input channels (which [`Window2d::check`] rejects first).
pub(super) fn no_channels() -> Error {
    Error::invalid("conv2d", "the input has no channels")
}

/// `a + p`, or `p` for the first piece.
fn accumulate<B: Backend>(b: &B, acc: Option<Tensor<B>>, p: Tensor<B>) -> Result<Tensor<B>> {
    match acc {
        None => Ok(p),
        Some(a) => b.binary(Binary::Add, &a, &p),
    }
}

/// The product rows `im2col(x)·W2ᵀ` `[n·P, o]` of the window `g` over `x`, in `split`'s
/// pieces.
pub(super) fn forward_rows<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    w2: &Tensor<B>,
    g: Window2d,
    split: ConvSplit,
) -> Result<Tensor<B>> {
    let split = split.check()?;
    let np = g.cols_dims()[1];
    let o = w2.dims()[0];
    let mut rows = Vec::new();
    for (i0, m) in pieces(g.n, split.images) {
        let (xi, gi) = piece(b, x, g, Axis::Images, i0, m)?;
        let mut acc = None;
        for (c0, len) in pieces(g.c, split.channels) {
            let (xc, gc) = piece(b, &xi, gi, Axis::Channels, c0, len)?;
            let k = gc.cols_dims()[2];
            let cols = b.im2col(&xc, gc)?.reshape(&[m * np, k])?;
            let part = b.matmul(&cols, &weight_block(b, w2, g, c0, len)?, false, true)?;
            acc = Some(accumulate(b, acc, part)?);
        }
        rows.push(acc.ok_or_else(no_channels)?);
    }
    join(b, rows, 1, 1)?.reshape(&[g.n * np, o])
}

/// From the output gradient rows `dyt` `[n·P, o]`: the input gradient `[n, c, h, w]` and,
/// when `x` is given, the weight gradient `[o, c·kh·kw]`, in `split`'s pieces.
pub(super) fn backward_rows<B: Backend>(
    b: &B,
    x: Option<&Tensor<B>>,
    w2: &Tensor<B>,
    g: Window2d,
    dyt: &Tensor<B>,
    split: ConvSplit,
) -> Result<(Tensor<B>, Option<Tensor<B>>)> {
    let split = split.check()?;
    let [n, np, _] = g.cols_dims();
    let o = w2.dims()[0];
    let (mut dxs, mut dw) = (Vec::new(), None);
    for (i0, m) in pieces(n, split.images) {
        let dyi = match m == n {
            true => dyt.clone(),
            false => b
                .slice_mid(dyt, [1, n * np, o], i0 * np, m * np)?
                .reshape(&[m * np, o])?,
        };
        let xi = x.map(|x| piece(b, x, g, Axis::Images, i0, m)).transpose()?;
        let gi = Window2d { n: m, ..g };
        let (mut dx_groups, mut dw_groups) = (Vec::new(), Vec::new());
        for (c0, len) in pieces(g.c, split.channels) {
            let wb = weight_block(b, w2, g, c0, len)?;
            let gc = Window2d { c: len, ..gi };
            let dcols = b
                .matmul(&dyi, &wb, false, false)?
                .reshape(&gc.cols_dims())?;
            dx_groups.push(b.col2im(&dcols, gc)?);
            drop(dcols);
            if let Some((xi, _)) = &xi {
                let (xc, gc) = piece(b, xi, gi, Axis::Channels, c0, len)?;
                let k = gc.cols_dims()[2];
                let cols = b.im2col(&xc, gc)?.reshape(&[m * np, k])?;
                dw_groups.push(b.matmul(&dyi, &cols, true, false)?);
            }
        }
        dxs.push(join(b, dx_groups, m, g.h * g.w)?);
        if xi.is_some() {
            dw = Some(accumulate(b, dw, join(b, dw_groups, o, 1)?)?);
        }
    }
    let dx = join(b, dxs, 1, 1)?.reshape(&g.input_dims())?;
    Ok((dx, dw))
}
