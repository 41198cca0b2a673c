//! The safetensors header: [`Header::parse`] validates the JSON table of tensors against the
//! length of the data buffer, without needing the data itself (so a tool can list a
//! multi-gigabyte file after reading only its first bytes).

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{checked_numel, Dtype, MAX_HEADER_LEN, METADATA_KEY};
use crate::error::{Error, Result};
use crate::json::{self, JsonValue};

/// What an error in file `source` looks like.
pub(super) fn ferr(source: &str, reason: impl Into<String>) -> Error {
    Error::format(source, reason)
}

/// One tensor's entry in a header: name, dtype, shape and its byte range in the data buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, row-major (empty for a scalar).
    pub shape: Vec<usize>,
    /// `[begin, end)` in bytes, relative to the start of the data buffer.
    pub data_offsets: [usize; 2],
}

/// A validated safetensors header: the tensors in header order and the metadata.
///
/// Every check of [`SafeTensors::parse`](super::SafeTensors::parse) that does not need the
/// tensor bytes has been made: entries well formed, names and metadata keys unique, byte
/// ranges matching shapes and dtypes and tiling the data buffer exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    tensors: Vec<TensorInfo>,
    /// Indices into `tensors`, sorted by name (for lookups in O(log n)).
    by_name: Vec<usize>,
    metadata: Vec<(String, String)>,
    header_len: usize,
    data_len: usize,
}

impl Header {
    /// The header length `N` that the first 8 bytes of a file of `file_len` bytes declare,
    /// checked against [`MAX_HEADER_LEN`] and the file length. `prefix` may be the whole
    /// file or only its start; it needs at least 8 bytes.
    pub fn declared_len(prefix: &[u8], file_len: u64, source: &str) -> Result<usize> {
        let Some(first) = prefix.first_chunk::<8>().filter(|_| file_len >= 8) else {
            return Err(ferr(
                source,
                format!(
                    "not a safetensors file: {file_len} bytes, shorter than the 8-byte header \
                     length"
                ),
            ));
        };
        let n = u64::from_le_bytes(*first);
        if n > MAX_HEADER_LEN {
            return Err(ferr(
                source,
                format!(
                    "safetensors header length {n} is larger than the {MAX_HEADER_LEN}-byte limit \
                     (not a safetensors file, or corrupt)"
                ),
            ));
        }
        let rest = file_len - 8;
        if n > rest {
            return Err(ferr(
                source,
                format!(
                    "safetensors header length {n} is larger than the {rest} bytes after the \
                     length prefix (file truncated?)"
                ),
            ));
        }
        // n <= MAX_HEADER_LEN, so it fits in any usize of 32 bits or more.
        usize::try_from(n).map_err(|_| ferr(source, "header length does not fit in memory"))
    }

    /// Parses and validates the `header` bytes (the `N` bytes after the length prefix) of a
    /// file whose data buffer (everything after the header) is `data_len` bytes long.
    pub fn parse(header: &[u8], data_len: u64, source: &str) -> Result<Header> {
        let data_len = usize::try_from(data_len).map_err(|_| {
            ferr(
                source,
                format!("data buffer of {data_len} bytes does not fit in memory addresses"),
            )
        })?;
        let text = core::str::from_utf8(header).map_err(|e| {
            ferr(
                source,
                format!(
                    "safetensors header is not valid UTF-8 (at header byte {})",
                    e.valid_up_to()
                ),
            )
        })?;
        let value = json::parse(text).map_err(|e| match e {
            Error::Format { reason, .. } => ferr(
                source,
                format!("safetensors header is not valid JSON: {reason}"),
            ),
            other => other,
        })?;
        let JsonValue::Object(members) = value else {
            return Err(ferr(
                source,
                format!(
                    "safetensors header is a JSON {}, not an object",
                    value.type_name()
                ),
            ));
        };

        let mut tensors: Vec<TensorInfo> = Vec::new();
        tensors
            .try_reserve_exact(members.len())
            .map_err(|_| out_of_memory(source, members.len()))?;
        let mut metadata = None;
        for (name, info) in members {
            if name == METADATA_KEY {
                if metadata.is_some() {
                    return Err(ferr(source, format!("{METADATA_KEY} appears twice")));
                }
                metadata = Some(parse_metadata(info, source)?);
                continue;
            }
            let (dtype, shape, data_offsets) = parse_entry(&name, &info, data_len, source)?;
            tensors.push(TensorInfo {
                name,
                dtype,
                shape,
                data_offsets,
            });
        }

        // Names must be unique: sort an index by name and compare neighbours. The first
        // repeated name in header order is the one reported.
        let mut by_name: Vec<usize> = Vec::new();
        by_name
            .try_reserve_exact(tensors.len())
            .map_err(|_| out_of_memory(source, tensors.len()))?;
        by_name.extend(0..tensors.len());
        by_name.sort_by(|&a, &b| tensors[a].name.cmp(&tensors[b].name).then(a.cmp(&b)));
        let repeated = by_name
            .windows(2)
            .filter(|w| tensors[w[0]].name == tensors[w[1]].name)
            .map(|w| w[1])
            .min();
        if let Some(t) = repeated {
            return Err(ferr(
                source,
                format!("tensor {} appears twice in the header", tensors[t].name),
            ));
        }

        check_tiling(&tensors, data_len, source)?;
        Ok(Header {
            tensors,
            by_name,
            metadata: metadata.unwrap_or_default(),
            header_len: header.len(),
            data_len,
        })
    }

