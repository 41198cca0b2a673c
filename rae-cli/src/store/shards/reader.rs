//! Reading a sharded latent cache: every shard memory-mapped and its header checked against
//! the index before the first step; latents are then copied out one at a time, so the cache
//! is never held in memory as a whole (the operating system pages it in and out).

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rae_core::safetensors::{Dtype, Header, TensorInfo};

use super::index::{LatentDtype, ShardIndex};
use crate::errors::{io_error, CliError, CliResult};

/// One mapped shard.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of the first latent in `map`.
    latents_at: usize,
}

/// A sharded latent cache opened for reading.
#[derive(Debug)]
pub struct ShardSet {
    index: ShardIndex,
    shards: Vec<Shard>,
    /// Index of the first latent of each shard (ascending), for the lookup of a latent.
    starts: Vec<usize>,
    labels: Vec<u32>,
    /// Values per latent.
    values: usize,
}

impl ShardSet {
    /// Opens the cache in `dir`: reads the index, maps every shard and checks its header
    /// (dtype, shape, count, tensor ranges within the file) and its labels (within the
    /// classes) against the index. Any mismatch is an error naming the shard.
    pub fn open(dir: &Path) -> CliResult<ShardSet> {
        let index = ShardIndex::read(dir)?;
        if !index.normalized {
            return Err(CliError::new(format!(
                "{}: the latents are not normalised (encode them with a RAE that has statistics)",
                dir.display()
            )));
        }
        let values: usize = index.dims.iter().product();
        let mut shards = Vec::with_capacity(index.shards.len());
        let mut starts = Vec::with_capacity(index.shards.len());
        let mut labels = Vec::with_capacity(index.count);
        let mut start = 0usize;
        for entry in &index.shards {
            let path = dir.join(&entry.file);
            let (shard, shard_labels) = open_shard(&path, &index, entry.count, values)?;
            labels.extend(shard_labels);
            shards.push(shard);
            starts.push(start);
            start += entry.count;
        }
        Ok(ShardSet {
            index,
            shards,
            starts,
            labels,
            values,
        })
    }

    /// The index the cache was opened with.
    pub fn index(&self) -> &ShardIndex {
        &self.index
    }

    /// Number of latents.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the cache is empty (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Per-latent shape `[C, h, w]`.
    pub fn dims(&self) -> [usize; 3] {
        self.index.dims
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.index.num_classes
    }

    /// Label of latent `i`.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// Copies latent `i` (as f32) into `out`, which must hold exactly one latent.
    pub fn read_into(&self, i: usize, out: &mut [f32]) -> CliResult<()> {
        if i >= self.len() || out.len() != self.values {
            return Err(CliError::new(format!(
                "latent {i} of {} requested into a buffer of {} values ({} wanted)",
                self.len(),
                out.len(),
                self.values
            )));
        }
        let k = self.starts.partition_point(|&s| s <= i) - 1;
        let shard = &self.shards[k];
        let size = self.index.dtype.size();
        let at = shard.latents_at + (i - self.starts[k]) * self.values * size;
        let bytes = shard.map.get(at..at + self.values * size).ok_or_else(|| {
            CliError::new(format!(
                "{}: latent {} lies past the end of the file (was it truncated after opening?)",
                shard.path.display(),
                i - self.starts[k]
            ))
        })?;
        match self.index.dtype {
            LatentDtype::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            LatentDtype::Bf16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
        }
        Ok(())
    }
}

/// Maps and checks one shard; returns it and its labels.
fn open_shard(
    path: &Path,
    index: &ShardIndex,
    count: usize,
    values: usize,
) -> CliResult<(Shard, Vec<u32>)> {
    let src = path.display().to_string();
    let bad = |why: String| CliError::new(format!("{src}: {why}"));
    let file = File::open(path).map_err(|e| io_error("cannot open the latent shard", path, &e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error("cannot read the size of the latent shard", path, &e))?
        .len();
    if len < 8 {
        return Err(bad(format!(
            "{len} bytes: truncated (not a safetensors shard)"
        )));
    }
    // SAFETY: the map is read-only and the cache is treated as immutable while training
    // reads it: `encode` never rewrites a shard in place (it writes a new file and renames
    // it), so the mapped bytes cannot change under us unless another program truncates or
    // edits the file, which the documentation of `--latents` warns against.
    let map = unsafe { Mmap::map(&file) }
        .map_err(|e| io_error("cannot memory-map the latent shard", path, &e))?;
    let n = Header::declared_len(&map, len, &src)?;
    let header = Header::parse(&map[8..8 + n], len - 8 - n as u64, &src)?;
    let lat = tensor(&header, "latents", &src)?;
    let want_dtype = match index.dtype {
        LatentDtype::F32 => Dtype::F32,
        LatentDtype::Bf16 => Dtype::Bf16,
    };
    if lat.dtype != want_dtype {
        return Err(bad(format!(
            "latents are {} but the index says {}",
            lat.dtype.name(),
            index.dtype.name()
        )));
    }
    let want_shape = [count, index.dims[0], index.dims[1], index.dims[2]];
    if lat.shape != want_shape {
        return Err(bad(format!(
            "latents have shape {:?} but the index says {count} latents of {:?}",
            lat.shape, index.dims
        )));
    }
    let lab = tensor(&header, "labels", &src)?;
    if lab.dtype != Dtype::I64 || lab.shape != [count] {
        return Err(bad(format!(
            "labels are {} {:?}, expected I64 [{count}]",
            lab.dtype.name(),
            lab.shape
        )));
    }
    let data = header.data_start();
    let lab_bytes = &map[data + lab.data_offsets[0]..data + lab.data_offsets[1]];
    let mut labels = Vec::with_capacity(count);
    for (j, b) in lab_bytes.chunks_exact(8).enumerate() {
        let l = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        if l < 0 || l as u64 >= index.num_classes as u64 {
            return Err(bad(format!(
                "label {l} of latent {j} is outside the {} classes of the index",
                index.num_classes
            )));
        }
        labels.push(l as u32);
    }
    debug_assert_eq!(
        lat.data_offsets[1] - lat.data_offsets[0],
        count * values * index.dtype.size()
    );
    let latents_at = data + lat.data_offsets[0];
    Ok((
        Shard {
            path: path.to_path_buf(),
            map,
            latents_at,
        },
        labels,
    ))
}

fn tensor<'h>(header: &'h Header, name: &str, src: &str) -> CliResult<&'h TensorInfo> {
    header
        .get(name)
        .ok_or_else(|| CliError::new(format!("{src} has no tensor \"{name}\"")))
}
