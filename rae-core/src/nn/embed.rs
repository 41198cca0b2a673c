//! Embedders: patch embedding as a linear map over patches (§0, §3.2), the label table with
//! its null class (§3.2), and the Gaussian Fourier time embedding (§3.2).

use alloc::format;
use alloc::vec::Vec;

use super::{Grads, Init, Linear, Module, Param};
use crate::backend::{Backend, PatchOrder, Unary};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A stride-`p` conv patch embedding with weight `[out, C, p, p]`: `patchify` (channel-first
/// patch layout) followed by a linear map.
#[derive(Debug, Clone)]
pub struct PatchEmbed<B: Backend> {
    /// The projection (`{prefix}.weight` `[out, C, p, p]`, `{prefix}.bias`).
    pub proj: Linear<B>,
    /// Patch size.
    pub patch: usize,
}

impl<B: Backend> PatchEmbed<B> {
    /// `prefix` names the conv (e.g. `x_embedder.proj`); PyTorch default init.
    pub fn new(
        b: &B,
        init: &mut Init,
        prefix: &str,
        c_in: usize,
        out: usize,
        p: usize,
    ) -> Result<Self> {
        Ok(PatchEmbed {
            proj: Linear::new(b, init, prefix, &[out, c_in, p, p], true)?,
            patch: p,
        })
    }

    /// Xavier-uniform weight on the `[out, in]` view and zero bias (§3.7).
    pub fn init_xavier(&mut self, b: &B, init: &mut Init) -> Result<()> {
        self.proj.weight.value = init.xavier_uniform(b, self.proj.weight.value.dims())?;
        if let Some(p) = &mut self.proj.bias {
            p.value = b.zeros(p.value.dims())?;
        }
        Ok(())
    }

    /// Images `[B, C, H, W]` → tokens `[B, (H/p)(W/p), out]` and the patches (saved for the
    /// backward).
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
        let patches = b.patchify(x, self.patch, PatchOrder::ChannelFirst)?;
        Ok((self.proj.forward(b, &patches)?, patches))
    }

    /// Parameter gradients from the saved patches (the input gradient is not needed: the
    /// input is data).
    pub fn backward(
        &self,
        b: &B,
        patches: &Tensor<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<()> {
        self.proj.backward(b, patches, dy, grads)?;
        Ok(())
    }
}

impl<B: Backend> Module<B> for PatchEmbed<B> {
    crate::module_params!(proj);
}

/// Class-label embedding `[num_classes + 1, C]`; row `num_classes` is the null class used
/// for label dropout and classifier-free guidance (§3.2).
#[derive(Debug, Clone)]
pub struct LabelEmbedder<B: Backend> {
    /// `y_embedder.embedding_table.weight`.
    pub table: Param<B>,
    /// Number of real classes (the null label is this value).
    pub num_classes: usize,
}

impl<B: Backend> LabelEmbedder<B> {
    /// `N(0, 0.02²)` init (§3.7).
    pub fn new(b: &B, init: &mut Init, num_classes: usize, c: usize) -> Result<Self> {
        Ok(LabelEmbedder {
            table: Param::new(
                "y_embedder.embedding_table.weight",
                init.normal(b, &[num_classes + 1, c], 0.02)?,
            ),
            num_classes,
        })
    }

    /// Checks labels: each in `0..=num_classes` (the last is the null class).
    pub fn check(&self, labels: &[u32]) -> Result<()> {
        if let Some(&bad) = labels.iter().find(|&&l| l as usize > self.num_classes) {
            return Err(Error::invalid(
                "class label",
                format!(
                    "{bad} is outside 0..={} ({} classes plus the null class {})",
                    self.num_classes, self.num_classes, self.num_classes
                ),
            ));
        }
        Ok(())
    }

    /// `[B]` labels → `[B, C]`.
    pub fn forward(&self, b: &B, labels: &[u32]) -> Result<Tensor<B>> {
        self.check(labels)?;
        b.gather_rows(&self.table.value, labels)
    }

    /// Scatter-adds `dy` `[B, C]` into the table gradient.
    pub fn backward(
        &self,
        b: &B,
        labels: &[u32],
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<()> {
        let rows = self.table.value.dims()[0];
        grads.add(b, &self.table, b.scatter_add_rows(dy, labels, rows)?)
    }
}

impl<B: Backend> Module<B> for LabelEmbedder<B> {
    crate::module_params!(table);
}

/// Gaussian Fourier time embedding: `[sin(2π t W) | cos(2π t W)]` with 256 frozen
/// frequencies `W`, then `Linear → SiLU → Linear` (§3.2).
#[derive(Debug, Clone)]
pub struct TimestepEmbedder<B: Backend> {
    /// `t_embedder.W` `[256]`, frozen (load it; never re-sample, §10 item 4).
    pub w: Param<B>,
    /// `t_embedder.mlp.0` (`512 → C`).
    pub fc1: Linear<B>,
    /// `t_embedder.mlp.2` (`C → C`).
    pub fc2: Linear<B>,
}

/// Saved activations of [`TimestepEmbedder`].
#[derive(Debug, Clone)]
pub struct TimestepSaved<B: Backend> {
    feats: Tensor<B>,
    h: Tensor<B>,
    a: Tensor<B>,
}

impl<B: Backend> TimestepEmbedder<B> {
    /// Number of Fourier frequencies.
    pub const FREQS: usize = 256;

    /// `W ~ N(0, 1)`, linear weights `N(0, 0.02²)`, biases PyTorch default (§3.7).
    pub fn new(b: &B, init: &mut Init, c: usize) -> Result<Self> {
        let mut fc1 = Linear::new(b, init, "t_embedder.mlp.0", &[c, 2 * Self::FREQS], true)?;
        let mut fc2 = Linear::new(b, init, "t_embedder.mlp.2", &[c, c], true)?;
        fc1.weight.value = init.normal(b, &[c, 2 * Self::FREQS], 0.02)?;
        fc2.weight.value = init.normal(b, &[c, c], 0.02)?;
        Ok(TimestepEmbedder {
            w: Param::buffer("t_embedder.W", init.normal(b, &[Self::FREQS], 1.0)?),
            fc1,
            fc2,
        })
    }

    /// Flow times `[B]` (already shifted, §4.3) → `[B, C]`.
    pub fn forward(&self, b: &B, t: &[f32]) -> Result<(Tensor<B>, TimestepSaved<B>)> {
        let tt = b.upload(t, &[t.len()])?;
        let feats = b.fourier_features(&tt, &self.w.value)?;
        let h = self.fc1.forward(b, &feats)?;
        let a = b.unary(Unary::Silu, &h)?;
        let y = self.fc2.forward(b, &a)?;
        Ok((y, TimestepSaved { feats, h, a }))
    }

    /// Parameter gradients (the time itself needs none).
    pub fn backward(
        &self,
        b: &B,
        s: &TimestepSaved<B>,
        dy: &Tensor<B>,
        grads: &mut Grads<B>,
    ) -> Result<()> {
        let da = self.fc2.backward(b, &s.a, dy, grads)?;
        let dh = b.unary_backward(Unary::Silu, &s.h, &da)?;
        self.fc1.backward(b, &s.feats, &dh, grads)?;
        Ok(())
    }
}

impl<B: Backend> Module<B> for TimestepEmbedder<B> {
    crate::module_params!(w, fc1, fc2);
}

/// Labels as u32 from the i64 values of a checkpoint or fixture.
pub fn labels_from_i64(v: &[i64]) -> Result<Vec<u32>> {
    v.iter()
        .map(|&l| {
            u32::try_from(l)
                .map_err(|_| Error::invalid("class label", format!("{l} is negative or too large")))
        })
        .collect()
}
