//! The LightningDDT block (§3.5) and the DiT-DH final layer (§3.6).
//!
//! Conditioning `cond` is `[B, Nc, C]`: one token per sample in the backbone, one per token
//! in the head. `adaLN_modulation.1` maps `SiLU(cond)` to six chunks
//! `(shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp)` (§3.3, §10 item 7).

use alloc::format;
use alloc::vec::Vec;

use super::attention::RopeTables;
use super::{AttentionSaved, FusedAttention, Grads, Init, Linear, Module, RmsNorm};
use super::{SwiGlu, SwiGluSaved};
use crate::backend::{Backend, Binary, NormStats, Unary};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Splits `m` `[B, Nc, k·C]` into `k` chunks `[B, Nc, C]` on the last axis (§0 `chunk`).
fn chunks<B: Backend>(b: &B, m: &Tensor<B>, k: usize) -> Result<Vec<Tensor<B>>> {
    let d = m.dims();
    if d.len() != 3 || !d[2].is_multiple_of(k) {
        return Err(Error::bad_shape(
            "adaLN chunk",
            m.shape(),
            format!("cannot split into {k} chunks"),
        ));
    }
    let (bs, nc, c) = (d[0], d[1], d[2] / k);
    (0..k)
        .map(|i| b.slice_mid(m, [bs * nc, k, c], i, 1)?.reshape(&[bs, nc, c]))
        .collect()
}

/// Inverse of [`chunks`].
fn unchunk<B: Backend>(b: &B, parts: &[&Tensor<B>]) -> Result<Tensor<B>> {
    let d = parts[0].dims();
    let (bs, nc, c) = (d[0], d[1], d[2]);
    b.concat_mid(parts, bs * nc, c)?
        .reshape(&[bs, nc, parts.len() * c])
}

/// One LightningDDT block.
#[derive(Debug, Clone)]
pub struct DitBlock<B: Backend> {
    /// `norm1` (RMSNorm, eps 1e-6).
    pub norm1: RmsNorm<B>,
    /// `attn` (fused qkv, RoPE).
    pub attn: FusedAttention<B>,
    /// `norm2`.
    pub norm2: RmsNorm<B>,
    /// `mlp` (SwiGLU).
    pub mlp: SwiGlu<B>,
    /// `adaLN_modulation.1` (`C → 6C`).
    pub ada: Linear<B>,
}

/// Saved activations of a [`DitBlock`].
#[derive(Debug, Clone)]
pub struct DitBlockSaved<B: Backend> {
    cond: Tensor<B>,
    cond_act: Tensor<B>,
    mods: Vec<Tensor<B>>,
    x: Tensor<B>,
    s1: NormStats<B>,
    h1: Tensor<B>,
    attn: AttentionSaved<B>,
    a: Tensor<B>,
    x1: Tensor<B>,
    s2: NormStats<B>,
    h2: Tensor<B>,
    mlp: SwiGluSaved<B>,
    m: Tensor<B>,
}

impl<B: Backend> DitBlock<B> {
    /// `blocks.{i}` of width `c`, `heads` heads, SwiGLU hidden `hd`; PyTorch default init
    /// with the adaLN linear zeroed (§3.7).
    pub fn new(
        b: &B,
        init: &mut Init,
        prefix: &str,
        c: usize,
        heads: usize,
        hd: usize,
    ) -> Result<Self> {
        let mut ada = Linear::new(
            b,
            init,
            &format!("{prefix}.adaLN_modulation.1"),
            &[6 * c, c],
            true,
        )?;
        ada.zero(b)?;
        Ok(DitBlock {
            norm1: RmsNorm::new(b, &format!("{prefix}.norm1"), c, 1e-6)?,
            attn: FusedAttention::new(b, init, &format!("{prefix}.attn"), c, heads)?,
            norm2: RmsNorm::new(b, &format!("{prefix}.norm2"), c, 1e-6)?,
            mlp: SwiGlu::new(b, init, &format!("{prefix}.mlp"), c, hd)?,
            ada,
        })
    }

    /// `x` `[B, N, C]`, `cond` `[B, Nc, C]` → `[B, N, C]`.
    pub fn forward(
        &self,
        b: &B,
        x: &Tensor<B>,
        cond: &Tensor<B>,
        rope: RopeTables<'_, B>,
    ) -> Result<(Tensor<B>, DitBlockSaved<B>)> {
        let cond_act = b.unary(Unary::Silu, cond)?;
        let mods = chunks(b, &self.ada.forward(b, &cond_act)?, 6)?;
        let (n1, s1) = self.norm1.forward(b, x)?;
        let h1 = b.modulate(&n1, Some(&mods[0]), Some(&mods[1]))?;
        let (a, attn) = self.attn.forward(b, &h1, rope)?;
        let x1 = b.binary(Binary::Add, x, &b.gate(&a, &mods[2])?)?;
        let (n2, s2) = self.norm2.forward(b, &x1)?;
        let h2 = b.modulate(&n2, Some(&mods[3]), Some(&mods[4]))?;
        let (m, mlp) = self.mlp.forward(b, &h2)?;
        let x2 = b.binary(Binary::Add, &x1, &b.gate(&m, &mods[5])?)?;
        Ok((
            x2,
            DitBlockSaved {
                cond: cond.clone(),
                cond_act,
                mods,
                x: x.clone(),
                s1,
                h1: n1,
                attn,
                a,
                x1,
                s2,
                h2: n2,
                mlp,
                m,
            },
        ))
    }

