//! Latents on disk: the caches `encode` writes and stage 2 reads, the latents `sample`
//! saves, and the initial noise `sample` may start from.

use std::path::Path;

use rae_core::safetensors::TensorOut;
use rae_core::{Backend, Tensor};

use super::atomic::write_atomic;
use super::tensor_file::{labels_u32, load_tensor_file};
use crate::errors::{CliError, CliResult};

/// Latents and labels in host memory.
#[derive(Debug, Clone)]
pub struct LatentCache {
    /// `[N, C, h, w]` normalised latents.
    pub latents: Vec<f32>,
    /// Per-latent shape `[C, h, w]`.
    pub dims: [usize; 3],
    /// Labels.
    pub labels: Vec<u32>,
    /// Class names.
    pub classes: usize,
}

/// Reads a latent cache written by `encode`.
pub fn load_latents(path: &Path) -> CliResult<LatentCache> {
    let mut f = load_tensor_file(path)?;
    let lat = f
        .tensors
        .get("latents")
        .ok_or_else(|| CliError::new(format!("{} has no tensor \"latents\"", path.display())))?;
    if lat.shape.len() != 4 {
        return Err(CliError::new(format!(
            "{}: latents must be [N, C, h, w], found {:?}",
            path.display(),
            lat.shape
        )));
    }
    if f.meta("normalized") != Some("true") {
        return Err(CliError::new(format!(
            "{}: the latents are not normalised (encode them with a RAE that has statistics)",
            path.display()
        )));
    }
    let (n, dims) = (lat.shape[0], [lat.shape[1], lat.shape[2], lat.shape[3]]);
    let labels = match f.int("labels") {
        Some(l) if l.data.len() == n => labels_u32(&l.data, path)?,
        _ => {
            return Err(CliError::new(format!(
                "{} has no \"labels\" for its {n} latents",
                path.display()
            )))
        }
    };
    let classes = match f.meta("num_classes") {
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|&k| (1..=rae_core::limits::MAX_CLASSES).contains(&k))
            .ok_or_else(|| {
                CliError::new(format!(
                    "{}: metadata num_classes = {s:?} is not a class count",
                    path.display()
                ))
            })?,
        None => labels.iter().max().map_or(1, |m| *m as usize + 1),
    };
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(CliError::new(format!(
            "{}: label {bad} is outside the {classes} classes its metadata names",
            path.display()
        )));
    }
    // Moved out, not copied: the cache can be the size of a dataset.
    let latents = f
        .tensors
        .remove("latents")
        .map(|t| t.data)
        .unwrap_or_default();
    Ok(LatentCache {
        latents,
        dims,
        labels,
        classes,
    })
}

/// Writes latents `[N, C, h, w]` and their labels (metadata `format`, `normalized`, then
/// `extra`), atomically.
pub fn save_latents(
    path: &Path,
    shape: &[usize],
    latents: &[f32],
    labels: &[i64],
    normalized: bool,
    extra: &[(String, String)],
) -> CliResult<()> {
    let mut meta = vec![
        ("format".to_string(), "rae-latents".to_string()),
        ("normalized".to_string(), normalized.to_string()),
    ];
    meta.extend(extra.iter().cloned());
    let bytes = rae_core::safetensors::serialize(
        &[
            TensorOut::f32("latents", shape, latents),
            TensorOut::i64("labels", &[labels.len()], labels),
        ],
        &meta,
    )?;
    write_atomic(path, &bytes)
}

/// Uploads the tensor `noise` of the safetensors file `path`, which must have the shape
/// `want` (`[n, C, H, W]`).
pub fn load_noise<B: Backend>(b: &B, path: &Path, want: [usize; 4]) -> CliResult<Tensor<B>> {
    let f = load_tensor_file(path)?;
    let t = f
        .tensors
        .get("noise")
        .ok_or_else(|| CliError::new(format!("{} has no tensor \"noise\"", path.display())))?;
    if t.shape != want {
        return Err(CliError::new(format!(
            "{}: noise has shape {:?} but {} samples of latents {:?} need {:?}",
            path.display(),
            t.shape,
            want[0],
            &want[1..],
            want
        )));
    }
    Ok(b.upload(&t.data, &want)?)
}
