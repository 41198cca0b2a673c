//! The linear flow-matching path and its velocity target (§4.1).
//!
//! `x_t = (1 − t)·x + t·ε` (`t = 0` data, `t = 1` noise) and `u_t = ε − x`. The host-slice
//! forms are the definition; the [`Backend`] forms apply one `t` per sample of a batch.

use alloc::format;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::check;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn same_len(what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::invalid(
            what,
            format!("slices differ in length ({a} vs {b})"),
        ));
    }
    Ok(())
}

/// `out = (1 − t)·x + t·ε` on host slices of equal length (§4.1).
pub fn interpolate_host(x: &[f32], eps: &[f32], t: f32, out: &mut [f32]) -> Result<()> {
    same_len("interpolate_host (x vs eps)", x.len(), eps.len())?;
    same_len("interpolate_host (x vs out)", x.len(), out.len())?;
    let a = 1.0 - t;
    for ((o, &xi), &ei) in out.iter_mut().zip(x).zip(eps) {
        *o = a * xi + t * ei;
    }
    Ok(())
}

/// `out = ε − x` on host slices of equal length: the velocity target `u_t` (§4.1).
pub fn velocity_target_host(x: &[f32], eps: &[f32], out: &mut [f32]) -> Result<()> {
    same_len("velocity_target_host (x vs eps)", x.len(), eps.len())?;
    same_len("velocity_target_host (x vs out)", x.len(), out.len())?;
    for ((o, &xi), &ei) in out.iter_mut().zip(x).zip(eps) {
        *o = ei - xi;
    }
    Ok(())
}

/// `x_t[b] = (1 − t[b])·x[b] + t[b]·ε[b]` for a batch `x`, `ε` `[B, ...]` with one time
/// per sample `t` `[B]` (§4.1, training step §7.3). Returns `[B, ...]`.
///
/// Uses two [`Backend::bcast_affine`] passes over the `[1, B, rest]` view and one
/// [`Backend::axpy`].
pub fn interpolate<B: Backend>(
    b: &B,
    x: &Tensor<B>,
    eps: &Tensor<B>,
    t: &[f32],
) -> Result<Tensor<B>> {
    check::same_shape("flow::interpolate (x vs eps)", x.shape(), eps.shape())?;
    let batch = x.shape().dim(0).unwrap_or(0);
    if x.shape().rank() == 0 || batch == 0 {
        return Err(Error::bad_shape(
            "flow::interpolate",
            x.shape(),
            "expected a batch [B, ...] with B > 0",
        ));
    }
    if t.len() != batch {
        return Err(Error::invalid(
            "flow::interpolate (t)",
            format!("{} times for a batch of {batch}", t.len()),
        ));
    }
    if let Some(bad) = t.iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("flow::interpolate time {bad}"),
        });
    }
    let rest = x.numel() / batch;
    let one_minus: Vec<f32> = t.iter().map(|&v| 1.0 - v).collect();
    let a_data = b.upload(&one_minus, &[batch])?;
    let a_noise = b.upload(t, &[batch])?;
    let dims = [1, batch, rest];
    let data_part = b.bcast_affine(x, Some(&a_data), None, dims)?;
    let noise_part = b.bcast_affine(eps, Some(&a_noise), None, dims)?;
    b.axpy(1.0, &noise_part, &data_part)
}

/// The velocity target `ε − x` (§4.1) for tensors of equal shape.
pub fn velocity_target<B: Backend>(b: &B, x: &Tensor<B>, eps: &Tensor<B>) -> Result<Tensor<B>> {
    check::same_shape("flow::velocity_target (x vs eps)", x.shape(), eps.shape())?;
    b.axpy(-1.0, x, eps)
}
