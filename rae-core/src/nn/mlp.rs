//! Feed-forward layers: the ViT MLP (`fc2(GELU(fc1(x)))`, §2.2.2, §2.6.2) and SwiGLU
//! (`w3(SiLU(u1) ⊙ u2)`, §3.3).

use super::{Grads, Init, Linear, Module};
use crate::backend::{Backend, Unary};
use crate::error::Result;
use crate::tensor::Tensor;

/// Two linears with an activation between them.
#[derive(Debug, Clone)]
pub struct Mlp<B: Backend> {
    /// First linear (`C → hidden`).
    pub fc1: Linear<B>,
    /// Second linear (`hidden → C`).
    pub fc2: Linear<B>,
    /// The activation (exact GELU for DINOv2 and the decoder, GELU-tanh for SigLIP).
    pub act: Unary,
}

/// Saved activations of [`Mlp`].
#[derive(Debug, Clone)]
pub struct MlpSaved<B: Backend> {
    x: Tensor<B>,
    h: Tensor<B>,
    a: Tensor<B>,
}

impl<B: Backend> Mlp<B> {
    /// An MLP with the given linear names.
    pub fn new(
        b: &B,
        init: &mut Init,
        names: (&str, &str),
        c: usize,
        hidden: usize,
        act: Unary,
    ) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::new(b, init, names.0, &[hidden, c], true)?,
            fc2: Linear::new(b, init, names.1, &[c, hidden], true)?,
            act,
        })
    }

    /// Forward.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<(Tensor<B>, MlpSaved<B>)> {
        let h = self.fc1.forward(b, x)?;
        let a = b.unary(self.act, &h)?;
        let y = self.fc2.forward(b, &a)?;
        Ok((y, MlpSaved { x: x.clone(), h, a }))
    }

    /// Backward; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        s: &MlpSaved<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let da = self.fc2.backward(b, &s.a, dy, grads)?;
        let dh = b.unary_backward(self.act, &s.h, &da)?;
        self.fc1.backward(b, &s.x, &dh, grads)
    }
}

impl<B: Backend> Module<B> for Mlp<B> {
    crate::module_params!(fc1, fc2);
}

/// SwiGLU feed-forward with hidden size `Hd` (see [`SwiGlu::hidden_size`]).
#[derive(Debug, Clone)]
pub struct SwiGlu<B: Backend> {
    /// `{prefix}.w12`, `[2·Hd, C]`.
    pub w12: Linear<B>,
    /// `{prefix}.w3`, `[C, Hd]`.
    pub w3: Linear<B>,
}

/// Saved activations of [`SwiGlu`].
#[derive(Debug, Clone)]
pub struct SwiGluSaved<B: Backend> {
    x: Tensor<B>,
    u: Tensor<B>,
    g: Tensor<B>,
}

impl<B: Backend> SwiGlu<B> {
    /// The reference's hidden-size rule `int(2/3 · int(mlp_ratio · C))` (§3.3): 384 → 1024,
    /// 1152 → 3072, 2048 → 5461.
    pub fn hidden_size(c: usize, mlp_ratio: f64) -> usize {
        let mlp_hidden = (c as f64 * mlp_ratio) as usize;
        (2.0 / 3.0 * mlp_hidden as f64) as usize
    }

    /// Named `prefix` with hidden size `hd`.
    pub fn new(b: &B, init: &mut Init, prefix: &str, c: usize, hd: usize) -> Result<Self> {
        Ok(SwiGlu {
            w12: Linear::new(b, init, &alloc::format!("{prefix}.w12"), &[2 * hd, c], true)?,
            w3: Linear::new(b, init, &alloc::format!("{prefix}.w3"), &[c, hd], true)?,
        })
    }

    /// Forward.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<(Tensor<B>, SwiGluSaved<B>)> {
        let u = self.w12.forward(b, x)?;
        let g = b.swiglu(&u)?;
        let y = self.w3.forward(b, &g)?;
        Ok((y, SwiGluSaved { x: x.clone(), u, g }))
    }

    /// Backward; returns `dx`.
    pub fn backward(
        &self,
        b: &B,
        s: &SwiGluSaved<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<Tensor<B>> {
        let dg = self.w3.backward(b, &s.g, dy, grads)?;
        let du = b.swiglu_backward(&s.u, &dg)?;
        self.w12.backward(b, &s.x, &du, grads)
    }
}

impl<B: Backend> Module<B> for SwiGlu<B> {
    crate::module_params!(w12, w3);
}
