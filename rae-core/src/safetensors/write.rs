//! The safetensors writer: [`serialize`] lays out tensors given as `f32` or `i64` slices, or
//! as raw little-endian bytes of any dtype.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use half::{bf16, f16};

use super::{checked_numel, Dtype, METADATA_KEY};
use crate::error::{Error, Result};
use crate::json;

/// The values of a tensor to write, and the dtype they are stored as.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TensorData<'a> {
    /// `f32` values stored as F32 (bit for bit).
    F32(&'a [f32]),
    /// `f32` values stored as F16, rounded to nearest even (overflow gives ±inf).
    F32AsF16(&'a [f32]),
    /// `f32` values stored as BF16, rounded to nearest even.
    F32AsBf16(&'a [f32]),
    /// `i64` values stored as I64.
    I64(&'a [i64]),
    /// Values already in the file's layout: little-endian elements of `dtype`, copied as they
    /// are (so a U8 tensor stays one byte per element).
    Raw {
        /// The dtype written to the file.
        dtype: Dtype,
        /// `numel × dtype.size()` bytes.
        bytes: &'a [u8],
    },
}

impl TensorData<'_> {
    /// The dtype written to the file.
    pub fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::F32AsF16(_) => Dtype::F16,
            TensorData::F32AsBf16(_) => Dtype::Bf16,
            TensorData::I64(_) => Dtype::I64,
            TensorData::Raw { dtype, .. } => *dtype,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(d) | TensorData::F32AsF16(d) | TensorData::F32AsBf16(d) => d.len(),
            TensorData::I64(d) => d.len(),
            TensorData::Raw { dtype, bytes } => bytes.len() / dtype.size(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            TensorData::F32(d) => d.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::F32AsF16(d) => d
                .iter()
                .for_each(|&x| out.extend(f16::from_f32(x).to_le_bytes())),
            TensorData::F32AsBf16(d) => d
                .iter()
                .for_each(|&x| out.extend(bf16::from_f32(x).to_le_bytes())),
            TensorData::I64(d) => d.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::Raw { bytes, .. } => out.extend_from_slice(bytes),
        }
    }
}

/// A tensor to write with [`serialize`]: name, shape (row-major) and values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorOut<'a> {
    /// Name in the file.
    pub name: &'a str,
    /// Dimensions (empty for a scalar).
    pub shape: &'a [usize],
    /// Values and storage dtype.
    pub data: TensorData<'a>,
}

impl<'a> TensorOut<'a> {
    /// `f32` values stored as F32.
    pub fn f32(name: &'a str, shape: &'a [usize], data: &'a [f32]) -> Self {
        TensorOut {
            name,
            shape,
            data: TensorData::F32(data),
        }
    }

    /// `f32` values stored as F16 (round to nearest even).
    pub fn f32_as_f16(name: &'a str, shape: &'a [usize], data: &'a [f32]) -> Self {
        TensorOut {
            name,
            shape,
            data: TensorData::F32AsF16(data),
        }
    }

    /// `f32` values stored as BF16 (round to nearest even).
    pub fn f32_as_bf16(name: &'a str, shape: &'a [usize], data: &'a [f32]) -> Self {
        TensorOut {
            name,
            shape,
            data: TensorData::F32AsBf16(data),
        }
    }

    /// `i64` values stored as I64.
    pub fn i64(name: &'a str, shape: &'a [usize], data: &'a [i64]) -> Self {
        TensorOut {
            name,
            shape,
            data: TensorData::I64(data),
        }
    }

    /// Little-endian `bytes` of `dtype`, stored as they are.
    pub fn raw(name: &'a str, shape: &'a [usize], dtype: Dtype, bytes: &'a [u8]) -> Self {
        TensorOut {
            name,
            shape,
            data: TensorData::Raw { dtype, bytes },
        }
    }
}

/// Writes a safetensors file: the tensors in the given order (data contiguous, in that order),
/// and `metadata` as the header's `__metadata__` (its first member; left out when empty).
///
/// Errors ([`Error::InvalidArgument`] naming the tensor): a repeated tensor name or metadata
/// key, the reserved name `__metadata__`, a shape whose element count is not the number of
/// values given, or raw bytes that are not a whole number of elements. Running out of
/// memory for the output is an error too, not an abort.
pub fn serialize(tensors: &[TensorOut<'_>], metadata: &[(String, String)]) -> Result<Vec<u8>> {
    let mut names = BTreeMap::new();
    for t in tensors {
        let what = || format!("safetensors tensor {}", t.name);
        if t.name == METADATA_KEY {
            return Err(Error::invalid(
                what(),
                "the name __metadata__ is reserved for the metadata",
            ));
        }
        if names.insert(t.name, ()).is_some() {
            return Err(Error::invalid(what(), "the name appears twice"));
        }
        if let TensorData::Raw { dtype, bytes } = t.data {
            if bytes.len() % dtype.size() != 0 {
                return Err(Error::invalid(
                    what(),
                    format!(
                        "{} raw bytes are not a whole number of {dtype} elements",
                        bytes.len()
                    ),
                ));
            }
        }
        if checked_numel(t.shape) != Some(t.data.len()) {
            return Err(Error::invalid(
                what(),
                format!(
                    "shape {:?} does not hold the {} values given",
                    t.shape,
                    t.data.len()
                ),
            ));
        }
    }
    let mut keys = BTreeSet::new();
    for (k, _) in metadata {
        if !keys.insert(k.as_str()) {
            return Err(Error::invalid(
                "safetensors metadata",
                format!("key {k:?} appears twice"),
            ));
        }
    }

    // The header, written by hand so offsets are exact integers. Writing into a String
    // cannot fail, so the fmt::Results are ignored.
    use core::fmt::Write;
    let mut h = String::from("{");
    let mut first = true;
    let mut sep = |h: &mut String| {
        if !first {
            h.push(',');
        }
        first = false;
    };
    if !metadata.is_empty() {
        sep(&mut h);
        let _ = json::write_string(&mut h, METADATA_KEY);
        h.push_str(":{");
        for (i, (k, v)) in metadata.iter().enumerate() {
            if i > 0 {
                h.push(',');
            }
            let _ = json::write_string(&mut h, k);
            h.push(':');
            let _ = json::write_string(&mut h, v);
        }
        h.push('}');
    }
    let mut offset = 0usize;
    for t in tensors {
        sep(&mut h);
        let nbytes = t.data.len() * t.data.dtype().size();
        let _ = json::write_string(&mut h, t.name);
        let _ = write!(h, ":{{\"dtype\":\"{}\",\"shape\":[", t.data.dtype());
        for (i, d) in t.shape.iter().enumerate() {
            let _ = write!(h, "{}{d}", if i > 0 { "," } else { "" });
        }
        let _ = write!(h, "],\"data_offsets\":[{offset},{}]}}", offset + nbytes);
        offset += nbytes;
    }
    h.push('}');
    while h.len() % 8 != 0 {
        h.push(' ');
    }

    let mut out = Vec::new();
    let total = offset.saturating_add(8 + h.len());
    out.try_reserve_exact(total).map_err(|_| {
        Error::invalid(
            "safetensors output",
            format!("out of memory for a {total}-byte file"),
        )
    })?;
    out.extend((h.len() as u64).to_le_bytes());
    out.extend(h.as_bytes());
    for t in tensors {
        t.data.write_le(&mut out);
    }
    Ok(out)
}
