//! The sharded latent cache for stage 2 at ImageNet scale (1.28 M latents of 768×16×16,
//! about 800 GB in f32, 400 GB in bf16): a folder of safetensors shards
//! (`shard-NNNNN.safetensors`, tensors `latents [n, C, h, w]` in F32 or BF16 and
//! `labels [n]` I64) and `index.json` naming them in dataset order with their counts, the
//! latent shape, dtype, class count, class names, the normalised flag and a format/version
//! tag.
//!
//! `encode --out DIR` writes it with [`ShardWriter`] (each shard atomically, the index
//! last); `train --latents DIR` opens it with [`ShardSet`] (memory-mapped, every header
//! checked against the index before the first step) and reads latents one at a time.

mod index;
mod reader;
mod writer;

use std::path::Path;

pub use index::{LatentDtype, ShardEntry, ShardIndex, INDEX_FILE, INDEX_FORMAT, INDEX_VERSION};
pub use reader::ShardSet;
pub use writer::{ShardSpec, ShardWriter};

/// Latents per shard unless `--shard-size` says otherwise (at 768×16×16: 0.8 GB in f32).
pub const DEFAULT_SHARD_SIZE: usize = 1024;

/// Whether `path` names a sharded cache rather than a single safetensors file: an existing
/// folder, or a path whose extension is not `.safetensors`.
pub fn is_shard_dir(path: &Path) -> bool {
    path.is_dir()
        || !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}
