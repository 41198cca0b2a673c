//! Reading and writing the safetensors format, without `std`.
//!
//! Layout: an 8-byte little-endian header length `N`, `N` bytes of UTF-8 JSON
//! `{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//! "__metadata__": {"key": "value"}}`, then the data buffer. Offsets are relative to the start
//! of the data buffer, values are little-endian and row-major.
//!
//! The reader ([`SafeTensors::parse`]) borrows the file's bytes and validates the file as
//! strictly as the reference library does: every tensor's byte range must lie in the data
//! buffer and match its shape and dtype, ranges may not overlap, and the tensors together
//! must cover the data buffer exactly; it also refuses repeated tensor names and metadata
//! keys, which the reference library lets the last one win. Every error is an
//! [`Error::Format`](crate::Error::Format) whose source is the file name given by the caller
//! and whose reason names the tensor where there is one; running out of memory is such an
//! error too, never an abort. [`Header::parse`] makes the same checks from the header and
//! the file's length alone, for tools that list a file without reading its data. Parsing is
//! O(n log n) in the number of tensors.
//!
//! The writer ([`serialize`]) writes tensors in the order given, with the header padded with
//! spaces to a multiple of 8 bytes (as the reference writer does), so that the data buffer
//! starts 8-byte aligned in the file.

use core::fmt;

mod header;
mod read;
mod write;

pub use header::{Header, TensorInfo};
pub use read::{SafeTensors, TensorView};
pub use write::{serialize, TensorData, TensorOut};

/// Largest header the reader accepts (100 MB, the reference library's limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The header key that holds the string → string metadata instead of a tensor.
pub const METADATA_KEY: &str = "__metadata__";

/// An element type of a safetensors tensor, spelled in files as [`Dtype::name`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `U8`.
    U8,
    /// `I8`.
    I8,
    /// `U16`.
    U16,
    /// `I16`.
    I16,
    /// `U32`.
    U32,
    /// `I32`.
    I32,
    /// `U64`.
    U64,
    /// `I64`.
    I64,
    /// `F8_E4M3`: 8-bit float (read and written as raw bytes only).
    F8E4M3,
    /// `F8_E5M2`: 8-bit float (read and written as raw bytes only).
    F8E5M2,
    /// `F16`: IEEE half precision.
    F16,
    /// `BF16`: bfloat16.
    Bf16,
    /// `F32`.
    F32,
    /// `F64`.
    F64,
}

impl Dtype {
    /// Every dtype this module knows.
    pub const ALL: [Dtype; 15] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::U16,
        Dtype::I16,
        Dtype::U32,
        Dtype::I32,
        Dtype::U64,
        Dtype::I64,
        Dtype::F8E4M3,
        Dtype::F8E5M2,
        Dtype::F16,
        Dtype::Bf16,
        Dtype::F32,
        Dtype::F64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The name used in safetensors headers (`"F32"`, `"BF16"`, `"I64"`, `"BOOL"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::U16 => "U16",
            Dtype::I16 => "I16",
            Dtype::U32 => "U32",
            Dtype::I32 => "I32",
            Dtype::U64 => "U64",
            Dtype::I64 => "I64",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F16 => "F16",
            Dtype::Bf16 => "BF16",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
        }
    }

    /// The dtype spelled `name` in a header, if it is one this module knows (case-sensitive).
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether [`TensorView::to_f32`] reads this dtype (F16, BF16, F32, F64).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::Bf16 | Dtype::F32 | Dtype::F64)
    }

    /// Whether [`TensorView::to_i64`] reads this dtype (the integer types and BOOL).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            Dtype::Bool
                | Dtype::U8
                | Dtype::I8
                | Dtype::U16
                | Dtype::I16
                | Dtype::U32
                | Dtype::I32
                | Dtype::U64
                | Dtype::I64
        )
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The product of `shape` (1 when empty), `None` on overflow. Any zero dimension makes it 0,
/// whatever the others are.
fn checked_numel(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        Some(0)
    } else {
        shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}
