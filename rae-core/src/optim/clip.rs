//! Global gradient-norm clipping with PyTorch `clip_grad_norm_` semantics (§5.1: max norm
//! 1.0 for stage 2; none for stage 1, §2.7.7).

use alloc::format;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The result of [`clip_grad_norm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipReport {
    /// The global norm `sqrt(Σ‖g_i‖²)` before clipping.
    pub total_norm: f32,
    /// The factor to multiply every gradient by (1 when not clipping); pass it to
    /// [`crate::optim::AdamW::step`] as `grad_scale`, or apply it with [`scale_grads`].
    pub factor: f32,
}

/// The global L2 norm `sqrt(Σ_i ‖g_i‖²)` of a list of gradients: the per-tensor sums of
/// squares are reduced on the device, gathered into one small tensor and downloaded once
/// (one device round trip per step, not one per parameter), then added on the host in f64.
/// A NaN or infinite norm is [`Error::NonFinite`].
pub fn global_grad_norm<B: Backend>(b: &B, grads: &[Tensor<B>]) -> Result<f32> {
    let mut partial = alloc::vec::Vec::with_capacity(grads.len());
    for g in grads {
        if g.numel() > 0 {
            partial.push(b.sum_sq_all(g)?);
        }
    }
    let total: f64 = if partial.is_empty() {
        0.0
    } else {
        let refs: alloc::vec::Vec<&Tensor<B>> = partial.iter().collect();
        let all = b.concat_mid(&refs, 1, 1)?;
        b.download(&all)?.iter().map(|&v| v as f64).sum()
    };
    let norm = libm::sqrt(total) as f32;
    if !norm.is_finite() {
        return Err(Error::NonFinite {
            what: format!(
                "the global gradient norm ({norm}) over {} tensors",
                grads.len()
            ),
        });
    }
    Ok(norm)
}

/// `min(1, max_norm / (total + 1e-6))`: PyTorch's clipping coefficient.
pub fn clip_coefficient(total_norm: f32, max_norm: f32) -> f32 {
    let coef = max_norm as f64 / (total_norm as f64 + 1e-6);
    coef.min(1.0) as f32
}

/// Computes the global gradient norm and, with `max_norm = Some(c)`, the factor that
/// clips it to `c` (`c/(total + 1e-6)`, at most 1). The gradients are not modified: fold
/// the factor into the optimiser step. `None` means no clipping (factor 1) but still
/// reports the norm and still fails on a non-finite one.
pub fn clip_grad_norm<B: Backend>(
    b: &B,
    grads: &[Tensor<B>],
    max_norm: Option<f32>,
) -> Result<ClipReport> {
    if let Some(c) = max_norm {
        if !(c.is_finite() && c > 0.0) {
            return Err(Error::invalid(
                "gradient clipping",
                format!("max norm must be finite and > 0 (use no clipping instead), got {c}"),
            ));
        }
    }
    let total_norm = global_grad_norm(b, grads)?;
    let factor = match max_norm {
        Some(c) => clip_coefficient(total_norm, c),
        None => 1.0,
    };
    Ok(ClipReport { total_norm, factor })
}

/// Multiplies every gradient by `factor` (for optimisers that do not take a gradient scale).
pub fn scale_grads<B: Backend>(b: &B, grads: &[Tensor<B>], factor: f32) -> Result<Vec<Tensor<B>>> {
    grads.iter().map(|g| b.scale(g, factor)).collect()
}
