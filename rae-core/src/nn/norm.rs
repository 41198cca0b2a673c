//! LayerNorm (affine or not) and RMSNorm with learnable weight (§0, §3.3).

use alloc::format;

use super::{Grads, Module, Param};
use crate::backend::{Backend, NormStats};
use crate::error::Result;
use crate::tensor::Tensor;

/// LayerNorm over the last axis; `weight`/`bias` absent means no affine.
#[derive(Debug, Clone)]
pub struct LayerNorm<B: Backend> {
    /// `{prefix}.weight` `[C]`.
    pub weight: Option<Param<B>>,
    /// `{prefix}.bias` `[C]`.
    pub bias: Option<Param<B>>,
    /// Variance epsilon.
    pub eps: f32,
}

impl<B: Backend> LayerNorm<B> {
    /// With affine (`γ = 1`, `β = 0`), named `prefix`.
    pub fn new(b: &B, prefix: &str, c: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            weight: Some(Param::new(format!("{prefix}.weight"), b.full(&[c], 1.0)?)),
            bias: Some(Param::new(format!("{prefix}.bias"), b.zeros(&[c])?)),
            eps,
        })
    }

    /// Without affine.
    pub fn plain(eps: f32) -> Self {
        LayerNorm {
            weight: None,
            bias: None,
            eps,
        }
    }

    /// Forward; returns the output and the statistics for the backward.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<(Tensor<B>, NormStats<B>)> {
        b.layernorm(
            x,
            self.weight.as_ref().map(|p| &p.value),
            self.bias.as_ref().map(|p| &p.value),
            self.eps,
        )
    }

    /// Backward; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        x: &Tensor<B>,
        stats: &NormStats<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let g = b.layernorm_backward(
            x,
            stats,
            self.weight.as_ref().map(|p| &p.value),
            self.bias.is_some(),
            dy,
        )?;
        if let (Some(p), Some(d)) = (&self.weight, g.dweight) {
            grads.add(b, p, d)?;
        }
        if let (Some(p), Some(d)) = (&self.bias, g.dbias) {
            grads.add(b, p, d)?;
        }
        Ok(g.dx)
    }
}

impl<B: Backend> Module<B> for LayerNorm<B> {
    crate::module_params!(weight, bias);
}

/// RMSNorm with a learnable weight (§3.3; eps 1e-6 in DiT-DH).
#[derive(Debug, Clone)]
pub struct RmsNorm<B: Backend> {
    /// `{prefix}.weight` `[C]`, initialised to 1.
    pub weight: Param<B>,
    /// Epsilon inside the square root.
    pub eps: f32,
}

impl<B: Backend> RmsNorm<B> {
    /// Named `prefix`, weight 1.
    pub fn new(b: &B, prefix: &str, c: usize, eps: f32) -> Result<Self> {
        Ok(RmsNorm {
            weight: Param::new(format!("{prefix}.weight"), b.full(&[c], 1.0)?),
            eps,
        })
    }

    /// Forward.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<(Tensor<B>, NormStats<B>)> {
        b.rmsnorm(x, Some(&self.weight.value), self.eps)
    }

    /// Backward; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        x: &Tensor<B>,
        stats: &NormStats<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let g = b.rmsnorm_backward(x, stats, Some(&self.weight.value), dy)?;
        if let Some(d) = g.dweight {
            grads.add(b, &self.weight, d)?;
        }
        Ok(g.dx)
    }
}

impl<B: Backend> Module<B> for RmsNorm<B> {
    crate::module_params!(weight);
}
