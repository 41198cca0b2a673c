//! The safetensors reader: [`SafeTensors::parse`] validates a whole file and hands out
//! [`TensorView`]s that borrow its bytes.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use half::{bf16, f16};

use super::{checked_numel, Dtype, MAX_HEADER_LEN, METADATA_KEY};
use crate::error::{Error, Result};
use crate::json::{self, JsonValue};
use crate::shape::Shape;

/// One tensor of a parsed file: its name, dtype, shape and raw little-endian bytes, borrowed
/// from the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorView<'a> {
    /// The tensor's name in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, row-major (empty for a scalar).
    pub shape: Vec<usize>,
    /// The raw bytes, `numel × dtype.size()` of them (not necessarily aligned).
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Number of elements (1 for a scalar; saturates at `usize::MAX` for a shape no file
    /// could hold).
    pub fn numel(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(usize::MAX)
    }

    /// The shape as a [`Shape`]; an error when the rank exceeds [`crate::shape::MAX_DIMS`].
    pub fn to_shape(&self) -> Result<Shape> {
        Shape::new(&self.shape)
    }

    /// The values as `f32`: F32 as is, F16 and BF16 exactly, F64 rounded to nearest. Any other
    /// dtype is an error naming the tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let d = self.data;
        Ok(match self.dtype {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::Bf16 => d
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(le8(c)) as f32)
                .collect(),
            other => {
                return Err(Error::invalid(
                    format!("tensor {}", self.name),
                    format!(
                        "dtype {other} is not a float type; to_f32 reads F32, F16, BF16 or F64{}",
                        if other.is_integer() {
                            " (use to_i64)"
                        } else {
                            ""
                        }
                    ),
                ))
            }
        })
    }

    /// The values as `i64`, from any integer dtype or BOOL (0 or 1). A float dtype is an
    /// error naming the tensor, as is a U64 value above `i64::MAX` or a BOOL byte other than
    /// 0 and 1.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        let d = self.data;
        let bad = |reason: String| Error::invalid(format!("tensor {}", self.name), reason);
        Ok(match self.dtype {
            Dtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(le8(c)))
                .collect(),
            Dtype::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Dtype::I16 => d
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            Dtype::I8 => d.iter().map(|&b| b as i8 as i64).collect(),
            Dtype::U8 => d.iter().map(|&b| b as i64).collect(),
            Dtype::U16 => d
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            Dtype::U32 => d
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Dtype::U64 => d
                .chunks_exact(8)
                .enumerate()
                .map(|(i, c)| {
                    let u = u64::from_le_bytes(le8(c));
                    i64::try_from(u)
                        .map_err(|_| bad(format!("U64 element {i} = {u} does not fit in an i64")))
                })
                .collect::<Result<_>>()?,
            Dtype::Bool => d
                .iter()
                .enumerate()
                .map(|(i, &b)| match b {
                    0 | 1 => Ok(b as i64),
                    _ => Err(bad(format!("BOOL element {i} is the byte {b}, not 0 or 1"))),
                })
                .collect::<Result<_>>()?,
            other => {
                return Err(bad(format!(
                    "dtype {other} is not an integer type; to_i64 reads integer and BOOL tensors{}",
                    if other.is_float() {
                        " (use to_f32)"
                    } else {
                        ""
                    }
                )))
            }
        })
    }
}

fn le8(c: &[u8]) -> [u8; 8] {
    [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]
}

/// A parsed safetensors file: the tensors in header order, borrowing their bytes from the
/// file, and the metadata.
#[derive(Debug, Clone)]
pub struct SafeTensors<'a> {
    source: String,
    tensors: Vec<TensorView<'a>>,
    index: BTreeMap<String, usize>,
    metadata: Vec<(String, String)>,
}

/// What an error in file `source` looks like.
fn ferr(source: &str, reason: impl Into<String>) -> Error {
    Error::format(source, reason)
}

