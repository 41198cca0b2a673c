//! Ops written once in terms of other ops: the trait's default bodies, which a backend that
//! overrides an op for some cases (the CPU's per-head attention in f32) also falls back to.

use super::{AttentionGrads, Backend};
use crate::check;
use crate::error::Result;
use crate::tensor::Tensor;

/// `softmax(q·kᵀ·scale)·v` as two products and a scaled softmax; returns the output and
/// the probabilities (the default of [`Backend::attention`]).
pub fn attention<B: Backend>(
    b: &B,
    q: &Tensor<B>,
    k: &Tensor<B>,
    v: &Tensor<B>,
    scale: f32,
) -> Result<(Tensor<B>, Tensor<B>)> {
    check::attention(q, k, v)?;
    let s = b.matmul(q, k, false, true)?;
    let p = b.softmax_scaled(&s, scale)?;
    let o = b.matmul(&p, v, false, false)?;
    Ok((o, p))
}

/// The backward of [`attention`] from the probabilities `p`: four products and the scaled
/// softmax backward (the default of [`Backend::attention_backward`]).
pub fn attention_backward<B: Backend>(
    b: &B,
    q: &Tensor<B>,
    k: &Tensor<B>,
    v: &Tensor<B>,
    p: &Tensor<B>,
    dout: &Tensor<B>,
    scale: f32,
) -> Result<AttentionGrads<B>> {
    check::attention(q, k, v)?;
    check::same_shape("attention_backward", q.shape(), dout.shape())?;
    let dv = b.matmul(p, dout, true, false)?;
    let dp = b.matmul(dout, v, false, true)?;
    let ds = b.softmax_scaled_backward(p, &dp, scale)?;
    let dq = b.matmul(&ds, k, false, false)?;
    let dk = b.matmul(&ds, q, true, false)?;
    Ok(AttentionGrads { dq, dk, dv })
}