    /// Backward; returns `(dx, dcond)`.
    pub fn backward(
        &self,
        b: &B,
        s: &DitBlockSaved<B>,
        dy: &Tensor<B>,
        rope: RopeTables<'_, B>,
        grads: &mut Grads<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        let md = &s.mods;
        let (dm, dg2) = b.gate_backward(&s.m, &md[5], dy)?;
        let dh2 = self.mlp.backward(b, &s.mlp, &dm, grads)?;
        let g2 = b.modulate_backward(&s.h2, Some(&md[3]), Some(&md[4]), &dh2)?;
        let dx1 = b.binary(
            Binary::Add,
            dy,
            &self.norm2.backward(b, &s.x1, &s.s2, &g2.dx, grads)?,
        )?;
        let (da, dg1) = b.gate_backward(&s.a, &md[2], &dx1)?;
        let dh1 = self.attn.backward(b, &s.attn, &da, rope, grads)?;
        let g1 = b.modulate_backward(&s.h1, Some(&md[0]), Some(&md[1]), &dh1)?;
        let dx = b.binary(
            Binary::Add,
            &dx1,
            &self.norm1.backward(b, &s.x, &s.s1, &g1.dx, grads)?,
        )?;
        let missing = || {
            Error::invalid(
                "DitBlock::backward",
                "modulate returned no shift/scale gradient",
            )
        };
        let dsh1 = g1.dshift.ok_or_else(missing)?;
        let dsc1 = g1.dscale.ok_or_else(missing)?;
        let dsh2 = g2.dshift.ok_or_else(missing)?;
        let dsc2 = g2.dscale.ok_or_else(missing)?;
        let dmod = unchunk(b, &[&dsh1, &dsc1, &dg1, &dsh2, &dsc2, &dg2])?;
        let dcond_act = self.ada.backward(b, &s.cond_act, &dmod, grads)?;
        let dcond = b.unary_backward(Unary::Silu, &s.cond, &dcond_act)?;
        Ok((dx, dcond))
    }
}

impl<B: Backend> Module<B> for DitBlock<B> {
    crate::module_params!(norm1, attn, norm2, mlp, ada);
}

/// The final layer: `linear(modulate(RMSNorm(h), shift, scale))` with
/// `(shift, scale) = chunk(adaLN(SiLU(cond)), 2)` and no gate (§3.6).
#[derive(Debug, Clone)]
pub struct FinalLayer<B: Backend> {
    /// `final_layer.norm_final`.
    pub norm: RmsNorm<B>,
    /// `final_layer.linear`.
    pub linear: Linear<B>,
    /// `final_layer.adaLN_modulation.1` (`C → 2C`).
    pub ada: Linear<B>,
}

/// Saved activations of [`FinalLayer`].
#[derive(Debug, Clone)]
pub struct FinalLayerSaved<B: Backend> {
    cond: Tensor<B>,
    cond_act: Tensor<B>,
    shift: Tensor<B>,
    scale: Tensor<B>,
    x: Tensor<B>,
    stats: NormStats<B>,
    n: Tensor<B>,
    h: Tensor<B>,
}

impl<B: Backend> FinalLayer<B> {
    /// `final_layer` of width `c` with `out` outputs per token; all linears zeroed (§3.7).
    pub fn new(b: &B, init: &mut Init, c: usize, out: usize) -> Result<Self> {
        let mut linear = Linear::new(b, init, "final_layer.linear", &[out, c], true)?;
        linear.zero(b)?;
        let mut ada = Linear::new(b, init, "final_layer.adaLN_modulation.1", &[2 * c, c], true)?;
        ada.zero(b)?;
        Ok(FinalLayer {
            norm: RmsNorm::new(b, "final_layer.norm_final", c, 1e-6)?,
            linear,
            ada,
        })
    }

    /// `x` `[B, N, C]`, `cond` `[B, Nc, C]` → `[B, N, out]`.
    pub fn forward(
        &self,
        b: &B,
        x: &Tensor<B>,
        cond: &Tensor<B>,
    ) -> Result<(Tensor<B>, FinalLayerSaved<B>)> {
        let cond_act = b.unary(Unary::Silu, cond)?;
        let mut parts = chunks(b, &self.ada.forward(b, &cond_act)?, 2)?;
        let scale = parts
            .pop()
            .ok_or_else(|| Error::invalid("final_layer", "no scale chunk"))?;
        let shift = parts
            .pop()
            .ok_or_else(|| Error::invalid("final_layer", "no shift chunk"))?;
        let (n, stats) = self.norm.forward(b, x)?;
        let h = b.modulate(&n, Some(&shift), Some(&scale))?;
        let y = self.linear.forward(b, &h)?;
        Ok((
            y,
            FinalLayerSaved {
                cond: cond.clone(),
                cond_act,
                shift,
                scale,
                x: x.clone(),
                stats,
                n,
                h,
            },
        ))
    }

    /// Backward; returns `(dx, dcond)`.
    pub fn backward(
        &self,
        b: &B,
        s: &FinalLayerSaved<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        let dh = self.linear.backward(b, &s.h, dy, grads)?;
        let g = b.modulate_backward(&s.n, Some(&s.shift), Some(&s.scale), &dh)?;
        let dx = self.norm.backward(b, &s.x, &s.stats, &g.dx, grads)?;
        let missing = || {
            Error::invalid(
                "FinalLayer::backward",
                "modulate returned no shift/scale gradient",
            )
        };
        let dshift = g.dshift.ok_or_else(missing)?;
        let dscale = g.dscale.ok_or_else(missing)?;
        let dmod = unchunk(b, &[&dshift, &dscale])?;
        let dcond_act = self.ada.backward(b, &s.cond_act, &dmod, grads)?;
        let dcond = b.unary_backward(Unary::Silu, &s.cond, &dcond_act)?;
        Ok((dx, dcond))
    }
}

impl<B: Backend> Module<B> for FinalLayer<B> {
    crate::module_params!(norm, linear, ada);
}
