//! Multi-head self-attention: separate `query`/`key`/`value` projections (DINOv2, the
//! decoder; §2.2.2, §2.6.2) and the fused `qkv` projection with RoPE (DiT; §3.3, §3.4).

use alloc::format;

use super::{Grads, Init, Linear, Module};
use crate::backend::{AttentionState, Backend, Binary};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// RoPE tables `[N, hd]` shared by all heads (§3.4).
pub type RopeTables<'a, B> = Option<(&'a Tensor<B>, &'a Tensor<B>)>;

/// What attention saves for its backward: the input, the per-head q, k, v, what
/// [`Backend::attention_fused`] kept (probabilities, or only the row log-sum-exp of a
/// fused kernel) and the merged output.
#[derive(Debug, Clone)]
pub struct AttentionSaved<B: Backend> {
    x: Tensor<B>,
    q: Tensor<B>,
    k: Tensor<B>,
    v: Tensor<B>,
    state: AttentionState<B>,
    merged: Tensor<B>,
}

/// `[B, N, C]` → `[B, H, N, hd]` (head-major channel split, §0).
fn split_heads<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    bsz: usize,
    n: usize,
    heads: usize,
) -> Result<Tensor<B>> {
    let c = x.numel() / (bsz * n).max(1);
    b.permute0213(&x.reshape(&[bsz, n, heads, c / heads])?)
}

/// `[B, H, N, hd]` → `[B, N, C]`.
fn merge_heads<B: Backend>(b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
    let d = x.dims();
    let (bsz, h, n, hd) = (d[0], d[1], d[2], d[3]);
    b.permute0213(x)?.reshape(&[bsz, n, h * hd])
}

fn dims3<B: Backend>(x: &Tensor<B>) -> Result<(usize, usize, usize)> {
    match x.dims() {
        &[a, n, c] => Ok((a, n, c)),
        _ => Err(Error::bad_shape(
            "attention",
            x.shape(),
            "input must be [B, N, C]",
        )),
    }
}

/// The shared middle: heads, optional RoPE, softmax attention, merge.
fn core_forward<B: Backend>(
    b: &B,
    q: &Tensor<B>,
    k: &Tensor<B>,
    v: &Tensor<B>,
    heads: usize,
    rope: RopeTables<'_, B>,
) -> Result<(
    Tensor<B>,
    Tensor<B>,
    Tensor<B>,
    AttentionState<B>,
    Tensor<B>,
)> {
    let (bsz, n, c) = dims3(q)?;
    if heads == 0 || c % heads != 0 {
        return Err(Error::bad_shape(
            "attention",
            q.shape(),
            format!("width {c} is not divisible by {heads} heads"),
        ));
    }
    let mut qh = split_heads(b, q, bsz, n, heads)?;
    let mut kh = split_heads(b, k, bsz, n, heads)?;
    let vh = split_heads(b, v, bsz, n, heads)?;
    if let Some((cos, sin)) = rope {
        qh = b.rope(&qh, cos, sin, false)?;
        kh = b.rope(&kh, cos, sin, false)?;
    }
    let scale = 1.0 / libm::sqrtf((c / heads) as f32);
    let (o, state) = b.attention_fused(&qh, &kh, &vh, scale)?;
    let merged = merge_heads(b, &o)?;
    Ok((qh, kh, vh, state, merged))
}

/// Backward of the middle: returns `(dq, dk, dv)` as `[B, N, C]`.
fn core_backward<B: Backend>(
    b: &B,
    s: &AttentionSaved<B>,
    dmerged: &Tensor<B>,
    heads: usize,
    rope: RopeTables<'_, B>,
) -> Result<(Tensor<B>, Tensor<B>, Tensor<B>)> {
    let (bsz, n, c) = dims3(dmerged)?;
    let dout = split_heads(b, dmerged, bsz, n, heads)?;
    let scale = 1.0 / libm::sqrtf((c / heads) as f32);
    let g = match &s.state {
        AttentionState::Probs(p) => b.attention_backward(&s.q, &s.k, &s.v, p, &dout, scale)?,
        AttentionState::Lse(lse) => {
            // The output in head layout again (a copy; the forward kept only the merge).
            let o = split_heads(b, &s.merged, bsz, n, heads)?;
            b.attention_fused_backward(&s.q, &s.k, &s.v, &o, lse, &dout, scale)?
        }
    };
    let (mut dq, mut dk) = (g.dq, g.dk);
    if let Some((cos, sin)) = rope {
        dq = b.rope(&dq, cos, sin, true)?;
        dk = b.rope(&dk, cos, sin, true)?;
    }
    Ok((
        merge_heads(b, &dq)?,
        merge_heads(b, &dk)?,
        merge_heads(b, &g.dv)?,
    ))
}

