//! The safetensors reader: [`SafeTensors::parse`] validates a whole file and hands out
//! [`TensorView`]s that borrow its bytes.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use half::{bf16, f16};

use super::header::{ferr, Header};
use super::{checked_numel, Dtype};
use crate::error::{Error, Result};
use crate::shape::Shape;

/// One tensor of a parsed file: its name, dtype, shape and raw little-endian bytes, borrowed
/// from the file, and the file's name for error messages.
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
    /// The file the tensor was read from (the `source` given to [`SafeTensors::parse`]).
    pub source: Arc<str>,
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

    /// An [`Error::Format`] naming the file and this tensor.
    fn fail(&self, reason: impl core::fmt::Display) -> Error {
        ferr(&self.source, format!("tensor {}: {reason}", self.name))
    }

    /// Decodes every `size`-byte element with `f` into a new vector, allocated fallibly.
    fn decode<T>(&self, size: usize, f: impl FnMut(&[u8]) -> T) -> Result<Vec<T>> {
        let n = self.data.len() / size;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| {
            self.fail(format_args!(
                "out of memory for its {n} values ({} bytes)",
                n.saturating_mul(core::mem::size_of::<T>())
            ))
        })?;
        out.extend(self.data.chunks_exact(size).map(f));
        Ok(out)
    }

    /// The values as `f32`: F32 as is, F16 and BF16 exactly, F64 rounded to nearest. Any other
    /// dtype is an [`Error::Format`] naming the file and the tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        match self.dtype {
            Dtype::F32 => self.decode(4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            Dtype::F16 => self.decode(2, |c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
            Dtype::Bf16 => self.decode(2, |c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            Dtype::F64 => self.decode(8, |c| f64::from_le_bytes(le8(c)) as f32),
            other => Err(self.fail(format_args!(
                "dtype {other} is not a float type; to_f32 reads F32, F16, BF16 or F64{}",
                if other.is_integer() {
                    " (use to_i64)"
                } else {
                    ""
                }
            ))),
        }
    }

    /// The values as `i64`, from any integer dtype or BOOL (0 or 1). A float dtype is an
    /// [`Error::Format`] naming the file and the tensor, as is a U64 value above `i64::MAX`
    /// or a BOOL byte other than 0 and 1.
    ///
    /// Every element takes 8 bytes here: callers that only copy or summarise a U8 or BOOL
    /// tensor should use [`data`](Self::data) as it is.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        match self.dtype {
            Dtype::I64 => self.decode(8, |c| i64::from_le_bytes(le8(c))),
            Dtype::I32 => self.decode(4, |c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64),
            Dtype::I16 => self.decode(2, |c| i16::from_le_bytes([c[0], c[1]]) as i64),
            Dtype::I8 => self.decode(1, |c| c[0] as i8 as i64),
            Dtype::U8 => self.decode(1, |c| c[0] as i64),
            Dtype::U16 => self.decode(2, |c| u16::from_le_bytes([c[0], c[1]]) as i64),
            Dtype::U32 => self.decode(4, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64),
            Dtype::U64 => {
                if let Some((i, u)) = self
                    .data
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(le8(c)))
                    .enumerate()
                    .find(|&(_, u)| u > i64::MAX as u64)
                {
                    return Err(
                        self.fail(format_args!("U64 element {i} = {u} does not fit in an i64"))
                    );
                }
                self.decode(8, |c| u64::from_le_bytes(le8(c)) as i64)
            }
            Dtype::Bool => {
                if let Some((i, &b)) = self.data.iter().enumerate().find(|&(_, &b)| b > 1) {
                    return Err(
                        self.fail(format_args!("BOOL element {i} is the byte {b}, not 0 or 1"))
                    );
                }
                self.decode(1, |c| c[0] as i64)
            }
            other => Err(self.fail(format_args!(
                "dtype {other} is not an integer type; to_i64 reads integer and BOOL tensors{}",
                if other.is_float() {
                    " (use to_f32)"
                } else {
                    ""
                }
            ))),
        }
    }
}

fn le8(c: &[u8]) -> [u8; 8] {
    [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]
}

/// A parsed safetensors file: the tensors in header order, borrowing their bytes from the
/// file, and the metadata.
#[derive(Debug, Clone)]
pub struct SafeTensors<'a> {
    source: Arc<str>,
    tensors: Vec<TensorView<'a>>,
    /// Indices into `tensors`, sorted by name.
    by_name: Vec<usize>,
    metadata: Vec<(String, String)>,
}

impl<'a> SafeTensors<'a> {
    /// Parses and validates a whole file held in `bytes`. `source` (a file name) is the
    /// source of every error, whose reason names the tensor where there is one.
    ///
    /// The work is O(n log n) in the number of tensors and linear in the header's size; the
    /// tensor bytes are borrowed, not copied.
    pub fn parse(bytes: &'a [u8], source: &str) -> Result<SafeTensors<'a>> {
        let n = Header::declared_len(bytes, bytes.len() as u64, source)?;
        let data = &bytes[8 + n..];
        let header = Header::parse(&bytes[8..8 + n], data.len() as u64, source)?;
        let (infos, by_name, metadata) = header.into_parts();
        let source: Arc<str> = Arc::from(source);
        let mut tensors = Vec::new();
        tensors.try_reserve_exact(infos.len()).map_err(|_| {
            ferr(
                &source,
                format!("out of memory while listing {} tensors", infos.len()),
            )
        })?;
        for info in infos {
            let [begin, end] = info.data_offsets;
            tensors.push(TensorView {
                name: info.name,
                dtype: info.dtype,
                shape: info.shape,
                // Header::parse checked begin <= end <= data.len().
                data: &data[begin..end],
                source: source.clone(),
            });
        }
        Ok(SafeTensors {
            source,
            tensors,
            by_name,
            metadata,
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
        self.by_name
            .binary_search_by(|&i| self.tensors[i].name.as_str().cmp(name))
            .ok()
            .map(|k| self.tensors[self.by_name[k]].clone())
    }

    /// The tensor called `name`; [`Error::MissingTensors`] naming the file when absent.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'a>> {
        self.get(name).ok_or_else(|| Error::MissingTensors {
            model: self.source.to_string(),
            names: alloc::vec![name.to_string()],
        })
    }

    /// [`TensorView::to_f32`] of tensor `name` (errors name the file and the tensor).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.tensor(name)?.to_f32()
    }

    /// [`TensorView::to_i64`] of tensor `name` (errors name the file and the tensor).
    pub fn read_i64(&self, name: &str) -> Result<Vec<i64>> {
        self.tensor(name)?.to_i64()
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
