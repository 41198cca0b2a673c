//! The error type of `rae-core`: no_std, with a message that names the culprit.

use alloc::string::String;
use core::fmt;

use crate::shape::Shape;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Everything that can go wrong in `rae-core`. Each variant names what was wrong (the op,
/// the tensor, the file) so the message can be shown to a user as is.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Two shapes that must agree do not.
    ShapeMismatch {
        /// The operation that checked.
        op: &'static str,
        /// What the operation needed.
        expected: Shape,
        /// What it was given.
        got: Shape,
    },
    /// A shape that is wrong on its own (wrong rank, a zero or indivisible size, ...).
    BadShape {
        /// The operation that checked.
        op: &'static str,
        /// The offending shape.
        shape: Shape,
        /// Why it is wrong.
        reason: String,
    },
    /// More dimensions than a [`Shape`] holds.
    RankTooLarge {
        /// The rank asked for.
        rank: usize,
    },
    /// An argument that is not a shape is out of range (an index, a size, a hyper-parameter).
    InvalidArgument {
        /// The operation or option.
        what: String,
        /// Why it is wrong.
        reason: String,
    },
    /// A backend could not do what was asked (device lost, out of memory, no driver).
    Backend {
        /// The backend's name.
        backend: String,
        /// Its message.
        reason: String,
    },
    /// A file or byte buffer is not in the format it claims (truncated, foreign, corrupt).
    Format {
        /// The file or buffer, as the caller named it.
        source: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor a model needs is not in the checkpoint.
    MissingTensors {
        /// What was being loaded.
        model: String,
        /// The names that were missing.
        names: alloc::vec::Vec<String>,
    },
    /// A checkpoint tensor has a shape the model does not expect.
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The shape the model expects.
        expected: Shape,
        /// The shape in the file.
        got: Shape,
    },
    /// A value that must be finite is not (a loss, a gradient norm, an input).
    NonFinite {
        /// What was not finite.
        what: String,
    },
    /// A configuration value is missing or inconsistent.
    Config {
        /// The key or option.
        key: String,
        /// Why it is wrong.
        reason: String,
    },
}

impl Error {
    /// A shape mismatch in `op`.
    pub fn shape(op: &'static str, expected: &Shape, got: &Shape) -> Self {
        Error::ShapeMismatch {
            op,
            expected: expected.clone(),
            got: got.clone(),
        }
    }

    /// A shape that is wrong on its own.
    pub fn bad_shape(op: &'static str, shape: &Shape, reason: impl Into<String>) -> Self {
        Error::BadShape {
            op,
            shape: shape.clone(),
            reason: reason.into(),
        }
    }

    /// An invalid non-shape argument.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A malformed file or buffer.
    pub fn format(source: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Format {
            source: source.into(),
            reason: reason.into(),
        }
    }

    /// A configuration problem.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// A backend failure.
    pub fn backend(backend: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Backend {
            backend: backend.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { op, expected, got } => {
                write!(f, "{op}: shape mismatch: expected {expected}, got {got}")
            }
            Error::BadShape { op, shape, reason } => write!(f, "{op}: bad shape {shape}: {reason}"),
            Error::RankTooLarge { rank } => write!(
                f,
                "rank {rank} is larger than the {} dimensions a shape holds",
                crate::shape::MAX_DIMS
            ),
            Error::InvalidArgument { what, reason } => write!(f, "{what}: {reason}"),
            Error::Backend { backend, reason } => write!(f, "backend {backend}: {reason}"),
            Error::Format { source, reason } => write!(f, "{source}: {reason}"),
            Error::MissingTensors { model, names } => {
                write!(f, "{model}: missing tensors: ")?;
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(n)?;
                }
                Ok(())
            }
            Error::TensorShape {
                name,
                expected,
                got,
            } => write!(
                f,
                "tensor {name}: the model expects shape {expected}, the file has {got}"
            ),
            Error::NonFinite { what } => write!(f, "{what} is not finite (NaN or infinity)"),
            Error::Config { key, reason } => write!(f, "config {key}: {reason}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