/// Attention with separate `query`, `key`, `value` linears and an output projection, HF
/// naming: `{prefix}.attention.{query,key,value}`, `{prefix}.output.dense`.
#[derive(Debug, Clone)]
pub struct SeparateAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    /// Output projection.
    pub out: Linear<B>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> SeparateAttention<B> {
    /// Width `c`, `heads` heads, PyTorch default init; the query, key, value and output
    /// linears are named `{prefix}.{names[i]}`.
    pub fn new(
        b: &B,
        init: &mut Init,
        prefix: &str,
        names: [&str; 4],
        c: usize,
        heads: usize,
    ) -> Result<Self> {
        let mut lin = |n: &str| Linear::new(b, init, &format!("{prefix}.{n}"), &[c, c], true);
        Ok(SeparateAttention {
            query: lin(names[0])?,
            key: lin(names[1])?,
            value: lin(names[2])?,
            out: lin(names[3])?,
            heads,
        })
    }

    /// `x` `[B, N, C]` → `[B, N, C]`.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<(Tensor<B>, AttentionSaved<B>)> {
        let q = self.query.forward(b, x)?;
        let k = self.key.forward(b, x)?;
        let v = self.value.forward(b, x)?;
        let (q, k, v, state, merged) = core_forward(b, &q, &k, &v, self.heads, None)?;
        let y = self.out.forward(b, &merged)?;
        Ok((
            y,
            AttentionSaved {
                x: x.clone(),
                q,
                k,
                v,
                state,
                merged,
            },
        ))
    }

    /// Backward; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        s: &AttentionSaved<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let dmerged = self.out.backward(b, &s.merged, dy, grads)?;
        let (dq, dk, dv) = core_backward(b, s, &dmerged, self.heads, None)?;
        let dx = self.query.backward(b, &s.x, &dq, grads)?;
        let dx = b.binary(Binary::Add, &dx, &self.key.backward(b, &s.x, &dk, grads)?)?;
        b.binary(Binary::Add, &dx, &self.value.backward(b, &s.x, &dv, grads)?)
    }
}

impl<B: Backend> Module<B> for SeparateAttention<B> {
    crate::module_params!(query, key, value, out);
}

/// Attention with one fused `qkv` linear (`[q | k | v]`, each head-major, §3.3) and a
/// `proj` output; optional RoPE on q and k.
#[derive(Debug, Clone)]
pub struct FusedAttention<B: Backend> {
    /// `{prefix}.qkv`, `[3C, C]`.
    pub qkv: Linear<B>,
    /// `{prefix}.proj`, `[C, C]`.
    pub proj: Linear<B>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> FusedAttention<B> {
    /// Width `c`, PyTorch default init.
    pub fn new(b: &B, init: &mut Init, prefix: &str, c: usize, heads: usize) -> Result<Self> {
        Ok(FusedAttention {
            qkv: Linear::new(b, init, &format!("{prefix}.qkv"), &[3 * c, c], true)?,
            proj: Linear::new(b, init, &format!("{prefix}.proj"), &[c, c], true)?,
            heads,
        })
    }

    /// `x` `[B, N, C]` → `[B, N, C]`, with RoPE tables when given.
    pub fn forward(
        &self,
        b: &B,
        x: &Tensor<B>,
        rope: RopeTables<'_, B>,
    ) -> Result<(Tensor<B>, AttentionSaved<B>)> {
        let (bsz, n, c) = dims3(x)?;
        let qkv = self.qkv.forward(b, x)?;
        let view = [bsz * n, 3, c];
        let q = b.slice_mid(&qkv, view, 0, 1)?.reshape(&[bsz, n, c])?;
        let k = b.slice_mid(&qkv, view, 1, 1)?.reshape(&[bsz, n, c])?;
        let v = b.slice_mid(&qkv, view, 2, 1)?.reshape(&[bsz, n, c])?;
        let (q, k, v, state, merged) = core_forward(b, &q, &k, &v, self.heads, rope)?;
        let y = self.proj.forward(b, &merged)?;
        Ok((
            y,
            AttentionSaved {
                x: x.clone(),
                q,
                k,
                v,
                state,
                merged,
            },
        ))
    }

    /// Backward; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        s: &AttentionSaved<B>,
        dy: &Tensor<B>,
        rope: RopeTables<'_, B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let (bsz, n, c) = dims3(dy)?;
        let dmerged = self.proj.backward(b, &s.merged, dy, grads)?;
        let (dq, dk, dv) = core_backward(b, s, &dmerged, self.heads, rope)?;
        let dqkv = b
            .concat_mid(&[&dq, &dk, &dv], bsz * n, c)?
            .reshape(&[bsz, n, 3 * c])?;
        self.qkv.backward(b, &s.x, &dqkv, grads)
    }
}

impl<B: Backend> Module<B> for FusedAttention<B> {
    crate::module_params!(qkv, proj);
}
