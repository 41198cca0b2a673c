//! Writing a sharded latent cache: latents arrive in dataset order, a shard is written
//! (atomically) each time `shard_size` of them have gathered, and the index last, so a
//! killed `encode` never leaves an index naming shards that are missing or stale.

use std::path::{Path, PathBuf};

use rae_core::safetensors::TensorOut;

use super::super::atomic::write_atomic;
use super::index::{LatentDtype, ShardEntry, ShardIndex, INDEX_FILE, MAX_LATENT_VALUES};
use crate::errors::{io_error, CliError, CliResult};

/// What the cache will hold, fixed before the first latent.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    /// Per-latent shape `[C, h, w]`.
    pub dims: [usize; 3],
    /// Storage type.
    pub dtype: LatentDtype,
    /// Latents per shard (the last shard may hold fewer).
    pub shard_size: usize,
    /// Whether the latents are normalised.
    pub normalized: bool,
    /// Class names, index = label.
    pub classes: Vec<String>,
}

/// Writes shards as latents arrive; [`ShardWriter::finish`] writes the index.
#[derive(Debug)]
pub struct ShardWriter {
    dir: PathBuf,
    spec: ShardSpec,
    latents: Vec<f32>,
    labels: Vec<i64>,
    shards: Vec<ShardEntry>,
    count: usize,
}

impl ShardWriter {
    /// Starts a cache in `dir` (created if missing). An index already there is removed
    /// first, so that the folder is never described by an index that does not match its
    /// shards while they are being rewritten.
    pub fn create(dir: &Path, spec: ShardSpec) -> CliResult<ShardWriter> {
        let values = spec.dims.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
        if !values.is_some_and(|v| (1..=MAX_LATENT_VALUES).contains(&v)) {
            return Err(CliError::new(format!(
                "latents of shape {:?} cannot be cached",
                spec.dims
            )));
        }
        if spec.shard_size == 0 {
            return Err(CliError::new("--shard-size must be at least 1"));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error("cannot create the latent cache folder", dir, &e))?;
        let index = dir.join(INDEX_FILE);
        match std::fs::remove_file(&index) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("cannot remove the old index", &index, &e)),
        }
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            spec,
            latents: Vec::new(),
            labels: Vec::new(),
            shards: Vec::new(),
            count: 0,
        })
    }

    /// Adds latents `[n, C, h, w]` (flattened) and their `n` labels.
    pub fn push(&mut self, latents: &[f32], labels: &[i64]) -> CliResult<()> {
        let values: usize = self.spec.dims.iter().product();
        if latents.len() != labels.len() * values {
            return Err(CliError::new(format!(
                "{} latent values for {} labels of latents {:?}",
                latents.len(),
                labels.len(),
                self.spec.dims
            )));
        }
        for (k, &l) in labels.iter().enumerate() {
            self.latents
                .extend_from_slice(&latents[k * values..(k + 1) * values]);
            self.labels.push(l);
            if self.labels.len() == self.spec.shard_size {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes the gathered latents as the next shard.
    fn flush(&mut self) -> CliResult<()> {
        let n = self.labels.len();
        if n == 0 {
            return Ok(());
        }
        let file = format!("shard-{:05}.safetensors", self.shards.len());
        let [c, h, w] = self.spec.dims;
        let shape = [n, c, h, w];
        let lat = match self.spec.dtype {
            LatentDtype::F32 => TensorOut::f32("latents", &shape, &self.latents),
            LatentDtype::Bf16 => TensorOut::f32_as_bf16("latents", &shape, &self.latents),
        };
        let meta = vec![
            ("format".to_string(), "rae-latent-shard".to_string()),
            ("normalized".to_string(), self.spec.normalized.to_string()),
            ("shard".to_string(), self.shards.len().to_string()),
        ];
        let bytes = rae_core::safetensors::serialize(
            &[lat, TensorOut::i64("labels", &[n], &self.labels)],
            &meta,
        )?;
        write_atomic(&self.dir.join(&file), &bytes)?;
        self.shards.push(ShardEntry { file, count: n });
        self.count += n;
        self.latents.clear();
        self.labels.clear();
        Ok(())
    }

    /// Writes the last shard, then the index (atomically); returns the index.
    pub fn finish(mut self) -> CliResult<ShardIndex> {
        self.flush()?;
        if self.count == 0 {
            return Err(CliError::new(format!(
                "no latents to write to {}",
                self.dir.display()
            )));
        }
        let classes = self.spec.classes.clone();
        let index = ShardIndex {
            count: self.count,
            dims: self.spec.dims,
            dtype: self.spec.dtype,
            num_classes: classes.len().max(1),
            classes,
            normalized: self.spec.normalized,
            shards: std::mem::take(&mut self.shards),
        };
        write_atomic(&self.dir.join(INDEX_FILE), index.to_json()?.as_bytes())?;
        Ok(index)
    }
}
