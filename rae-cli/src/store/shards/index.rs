//! The index of a sharded latent cache (`DIR/index.json`): what the shards hold and in
//! which order, written last by `encode` and checked first by `train --latents DIR`.

use std::path::Path;

use rae_core::json::JsonValue;

use crate::errors::{CliError, CliResult};

/// File name of the index inside the cache folder.
pub const INDEX_FILE: &str = "index.json";
/// The `format` tag of the index.
pub const INDEX_FORMAT: &str = "rae-latent-shards";
/// The version of the layout this build writes and reads.
pub const INDEX_VERSION: usize = 1;
/// Largest index file read (a million shards' names fit easily).
const MAX_INDEX_BYTES: u64 = 256 << 20;
/// Most latents a cache may hold (ImageNet has 1.28 M; this leaves room for far more).
pub const MAX_LATENTS: usize = 1 << 34;
/// Most values of one latent (768 × 64 × 64 would be 3.1 M).
pub const MAX_LATENT_VALUES: usize = 1 << 26;

/// How latents are stored in the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatentDtype {
    /// 32-bit floats, exact.
    F32,
    /// bfloat16 (round to nearest even): half the size, 8 bits of mantissa.
    Bf16,
}

impl LatentDtype {
    /// Parses `f32` or `bf16` (the `--latent-dtype` flag).
    pub fn parse(s: &str) -> CliResult<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(LatentDtype::F32),
            "bf16" | "bfloat16" => Ok(LatentDtype::Bf16),
            _ => Err(CliError::new(format!(
                "--latent-dtype {s:?}: must be f32 or bf16"
            ))),
        }
    }

    /// The safetensors dtype name (`F32`, `BF16`).
    pub fn name(self) -> &'static str {
        match self {
            LatentDtype::F32 => "F32",
            LatentDtype::Bf16 => "BF16",
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            LatentDtype::F32 => 4,
            LatentDtype::Bf16 => 2,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(LatentDtype::F32),
            "BF16" => Some(LatentDtype::Bf16),
            _ => None,
        }
    }
}

/// One shard as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    /// File name inside the cache folder (no path separators).
    pub file: String,
    /// Latents in the shard.
    pub count: usize,
}

/// The index of a sharded cache.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardIndex {
    /// Latents over all shards.
    pub count: usize,
    /// Per-latent shape `[C, h, w]`.
    pub dims: [usize; 3],
    /// Storage type of the latents.
    pub dtype: LatentDtype,
    /// Number of classes (labels are below it).
    pub num_classes: usize,
    /// Class names (may be empty).
    pub classes: Vec<String>,
    /// Whether the latents are normalised with the RAE's statistics.
    pub normalized: bool,
    /// The shards, in dataset order.
    pub shards: Vec<ShardEntry>,
}

impl ShardIndex {
    /// The index as JSON text.
    pub fn to_json(&self) -> CliResult<String> {
        let num = |n: usize| JsonValue::from(n as f64);
        let shards = self.shards.iter().map(|s| {
            JsonValue::object([
                ("file", JsonValue::from(s.file.as_str())),
                ("count", num(s.count)),
            ])
        });
        let v = JsonValue::object([
            ("format", JsonValue::from(INDEX_FORMAT)),
            ("version", num(INDEX_VERSION)),
            ("count", num(self.count)),
            (
                "dims",
                JsonValue::array(self.dims.iter().map(|&d| d as f64)),
            ),
            ("dtype", JsonValue::from(self.dtype.name())),
            ("num_classes", num(self.num_classes)),
            ("normalized", JsonValue::from(self.normalized)),
            (
                "classes",
                JsonValue::array(self.classes.iter().map(String::as_str)),
            ),
            ("shards", JsonValue::array(shards)),
        ]);
        Ok(v.to_json_pretty()?)
    }