impl<'a> SafeTensors<'a> {
    /// Parses and validates a whole file held in `bytes`. `source` (a file name) is the
    /// source of every error, whose reason names the tensor where there is one.
    pub fn parse(bytes: &'a [u8], source: &str) -> Result<SafeTensors<'a>> {
        let total = bytes.len();
        let Some(prefix) = bytes.first_chunk::<8>() else {
            return Err(ferr(
                source,
                format!(
                    "not a safetensors file: {total} bytes, shorter than the 8-byte header length"
                ),
            ));
        };
        let n = u64::from_le_bytes(*prefix);
        if n > MAX_HEADER_LEN {
            return Err(ferr(
                source,
                format!(
                    "safetensors header length {n} is larger than the {MAX_HEADER_LEN}-byte limit \
                     (not a safetensors file, or corrupt)"
                ),
            ));
        }
        let rest = total - 8;
        if n > rest as u64 {
            return Err(ferr(
                source,
                format!(
                    "safetensors header length {n} is larger than the {rest} bytes after the \
                     length prefix (file truncated?)"
                ),
            ));
        }
        let n = n as usize;
        let header_bytes = &bytes[8..8 + n];
        let data = &bytes[8 + n..];

        let header = core::str::from_utf8(header_bytes).map_err(|e| {
            ferr(
                source,
                format!(
                    "safetensors header is not valid UTF-8 (at header byte {})",
                    e.valid_up_to()
                ),
            )
        })?;
        let header = json::parse(header).map_err(|e| match e {
            Error::Format { reason, .. } => ferr(
                source,
                format!("safetensors header is not valid JSON: {reason}"),
            ),
            other => other,
        })?;
        let JsonValue::Object(members) = header else {
            return Err(ferr(
                source,
                format!(
                    "safetensors header is a JSON {}, not an object",
                    header.type_name()
                ),
            ));
        };

        let mut tensors = Vec::with_capacity(members.len());
        let mut ranges = Vec::with_capacity(members.len());
        let mut index = BTreeMap::new();
        let mut metadata = None;
        for (name, info) in &members {
            if name == METADATA_KEY {
                if metadata.is_some() {
                    return Err(ferr(source, format!("{METADATA_KEY} appears twice")));
                }
                metadata = Some(parse_metadata(info, source)?);
                continue;
            }
            let (dtype, shape, begin, end) = parse_entry(name, info, data.len(), source)?;
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(ferr(
                    source,
                    format!("tensor {name} appears twice in the header"),
                ));
            }
            ranges.push((begin, end, tensors.len()));
            tensors.push(TensorView {
                name: name.clone(),
                dtype,
                shape,
                data: &data[begin..end],
            });
        }

        // The ranges, in offset order, must tile the data buffer: no overlap, no gap.
        ranges.sort_unstable();
        let mut cursor = 0usize;
        let mut prev: Option<usize> = None;
        for &(begin, end, t) in &ranges {
            if begin < cursor {
                let other = prev.map_or("", |p| tensors[p].name.as_str());
                return Err(ferr(
                    source,
                    format!(
                        "tensor {} (data bytes {begin}..{end}) overlaps tensor {other} \
                         (which ends at byte {cursor})",
                        tensors[t].name
                    ),
                ));
            }
            if begin > cursor {
                return Err(ferr(
                    source,
                    format!(
                        "data bytes {cursor}..{begin} (before tensor {}) belong to no tensor",
                        tensors[t].name
                    ),
                ));
            }
            if end > begin {
                cursor = end;
                prev = Some(t);
            }
        }
        if cursor != data.len() {
            return Err(ferr(
                source,
                format!(
                    "data bytes {cursor}..{} at the end of the file belong to no tensor",
                    data.len()
                ),
            ));
        }

        Ok(SafeTensors {
            source: source.to_owned(),
            tensors,
            index,
            metadata: metadata.unwrap_or_default(),
        })
    }

