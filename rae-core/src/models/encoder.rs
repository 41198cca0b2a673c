//! The frozen representation encoder of a RAE (§2.2, §2.3): one enum over the supported
//! families, so the pipeline and the CLI work with any of them.

use super::{Dinov2Encoder, Mode};
use crate::backend::Backend;
use crate::error::Result;
use crate::nn::{Module, Param};
use crate::tensor::Tensor;

/// A frozen encoder: standardised images `[B, 3, S, S]` → patch tokens `[B, N, C]` after a
/// final LayerNorm without affine, special tokens dropped.
#[derive(Debug, Clone)]
pub enum Encoder<B: Backend> {
    /// DINOv2 with registers (§2.2).
    Dinov2(Dinov2Encoder<B>),
}

impl<B: Backend> Encoder<B> {
    /// Token width `C`.
    pub fn hidden_size(&self) -> usize {
        match self {
            Encoder::Dinov2(e) => e.config.hidden_size,
        }
    }

    /// Patch size.
    pub fn patch_size(&self) -> usize {
        match self {
            Encoder::Dinov2(e) => e.config.patch_size,
        }
    }

    /// The family's name (for logs and errors).
    pub fn family(&self) -> &'static str {
        match self {
            Encoder::Dinov2(_) => "DINOv2-with-registers",
        }
    }

    /// Standardised images → tokens.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        match self {
            Encoder::Dinov2(e) => e.forward(b, x, Mode::Infer),
        }
    }
}

impl<B: Backend> From<Dinov2Encoder<B>> for Encoder<B> {
    fn from(e: Dinov2Encoder<B>) -> Self {
        Encoder::Dinov2(e)
    }
}

impl<B: Backend> Module<B> for Encoder<B> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        match self {
            Encoder::Dinov2(e) => e.visit(f),
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        match self {
            Encoder::Dinov2(e) => e.visit_mut(f),
        }
    }
}