    /// The tensors in header order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The index in [`tensors`](Self::tensors) of the tensor called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|&i| self.tensors[i].name.as_str().cmp(name))
            .ok()
            .map(|k| self.by_name[k])
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.position(name).map(|i| &self.tensors[i])
    }

    /// The `__metadata__` pairs in file order (empty when the file has none).
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The header's length `N` in bytes (without the 8-byte prefix).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Where the data buffer starts in the file: `8 + N`.
    pub fn data_start(&self) -> usize {
        8 + self.header_len
    }

    /// The data buffer's length in bytes.
    pub fn data_len(&self) -> usize {
        self.data_len
    }

    /// Takes the header apart: tensors in header order, the by-name index and the metadata.
    pub(super) fn into_parts(self) -> (Vec<TensorInfo>, Vec<usize>, Vec<(String, String)>) {
        (self.tensors, self.by_name, self.metadata)
    }
}

fn out_of_memory(source: &str, n: usize) -> Error {
    ferr(
        source,
        format!("out of memory while indexing the {n} entries of the safetensors header"),
    )
}

/// The byte ranges, in offset order, must tile the data buffer: no overlap, no gap.
fn check_tiling(tensors: &[TensorInfo], data_len: usize, source: &str) -> Result<()> {
    let mut ranges: Vec<(usize, usize, usize)> = Vec::new();
    ranges
        .try_reserve_exact(tensors.len())
        .map_err(|_| out_of_memory(source, tensors.len()))?;
    ranges.extend(
        tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.data_offsets[0], t.data_offsets[1], i)),
    );
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
    if cursor != data_len {
        return Err(ferr(
            source,
            format!("data bytes {cursor}..{data_len} at the end of the file belong to no tensor"),
        ));
    }
    Ok(())
}

fn parse_metadata(info: JsonValue, source: &str) -> Result<Vec<(String, String)>> {
    let JsonValue::Object(members) = info else {
        return Err(ferr(
            source,
            format!(
                "{METADATA_KEY} is a JSON {}, not an object of strings",
                info.type_name()
            ),
        ));
    };
    let mut seen = BTreeSet::new();
    let mut out: Vec<(String, String)> = Vec::new();
    out.try_reserve_exact(members.len())
        .map_err(|_| out_of_memory(source, members.len()))?;
    for (k, v) in members {
        let JsonValue::String(s) = v else {
            return Err(ferr(
                source,
                format!(
                    "{METADATA_KEY} value of {k:?} is a JSON {}, not a string",
                    v.type_name()
                ),
            ));
        };
        if !seen.insert(k.clone()) {
            return Err(ferr(
                source,
                format!("{METADATA_KEY} key {k:?} appears twice"),
            ));
        }
        out.push((k, s));
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
) -> Result<(Dtype, Vec<usize>, [usize; 2])> {
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
        let mut out = Vec::new();
        out.try_reserve_exact(items.len())
            .map_err(|_| bad(format!("out of memory reading its {what}")))?;
        for x in items {
            out.push(x.as_usize().ok_or_else(|| {
                bad(format!(
                    "{what} holds {x}, which is not an integer in 0..=2^53-1"
                ))
            })?);
        }
        Ok(out)
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
    Ok((dtype, shape, [begin, end]))
}
