//! Pre-norm ViT layer shared by the DINOv2 encoder (§2.2.2, with LayerScale) and the RAE
//! decoder (§2.6.2, without):
//! `x ← x + λ1 ⊙ Attn(LN1(x));  x ← x + λ2 ⊙ MLP(LN2(x))`.

use alloc::format;

use super::{
    AttentionSaved, Grads, Init, LayerNorm, Mlp, MlpSaved, Module, Param, SeparateAttention,
};
use crate::backend::{Backend, Binary, NormStats, Reduce, Unary};
use crate::error::Result;
use crate::tensor::Tensor;

/// Checkpoint names of a ViT layer's parts, relative to the layer prefix.
#[derive(Debug, Clone, Copy)]
pub struct VitNames {
    /// First LayerNorm (`norm1`, `layernorm_before`).
    pub norm1: &'static str,
    /// Second LayerNorm (`norm2`, `layernorm_after`).
    pub norm2: &'static str,
    /// MLP linears (`mlp.fc1`/`mlp.fc2`, `intermediate.dense`/`output.dense`).
    pub fc: (&'static str, &'static str),
    /// LayerScale vectors, when the layer has them (`layer_scale1.lambda1`, ...).
    pub layer_scale: Option<(&'static str, &'static str)>,
    /// Attention query, key, value and output linears (`attention.attention.query`, ...).
    pub attn: [&'static str; 4],
}

/// The HuggingFace ViT attention names (DINOv2, ViT-MAE, the RAE decoder).
const HF_VIT_ATTENTION: [&str; 4] = [
    "attention.attention.query",
    "attention.attention.key",
    "attention.attention.value",
    "attention.output.dense",
];

impl VitNames {
    /// HuggingFace DINOv2 names.
    pub const DINOV2: VitNames = VitNames {
        norm1: "norm1",
        norm2: "norm2",
        fc: ("mlp.fc1", "mlp.fc2"),
        layer_scale: Some(("layer_scale1.lambda1", "layer_scale2.lambda1")),
        attn: HF_VIT_ATTENTION,
    };
    /// HuggingFace ViT-MAE / RAE decoder names.
    pub const VIT_MAE: VitNames = VitNames {
        norm1: "layernorm_before",
        norm2: "layernorm_after",
        fc: ("intermediate.dense", "output.dense"),
        layer_scale: None,
        attn: HF_VIT_ATTENTION,
    };
}

/// One pre-norm ViT layer.
#[derive(Debug, Clone)]
pub struct VitBlock<B: Backend> {
    /// Pre-attention norm.
    pub norm1: LayerNorm<B>,
    /// Self-attention with separate projections.
    pub attn: SeparateAttention<B>,
    /// LayerScale after attention.
    pub ls1: Option<Param<B>>,
    /// Pre-MLP norm.
    pub norm2: LayerNorm<B>,
    /// Feed-forward.
    pub mlp: Mlp<B>,
    /// LayerScale after the MLP.
    pub ls2: Option<Param<B>>,
}

/// Saved activations of a [`VitBlock`].
#[derive(Debug, Clone)]
pub struct VitBlockSaved<B: Backend> {
    x: Tensor<B>,
    s1: NormStats<B>,
    attn: AttentionSaved<B>,
    a: Tensor<B>,
    x1: Tensor<B>,
    s2: NormStats<B>,
    mlp: MlpSaved<B>,
    m: Tensor<B>,
}

/// Configuration of a ViT layer.
#[derive(Debug, Clone, Copy)]
pub struct VitBlockConfig {
    /// Width.
    pub c: usize,
    /// Heads.
    pub heads: usize,
    /// MLP hidden width.
    pub hidden: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// MLP activation.
    pub act: Unary,
    /// Initial LayerScale value (when the names have LayerScale).
    pub layer_scale_init: f32,
}

impl<B: Backend> VitBlock<B> {
    /// `count` layers named `{prefix}.{l}`, initialised in order.
    pub fn stack(
        b: &B,
        init: &mut Init,
        prefix: &str,
        count: usize,
        names: VitNames,
        cfg: &VitBlockConfig,
    ) -> Result<alloc::vec::Vec<Self>> {
        (0..count)
            .map(|l| VitBlock::new(b, init, &format!("{prefix}.{l}"), names, cfg))
            .collect()
    }

