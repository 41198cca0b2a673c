//! The frozen representation encoder of a RAE (§2.2, §2.3): one enum over the supported
//! families, so the pipeline and the CLI work with any of them.

use super::rae::{IMAGENET_MEAN, IMAGENET_STD};
use super::{Dinov2Encoder, MaeEncoder, Mode, SiglipEncoder};
use crate::backend::Backend;
use crate::error::Result;
use crate::nn::{Module, Param};
use crate::tensor::Tensor;

/// SigLIP's image-processor mean and std (§2.1): 0.5 per channel.
pub const SIGLIP_MEAN_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// A frozen encoder: standardised images `[B, 3, S, S]` → patch tokens `[B, N, C]` after a
/// final LayerNorm without affine, special tokens dropped.
#[derive(Debug, Clone)]
pub enum Encoder<B: Backend> {
    /// DINOv2 with registers (§2.2).
    Dinov2(Dinov2Encoder<B>),
    /// SigLIP / SigLIP2 vision tower (§2.3).
    Siglip(SiglipEncoder<B>),
    /// MAE ViT (§2.3).
    Mae(MaeEncoder<B>),
}

impl<B: Backend> Encoder<B> {
    /// Token width `C`.
    pub fn hidden_size(&self) -> usize {
        match self {
            Encoder::Dinov2(e) => e.config.hidden_size,
            Encoder::Siglip(e) => e.config.hidden_size,
            Encoder::Mae(e) => e.config.hidden_size,
        }
    }

    /// Patch size.
    pub fn patch_size(&self) -> usize {
        match self {
            Encoder::Dinov2(e) => e.config.patch_size,
            Encoder::Siglip(e) => e.config.patch_size,
            Encoder::Mae(e) => e.config.patch_size,
        }
    }

    /// The family's name (for logs and errors).
    pub fn family(&self) -> &'static str {
        match self {
            Encoder::Dinov2(_) => "DINOv2-with-registers",
            Encoder::Siglip(_) => "SigLIP",
            Encoder::Mae(_) => "MAE",
        }
    }

    /// Per-channel `(mean, std)` of the family's image processor, applied to `[0, 1]`
    /// images before the encoder and inverted after the decoder (§2.1): ImageNet for DINOv2
    /// and MAE, 0.5/0.5 for SigLIP.
    pub fn image_mean_std(&self) -> ([f32; 3], [f32; 3]) {
        match self {
            Encoder::Dinov2(_) | Encoder::Mae(_) => (IMAGENET_MEAN, IMAGENET_STD),
            Encoder::Siglip(_) => (SIGLIP_MEAN_STD, SIGLIP_MEAN_STD),
        }
    }

    /// Standardised images → tokens.
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        match self {
            Encoder::Dinov2(e) => e.forward(b, x, Mode::Infer),
            Encoder::Siglip(e) => e.forward(b, x),
            Encoder::Mae(e) => e.forward(b, x),
        }
    }
}

impl<B: Backend> From<Dinov2Encoder<B>> for Encoder<B> {
    fn from(e: Dinov2Encoder<B>) -> Self {
        Encoder::Dinov2(e)
    }
}

impl<B: Backend> From<SiglipEncoder<B>> for Encoder<B> {
    fn from(e: SiglipEncoder<B>) -> Self {
        Encoder::Siglip(e)
    }
}

impl<B: Backend> From<MaeEncoder<B>> for Encoder<B> {
    fn from(e: MaeEncoder<B>) -> Self {
        Encoder::Mae(e)
    }
}

impl<B: Backend> Module<B> for Encoder<B> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Param<B>)) {
        match self {
            Encoder::Dinov2(e) => e.visit(f),
            Encoder::Siglip(e) => e.visit(f),
            Encoder::Mae(e) => e.visit(f),
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        match self {
            Encoder::Dinov2(e) => e.visit_mut(f),
            Encoder::Siglip(e) => e.visit_mut(f),
            Encoder::Mae(e) => e.visit_mut(f),
        }
    }
}

/// The configuration checks every ViT encoder shares: every size within its
/// [`crate::limits`] bound, the heads divide the width and the patch fits in the image.
/// `mlp_hidden` is the MLP width as a float (DINOv2 derives it from a ratio). `source` names
/// the file or preset in the error.
pub(crate) fn check_vit_geometry(
    source: &str,
    hidden_size: usize,
    num_attention_heads: usize,
    patch_size: usize,
    image_size: usize,
    layers: usize,
    mlp_hidden: f64,
) -> Result<()> {
    let bad = |k: &str, why: &str| {
        Err(crate::error::Error::config(
            alloc::format!("{source}: {k}"),
            alloc::string::String::from(why),
        ))
    };
    use crate::limits::{check_usize, MAX_HEADS, MAX_IMAGE_SIDE, MAX_PATCH, MAX_WIDTH};
    check_usize(source, "hidden_size", hidden_size, 1, MAX_WIDTH)?;
    check_usize(
        source,
        "num_attention_heads",
        num_attention_heads,
        1,
        MAX_HEADS,
    )?;
    check_usize(source, "patch_size", patch_size, 1, MAX_PATCH)?;
    check_usize(source, "image_size", image_size, 1, MAX_IMAGE_SIDE)?;
    check_usize(
        source,
        "num_hidden_layers",
        layers,
        1,
        crate::limits::MAX_DEPTH,
    )?;
    crate::limits::check_f64(source, "MLP width", mlp_hidden, 1.0, MAX_WIDTH as f64)?;
    let c = hidden_size as u128;
    crate::limits::check_params(
        source,
        layers as u128 * (4 * c * c + 2 * c * mlp_hidden as u128),
    )?;
    if !hidden_size.is_multiple_of(num_attention_heads) {
        return bad("num_attention_heads", "must divide hidden_size");
    }
    if patch_size == 0 || image_size < patch_size {
        return bad(
            "patch_size",
            "must be positive and not larger than image_size",
        );
    }
    Ok(())
}

/// An encoder's input check: standardised images `[B, 3, H, W]` with `H` and `W` multiples of
/// the patch `p`; returns `(B, H/p, W/p)`. `model` names the encoder in the error.
pub(crate) fn image_grid<B: Backend>(
    model: &'static str,
    x: &Tensor<B>,
    p: usize,
) -> Result<(usize, usize, usize)> {
    let dims = x.dims();
    if dims.len() != 4 || dims[1] != 3 || !dims[2].is_multiple_of(p) || !dims[3].is_multiple_of(p) {
        return Err(crate::error::Error::bad_shape(
            model,
            x.shape(),
            alloc::format!("expects [B, 3, H, W] with H and W multiples of {p}"),
        ));
    }
    Ok((dims[0], dims[2] / p, dims[3] / p))
}
