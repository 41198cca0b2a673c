//! Reading tensor files in either format the reference world uses: safetensors and PyTorch
//! `.pt` zip-pickles (detected by content, not by extension), JSON files, and the header of
//! a safetensors file alone.

use std::path::Path;

use rae_core::json::{parse_named, JsonValue};
use rae_core::nn::{HostTensor, HostTensors};
use rae_core::safetensors::SafeTensors;

use crate::errors::{io_error, CliError, CliResult};
use crate::pt::{into_tensors, looks_like_pt, read_pt, PtData};

/// The format a tensor file was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// safetensors.
    SafeTensors,
    /// A PyTorch zip checkpoint.
    PyTorch,
}

/// An integer tensor (labels, step counters).
#[derive(Debug, Clone, PartialEq)]
pub struct IntTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<i64>,
}

/// Everything read from a tensor file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorFile {
    /// Floating-point tensors as f32, by name (nested `.pt` dicts flattened with dots).
    pub tensors: HostTensors,
    /// Integer tensors by name.
    pub ints: Vec<(String, IntTensor)>,
    /// safetensors metadata (empty for `.pt`).
    pub metadata: Vec<(String, String)>,
    /// The format.
    pub format: Format,
    /// One line per tensor: `name dtype [shape]` (for `inspect`).
    pub listing: Vec<(String, String, Vec<usize>)>,
}

impl TensorFile {
    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An integer tensor by name.
    pub fn int(&self, name: &str) -> Option<&IntTensor> {
        self.ints.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Reads a file, naming it in errors.
pub fn read_bytes(path: &Path, what: &str) -> CliResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_error(&format!("cannot read {what}"), path, &e))
}

/// Reads a safetensors or `.pt` file.
pub fn load_tensor_file(path: &Path) -> CliResult<TensorFile> {
    let bytes = read_bytes(path, "the tensor file")?;
    let source = path.display().to_string();
    if looks_like_pt(&bytes) {
        let value = read_pt(&bytes, &source)?;
        drop(bytes);
        let mut tensors = HostTensors::new();
        let mut ints = Vec::new();
        let mut listing = Vec::new();
        for (name, t) in into_tensors(value) {
            listing.push((name.clone(), t.dtype.name().to_string(), t.shape.clone()));
            match t.data {
                PtData::F32(v) => tensors.insert(name, HostTensor::new(t.shape, v)?),
                PtData::I64(v) => ints.push((
                    name,
                    IntTensor {
                        shape: t.shape,
                        data: v,
                    },
                )),
            }
        }
        return Ok(TensorFile {
            tensors,
            ints,
            metadata: Vec::new(),
            format: Format::PyTorch,
            listing,
        });
    }
    let st = SafeTensors::parse(&bytes, &source).map_err(|e| {
        CliError::from(e).context("not a valid safetensors or PyTorch checkpoint file")
    })?;
    let mut tensors = HostTensors::new();
    let mut ints = Vec::new();
    let mut listing = Vec::new();
    for view in st.tensors() {
        listing.push((
            view.name.clone(),
            view.dtype.name().to_string(),
            view.shape.clone(),
        ));
        if view.dtype.is_float() {
            tensors.insert(
                view.name.clone(),
                HostTensor::new(view.shape.clone(), view.to_f32()?)?,
            );
        } else {
            ints.push((
                view.name.clone(),
                IntTensor {
                    shape: view.shape.clone(),
                    data: view.to_i64()?,
                },
            ));
        }
    }
    Ok(TensorFile {
        tensors,
        ints,
        metadata: st.metadata().to_vec(),
        format: Format::SafeTensors,
        listing,
    })
}

/// Reads and parses a JSON file.
pub fn load_json(path: &Path) -> CliResult<JsonValue> {
    let bytes = read_bytes(path, "the configuration")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::new(format!("{} is not UTF-8 text", path.display())))?;
    Ok(parse_named(&text, &path.display().to_string())?)
}

/// Picks the weights of a checkpoint: the `ema.` half when present (sampling uses the EMA,
/// §3.8), else `model.`, else the tensors as they are.
pub fn pick_weights(t: &HostTensors, prefer_ema: bool) -> HostTensors {
    let keys: &[&str] = if prefer_ema {
        &["ema.", "model.", "state_dict."]
    } else {
        &["model.", "state_dict."]
    };
    for k in keys {
        let sub = t.sub(k);
        if !sub.is_empty() {
            return sub;
        }
    }
    let mut out = HostTensors::new();
    for (n, v) in t.iter() {
        if !n.starts_with("opt.") && !n.starts_with("ema.") {
            out.insert(n, v.clone());
        }
    }
    out
}

/// Labels as u32 (non-negative, below 2³²), naming the file otherwise.
pub fn labels_u32(v: &[i64], path: &Path) -> CliResult<Vec<u32>> {
    v.iter()
        .map(|&l| {
            u32::try_from(l).map_err(|_| {
                CliError::new(format!(
                    "{}: label {l} is negative or too large",
                    path.display()
                ))
            })
        })
        .collect()
}

/// The tensor names and metadata of a safetensors file, reading only its header (cheap for
/// multi-gigabyte checkpoints). `None` for other formats or an unreadable header.
pub fn safetensors_header(path: &Path) -> Option<(Vec<String>, Vec<(String, String)>)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n > rae_core::safetensors::MAX_HEADER_LEN {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).ok()?;
    let v = rae_core::json::parse(std::str::from_utf8(&header).ok()?).ok()?;
    let mut names = Vec::new();
    let mut meta = Vec::new();
    let mut data_end = 0u64;
    for (k, val) in v.as_object()? {
        if k == rae_core::safetensors::METADATA_KEY {
            for (mk, mv) in val.as_object()? {
                meta.push((mk.clone(), mv.as_str()?.to_string()));
            }
        } else {
            let end = val.get("data_offsets")?.as_array()?.get(1)?.as_f64()?;
            data_end = data_end.max(end as u64);
            names.push(k.clone());
        }
    }
    // A truncated file has an intact header but too few data bytes: leave it to the full
    // reader, whose error names the file and the missing bytes.
    let file_len = f.metadata().ok()?.len();
    if file_len < 8 + n + data_end {
        return None;
    }
    Some((names, meta))
}