    /// The file name given to [`parse`](Self::parse).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of tensors (the metadata entry not counted).
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Tensor names in header (file) order.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.iter().map(|t| t.name.as_str()).collect()
    }

    /// All tensors in header order.
    pub fn tensors(&self) -> &[TensorView<'a>] {
        &self.tensors
    }

    /// The tensor called `name`, if the file has it.
    pub fn get(&self, name: &str) -> Option<TensorView<'a>> {
        self.index.get(name).map(|&i| self.tensors[i].clone())
    }

    /// The tensor called `name`; [`Error::MissingTensors`] naming the file when absent.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'a>> {
        self.get(name).ok_or_else(|| Error::MissingTensors {
            model: self.source.clone(),
            names: alloc::vec![name.to_string()],
        })
    }

    /// [`TensorView::to_f32`] of tensor `name`, with errors naming the file.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.tensor(name)?
            .to_f32()
            .map_err(|e| self.in_file(name, e))
    }

    /// [`TensorView::to_i64`] of tensor `name`, with errors naming the file.
    pub fn read_i64(&self, name: &str) -> Result<Vec<i64>> {
        self.tensor(name)?
            .to_i64()
            .map_err(|e| self.in_file(name, e))
    }

    fn in_file(&self, name: &str, e: Error) -> Error {
        match e {
            Error::InvalidArgument { reason, .. } => {
                ferr(&self.source, format!("tensor {name}: {reason}"))
            }
            other => other,
        }
    }

    /// The `__metadata__` pairs in file order (empty when the file has none).
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The metadata value of `key`, if present.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_metadata(info: &JsonValue, source: &str) -> Result<Vec<(String, String)>> {
    let Some(members) = info.as_object() else {
        return Err(ferr(
            source,
            format!(
                "{METADATA_KEY} is a JSON {}, not an object of strings",
                info.type_name()
            ),
        ));
    };
    let mut out: Vec<(String, String)> = Vec::with_capacity(members.len());
    for (k, v) in members {
        let Some(s) = v.as_str() else {
            return Err(ferr(
                source,
                format!(
                    "{METADATA_KEY} value of {k:?} is a JSON {}, not a string",
                    v.type_name()
                ),
            ));
        };
        if out.iter().any(|(seen, _)| seen == k) {
            return Err(ferr(
                source,
                format!("{METADATA_KEY} key {k:?} appears twice"),
            ));
        }
        out.push((k.clone(), s.to_owned()));
    }
    Ok(out)
}

/// Validates one header entry against a data buffer of `data_len` bytes; returns its dtype,
/// shape and byte range.
fn parse_entry(
    name: &str,
    info: &JsonValue,
    data_len: usize,
    source: &str,
) -> Result<(Dtype, Vec<usize>, usize, usize)> {
    let bad = |reason: String| ferr(source, format!("tensor {name}: {reason}"));
    let Some(fields) = info.as_object() else {
        return Err(bad(format!(
            "header entry is a JSON {}, not an object",
            info.type_name()
        )));
    };
    let (mut dtype, mut shape, mut offsets) = (None, None, None);
    for (k, v) in fields {
        let slot = match k.as_str() {
            "dtype" => &mut dtype,
            "shape" => &mut shape,
            "data_offsets" => &mut offsets,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(bad(format!("field {k} appears twice")));
        }
    }
    let missing = |what: &str| bad(format!("header entry has no {what}"));
    let dtype = dtype.ok_or_else(|| missing("dtype"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;
    let offsets = offsets.ok_or_else(|| missing("data_offsets"))?;

    let dtype = match dtype.as_str() {
        Some(s) => Dtype::from_name(s).ok_or_else(|| bad(format!("unknown dtype {s:?}")))?,
        None => {
            return Err(bad(format!(
                "dtype is a JSON {}, not a string",
                dtype.type_name()
            )))
        }
    };
    let uints = |v: &JsonValue, what: &str| -> Result<Vec<usize>> {
        let items = v
            .as_array()
            .ok_or_else(|| bad(format!("{what} is a JSON {}, not an array", v.type_name())))?;
        items
            .iter()
            .map(|x| {
                x.as_usize().ok_or_else(|| {
                    bad(format!(
                        "{what} holds {x}, which is not an integer in 0..=2^53-1"
                    ))
                })
            })
            .collect()
    };
    let shape = uints(shape, "shape")?;
    let offsets = uints(offsets, "data_offsets")?;
    let &[begin, end] = offsets.as_slice() else {
        return Err(bad(format!(
            "data_offsets has {} numbers, not 2",
            offsets.len()
        )));
    };
    if begin > end {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] begin after they end"
        )));
    }
    if end > data_len {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] reach past the {data_len}-byte data buffer \
             (file truncated?)"
        )));
    }
    let nbytes = checked_numel(&shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| {
            bad(format!(
                "shape {shape:?} of {dtype} overflows the byte count"
            ))
        })?;
    if end - begin != nbytes {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] span {} bytes, but shape {shape:?} of {dtype} \
             needs {nbytes}",
            end - begin
        )));
    }
    Ok((dtype, shape, begin, end))
}
