//! Saved Inception statistics of an image set (`eval --save-stats OUT`, read back by
//! `eval --ref OUT`): a safetensors file with the names of ADM's reference batches,
//! `mu` `[2048]`, `sigma` `[2048, 2048]`, `mu_s`, `sigma_s` (spatial, 2023-d) as F64, and,
//! for precision and recall, the pool features themselves as `pool` `[n, 2048]` F32.
//! Metadata `format = rae-eval-stats`, `count` = number of images.

use std::path::Path;

use rae_core::metrics::GaussianStats;
use rae_core::safetensors::{serialize, Dtype, SafeTensors, TensorOut};

use super::atomic::write_atomic;
use super::tensor_file::read_bytes;
use crate::errors::{CliError, CliResult};

/// The value of the `format` metadata key.
pub const EVAL_STATS_FORMAT: &str = "rae-eval-stats";

/// Statistics of one image set.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalStats {
    /// Images seen.
    pub count: usize,
    /// Pool-3 statistics (FID).
    pub pool: GaussianStats,
    /// Spatial statistics (sFID), when computed.
    pub spatial: Option<GaussianStats>,
    /// Pool features `[count, dim]` (precision and recall), when kept.
    pub pool_features: Option<Vec<f32>>,
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `s` to `path` (atomically).
pub fn save_eval_stats(path: &Path, s: &EvalStats) -> CliResult<()> {
    let d = s.pool.dim();
    let shapes = [vec![d], vec![d, d]];
    let (mu, sigma) = (f64_bytes(&s.pool.mu), f64_bytes(&s.pool.sigma));
    let mut out = vec![
        TensorOut::raw("mu", &shapes[0], Dtype::F64, &mu),
        TensorOut::raw("sigma", &shapes[1], Dtype::F64, &sigma),
    ];
    let ds = s.spatial.as_ref().map_or(0, GaussianStats::dim);
    let sshapes = [vec![ds], vec![ds, ds]];
    let (mu_s, sigma_s) = s
        .spatial
        .as_ref()
        .map(|g| (f64_bytes(&g.mu), f64_bytes(&g.sigma)))
        .unwrap_or_default();
    if s.spatial.is_some() {
        out.push(TensorOut::raw("mu_s", &sshapes[0], Dtype::F64, &mu_s));
        out.push(TensorOut::raw("sigma_s", &sshapes[1], Dtype::F64, &sigma_s));
    }
    let pshape = [s.count, d];
    if let Some(p) = &s.pool_features {
        if p.len() != s.count * d {
            return Err(CliError::new(format!(
                "save_eval_stats: {} pool values are not {} rows of {d}",
                p.len(),
                s.count
            )));
        }
        out.push(TensorOut::f32("pool", &pshape, p));
    }
    let meta = vec![
        ("format".to_string(), EVAL_STATS_FORMAT.to_string()),
        ("count".to_string(), s.count.to_string()),
    ];
    write_atomic(path, &serialize(&out, &meta)?)
}

fn read_f64(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> CliResult<Vec<f64>> {
    let t = st.tensor(name)?;
    if t.shape != shape {
        return Err(CliError::new(format!(
            "{}: tensor {name} has shape {:?}, expected {shape:?}",
            st.source(),
            t.shape
        )));
    }
    match t.dtype {
        Dtype::F64 => Ok(t
            .data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()),
        _ => Ok(t.to_f32()?.into_iter().map(f64::from).collect()),
    }
}

fn gaussian(st: &SafeTensors<'_>, mu: &str, sigma: &str) -> CliResult<GaussianStats> {
    let d = st.tensor(mu)?.shape.first().copied().unwrap_or(0);
    Ok(GaussianStats {
        mu: read_f64(st, mu, &[d])?,
        sigma: read_f64(st, sigma, &[d, d])?,
    })
}

/// Whether `bytes` are a safetensors file written by [`save_eval_stats`].
pub fn is_eval_stats(bytes: &[u8], path: &Path) -> bool {
    SafeTensors::parse(bytes, &path.display().to_string())
        .map(|st| st.metadata_value("format") == Some(EVAL_STATS_FORMAT))
        .unwrap_or(false)
}

/// Reads a file written by [`save_eval_stats`].
pub fn load_eval_stats(path: &Path) -> CliResult<EvalStats> {
    let bytes = read_bytes(path, "the statistics file")?;
    let name = path.display().to_string();
    let st = SafeTensors::parse(&bytes, &name)?;
    if st.metadata_value("format") != Some(EVAL_STATS_FORMAT) {
        return Err(CliError::new(format!(
            "{name} is not a statistics file of `rae-cli eval --save-stats` (metadata format \
             is not {EVAL_STATS_FORMAT})"
        )));
    }
    let count = st
        .metadata_value("count")
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| CliError::new(format!("{name}: metadata lacks a numeric count")))?;
    let pool = gaussian(&st, "mu", "sigma")?;
    let spatial = match st.get("mu_s") {
        Some(_) => Some(gaussian(&st, "mu_s", "sigma_s")?),
        None => None,
    };
    let pool_features = match st.get("pool") {
        Some(t) if t.shape == [count, pool.dim()] => Some(t.to_f32()?),
        Some(t) => {
            return Err(CliError::new(format!(
                "{name}: pool has shape {:?}, expected [{count}, {}]",
                t.shape,
                pool.dim()
            )))
        }
        None => None,
    };
    Ok(EvalStats {
        count,
        pool,
        spatial,
        pool_features,
    })
}
