//! The bounds on what a file, a configuration or a flag may ask for, in one place, checked
//! before anything is allocated. Every limit has a name that appears in the error, so a user
//! who meets one knows which value was refused and what the bound is.
//!
//! The bounds are far above every released model (DiT-DH-XL: width 2048, 28 layers, 256
//! tokens; decoder ViT-XL: width 1152, 4096 MLP; 512² images) and far below what would make
//! a size computation overflow or an allocation of a single tensor absurd.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// Largest model width, channel count or MLP width.
pub const MAX_WIDTH: usize = 1 << 16;
/// Largest number of layers in a stack.
pub const MAX_DEPTH: usize = 1024;
/// Largest number of attention heads.
pub const MAX_HEADS: usize = 1024;
/// Largest side of a token grid (latent `input_size / patch_size`, or image / patch).
pub const MAX_GRID: usize = 1024;
/// Largest number of tokens in one sequence.
pub const MAX_TOKENS: usize = 1 << 16;
/// Largest patch side.
pub const MAX_PATCH: usize = 1024;
/// Largest image side in pixels (model input or output, `--image-size`).
pub const MAX_IMAGE_SIDE: usize = 16_384;
/// Largest number of classes.
pub const MAX_CLASSES: usize = 1 << 24;
/// Largest MLP ratio (the released models use 4).
pub const MAX_MLP_RATIO: f64 = 64.0;
/// Largest number of parameters a configuration may ask for (16 Gi values, 64 GiB in f32).
pub const MAX_PARAMS: u128 = 1 << 34;

/// An error for `key` of `source` (a file, a preset or a flag): `value` is outside `range`.
fn out_of_range(source: &str, key: &str, value: impl core::fmt::Display, range: String) -> Error {
    Error::config(
        format!("{source}: {key}"),
        format!("{value} is outside the allowed range {range}"),
    )
}

/// `value` of `key` must lie in `lo..=hi` (the limit's name is in `hi`'s documentation; the
/// error names the key, the value and the range).
pub fn check_usize(source: &str, key: &str, value: usize, lo: usize, hi: usize) -> Result<()> {
    if value < lo || value > hi {
        return Err(out_of_range(source, key, value, format!("{lo}..={hi}")));
    }
    Ok(())
}

/// `value` of `key` must be finite and lie in `[lo, hi]`.
pub fn check_f64(source: &str, key: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
    if !value.is_finite() || value < lo || value > hi {
        return Err(out_of_range(source, key, value, format!("[{lo}, {hi}]")));
    }
    Ok(())
}

/// `value` of `key` must be finite and lie in `[lo, hi)`.
pub fn check_f64_open(source: &str, key: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
    if !value.is_finite() || value < lo || value >= hi {
        return Err(out_of_range(source, key, value, format!("[{lo}, {hi})")));
    }
    Ok(())
}

/// `count` parameters (a lower bound computed from a configuration) must not exceed
/// [`MAX_PARAMS`].
pub fn check_params(source: &str, count: u128) -> Result<()> {
    if count > MAX_PARAMS {
        return Err(Error::config(
            String::from(source),
            format!(
                "the configuration asks for at least {count} parameters, more than the limit \
                 MAX_PARAMS = {MAX_PARAMS}"
            ),
        ));
    }
    Ok(())
}

/// A configuration that asks for at least `needed` parameters must not be paired with a
/// weights file holding only `held` values: checked before the model is allocated, so a
/// file whose metadata claims an absurd size fails without allocating it.
pub fn check_params_against_file(source: &str, needed: u128, held: u128) -> Result<()> {
    if needed > held {
        return Err(Error::config(
            String::from(source),
            format!(
                "the configuration asks for at least {needed} parameters but the file holds \
                 only {held} values (the configuration does not belong to these weights)"
            ),
        ));
    }
    Ok(())
}

/// A vector of `n` copies of `value`, or an error (not an abort) when the memory cannot be
/// had. `what` names the buffer in the error.
pub fn try_filled(what: &str, n: usize, value: f32) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::invalid(
            String::from(what),
            format!(
                "cannot allocate {n} values ({} bytes): out of memory",
                n as u128 * 4
            ),
        )
    })?;
    v.resize(n, value);
    Ok(v)
}

/// A copy of `src`, or an error (not an abort) when the memory cannot be had.
pub fn try_copy(what: &str, src: &[f32]) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(src.len()).map_err(|_| {
        Error::invalid(
            String::from(what),
            format!(
                "cannot allocate {} values ({} bytes): out of memory",
                src.len(),
                src.len() as u128 * 4
            ),
        )
    })?;
    v.extend_from_slice(src);
    Ok(v)
}