    /// A layer under `prefix` named as `names`.
    pub fn new(
        b: &B,
        init: &mut Init,
        prefix: &str,
        names: VitNames,
        cfg: &VitBlockConfig,
    ) -> Result<Self> {
        let c = cfg.c;
        let ls = |b: &B, name: &str| -> Result<Param<B>> {
            Ok(Param::new(
                format!("{prefix}.{name}"),
                b.full(&[c], cfg.layer_scale_init)?,
            ))
        };
        let (ls1, ls2) = match names.layer_scale {
            Some((n1, n2)) => (Some(ls(b, n1)?), Some(ls(b, n2)?)),
            None => (None, None),
        };
        Ok(VitBlock {
            norm1: LayerNorm::new(b, &format!("{prefix}.{}", names.norm1), c, cfg.eps)?,
            attn: SeparateAttention::new(b, init, prefix, names.attn, c, cfg.heads)?,
            ls1,
            norm2: LayerNorm::new(b, &format!("{prefix}.{}", names.norm2), c, cfg.eps)?,
            mlp: Mlp::new(
                b,
                init,
                (
                    &format!("{prefix}.{}", names.fc.0),
                    &format!("{prefix}.{}", names.fc.1),
                ),
                c,
                cfg.hidden,
                cfg.act,
            )?,
            ls2,
        })
    }

    fn scale(b: &B, x: &Tensor<B>, ls: &Option<Param<B>>) -> Result<Tensor<B>> {
        match ls {
            Some(p) => {
                let c = x.shape().last();
                b.bcast_affine(x, Some(&p.value), None, [x.numel() / c, c, 1])
            }
            None => Ok(x.clone()),
        }
    }

    fn scale_backward(
        b: &B,
        pre: &Tensor<B>,
        ls: &Option<Param<B>>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        match ls {
            Some(p) => {
                let c = dy.shape().last();
                let rows = dy.numel() / c;
                let prod = b.binary(Binary::Mul, dy, pre)?;
                grads.add(b, p, b.reduce(Reduce::Sum, &prod, [1, rows, c])?)?;
                b.bcast_affine(dy, Some(&p.value), None, [rows, c, 1])
            }
            None => Ok(dy.clone()),
        }
    }

    /// `x` `[B, N, C]` → `[B, N, C]`.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<(Tensor<B>, VitBlockSaved<B>)> {
        let (h1, s1) = self.norm1.forward(b, x)?;
        let (a, attn) = self.attn.forward(b, &h1)?;
        let x1 = b.binary(Binary::Add, x, &Self::scale(b, &a, &self.ls1)?)?;
        let (h2, s2) = self.norm2.forward(b, &x1)?;
        let (m, mlp) = self.mlp.forward(b, &h2)?;
        let x2 = b.binary(Binary::Add, &x1, &Self::scale(b, &m, &self.ls2)?)?;
        Ok((
            x2,
            VitBlockSaved {
                x: x.clone(),
                s1,
                attn,
                a,
                x1,
                s2,
                mlp,
                m,
            },
        ))
    }

    /// Backward; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        s: &VitBlockSaved<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let dm = Self::scale_backward(b, &s.m, &self.ls2, dy, grads)?;
        let dh2 = self.mlp.backward(b, &s.mlp, &dm, grads)?;
        let dx1 = b.binary(
            Binary::Add,
            dy,
            &self.norm2.backward(b, &s.x1, &s.s2, &dh2, grads)?,
        )?;
        let da = Self::scale_backward(b, &s.a, &self.ls1, &dx1, grads)?;
        let dh1 = self.attn.backward(b, &s.attn, &da, grads)?;
        b.binary(
            Binary::Add,
            &dx1,
            &self.norm1.backward(b, &s.x, &s.s1, &dh1, grads)?,
        )
    }
}

impl<B: Backend> Module<B> for VitBlock<B> {
    crate::module_params!(norm1, attn, ls1, norm2, mlp, ls2);
}