    /// Reads and checks `DIR/index.json`: format and version, sizes within limits, shard
    /// counts adding up, shard names plain file names. Errors name the file.
    pub fn read(dir: &Path) -> CliResult<ShardIndex> {
        let path = dir.join(INDEX_FILE);
        let src = path.display().to_string();
        let bad = |why: String| CliError::new(format!("{src}: {why}"));
        let meta = std::fs::metadata(&path).map_err(|e| {
            CliError::new(format!(
                "{} is not a sharded latent cache: cannot read {src} ({e}); write one with \
                 `encode --out DIR`",
                dir.display()
            ))
        })?;
        if meta.len() > MAX_INDEX_BYTES {
            return Err(bad(format!(
                "{} bytes is too large for a shard index (limit {MAX_INDEX_BYTES})",
                meta.len()
            )));
        }
        let json = super::super::tensor_file::load_json(&path)?;
        if json.get("format").and_then(JsonValue::as_str) != Some(INDEX_FORMAT) {
            return Err(bad(format!(
                "not a latent shard index (no \"format\": \"{INDEX_FORMAT}\")"
            )));
        }
        let uint = |key: &str| -> CliResult<usize> {
            json.get(key)
                .and_then(JsonValue::as_usize)
                .ok_or_else(|| bad(format!("\"{key}\" is missing or not a whole number")))
        };
        let version = uint("version")?;
        if version != INDEX_VERSION {
            return Err(bad(format!(
                "version {version}, but this build reads version {INDEX_VERSION}"
            )));
        }
        let count = uint("count")?;
        if count == 0 || count > MAX_LATENTS {
            return Err(bad(format!("count {count} is not in 1..={MAX_LATENTS}")));
        }
        let dims = parse_dims(json.get("dims")).map_err(bad)?;
        let dtype = json
            .get("dtype")
            .and_then(JsonValue::as_str)
            .and_then(LatentDtype::from_name)
            .ok_or_else(|| bad("\"dtype\" must be \"F32\" or \"BF16\"".into()))?;
        let num_classes = uint("num_classes")?;
        if !(1..=rae_core::limits::MAX_CLASSES).contains(&num_classes) {
            return Err(bad(format!(
                "num_classes {num_classes} is not in 1..={}",
                rae_core::limits::MAX_CLASSES
            )));
        }
        let normalized = json
            .get("normalized")
            .and_then(JsonValue::as_bool)
            .ok_or_else(|| bad("\"normalized\" is missing or not true/false".into()))?;
        let classes = match json.get("classes").and_then(JsonValue::as_array) {
            Some(a) => a
                .iter()
                .map(|c| c.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("\"classes\" must be a list of names".into()))?,
            None => Vec::new(),
        };
        let list = json
            .get("shards")
            .and_then(JsonValue::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad("\"shards\" is missing or empty".into()))?;
        let mut shards = Vec::with_capacity(list.len());
        let mut total = 0usize;
        for (k, s) in list.iter().enumerate() {
            let file = s.get("file").and_then(JsonValue::as_str).unwrap_or("");
            let n = s.get("count").and_then(JsonValue::as_usize).unwrap_or(0);
            if !plain_file_name(file) {
                return Err(bad(format!(
                    "shard {k} has file name {file:?}: must be a plain file name in the folder"
                )));
            }
            if n == 0 {
                return Err(bad(format!("shard {k} ({file}) has no positive \"count\"")));
            }
            total = total.saturating_add(n);
            shards.push(ShardEntry {
                file: file.to_string(),
                count: n,
            });
        }
        if total != count {
            return Err(bad(format!(
                "the shards hold {total} latents but \"count\" says {count}"
            )));
        }
        Ok(ShardIndex {
            count,
            dims,
            dtype,
            num_classes,
            classes,
            normalized,
            shards,
        })
    }
}

fn parse_dims(v: Option<&JsonValue>) -> Result<[usize; 3], String> {
    let a = v
        .and_then(JsonValue::as_array)
        .filter(|a| a.len() == 3)
        .ok_or("\"dims\" must be [C, h, w]")?;
    let mut dims = [0usize; 3];
    for (d, x) in dims.iter_mut().zip(a) {
        *d = x
            .as_usize()
            .filter(|&n| n > 0)
            .ok_or("\"dims\" must be three positive whole numbers")?;
    }
    let values = dims.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
    match values {
        Some(n) if n <= MAX_LATENT_VALUES => Ok(dims),
        _ => Err(format!(
            "dims {dims:?} make more than {MAX_LATENT_VALUES} values per latent"
        )),
    }
}

/// Whether `name` is a file name with no directory part (so a hostile index cannot point
/// outside the cache folder).
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name().is_some_and(|f| f == name)
}
