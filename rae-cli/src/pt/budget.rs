//! The limit on what a `.pt` file may expand to in memory, counted in bytes.
//!
//! A pickle can name one object many times (memo references), and a tensor can be a view
//! that repeats its storage (a stride of 0), so a small file can describe far more than it
//! holds. Every byte the reader materialises is charged to one [`Budget`]: the machine's
//! objects and tensor shapes, every value of the result, each copy of a string or dict key,
//! the dotted name each tensor will be listed under, and the tensor values in the form they
//! are read (4 bytes per f32, 8 per i64, the stored size for raw bytes). Going past the
//! limit is an error that names the value, the limit and the file size it came from.

/// Bytes the reader may materialise per byte of the file ([`byte_budget`]). Decoding a U8
/// or BOOL tensor to i64 takes 8 bytes per stored byte; the rest covers the objects around
/// the tensors.
pub const BYTES_PER_FILE_BYTE: usize = 16;

/// Bytes the reader may materialise on top of [`BYTES_PER_FILE_BYTE`] per file byte, so
/// small files with long names still read: 64 MiB.
pub const BYTE_BUDGET_FLOOR: usize = 64 << 20;

/// The most bytes reading a `.pt` file of `file_len` bytes may materialise:
/// [`BYTES_PER_FILE_BYTE`] per file byte plus [`BYTE_BUDGET_FLOOR`].
pub fn byte_budget(file_len: usize) -> usize {
    file_len
        .saturating_mul(BYTES_PER_FILE_BYTE)
        .saturating_add(BYTE_BUDGET_FLOOR)
}

/// What is left of [`byte_budget`] while a file is read.
#[derive(Debug)]
pub(super) struct Budget {
    left: usize,
    limit: usize,
    file_len: usize,
}

impl Budget {
    /// The budget of a file of `file_len` bytes.
    pub(super) fn for_file(file_len: usize) -> Self {
        let limit = byte_budget(file_len);
        Budget {
            left: limit,
            limit,
            file_len,
        }
    }

    /// Charges `bytes` for `what` (a description of the value, such as "a string of 1048576
    /// bytes"); an error naming it and the limit once the budget is spent.
    pub(super) fn spend(
        &mut self,
        bytes: usize,
        what: impl FnOnce() -> String,
    ) -> Result<(), String> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(format!(
                "{} takes the file past its limit of {} bytes in memory ({BYTES_PER_FILE_BYTE} \
                 per byte of its {} bytes plus {} MiB, see pt::byte_budget): shared \
                 references repeated too often?",
                what(),
                self.limit,
                self.file_len,
                BYTE_BUDGET_FLOOR >> 20
            )),
        }
    }
}
