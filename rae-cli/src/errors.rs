//! The CLI's error: one paragraph naming the file, tensor or option at fault.

use std::fmt;
use std::path::Path;

/// An error to print to the user (the binary prints it and exits with status 1).
#[derive(Debug, Clone, PartialEq)]
pub struct CliError {
    msg: String,
}

/// Result with [`CliError`].
pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        CliError { msg: msg.into() }
    }

    /// Prefixes context (`"loading the decoder: ..."`).
    pub fn context(self, what: impl fmt::Display) -> Self {
        CliError {
            msg: format!("{what}: {}", self.msg),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for CliError {}

impl From<rae_core::Error> for CliError {
    fn from(e: rae_core::Error) -> Self {
        CliError::new(e.to_string())
    }
}

/// An I/O error on `path` while doing `what`.
pub fn io_error(what: &str, path: &Path, e: &std::io::Error) -> CliError {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound => " (no such file or directory)",
        std::io::ErrorKind::PermissionDenied => " (permission denied: is the folder writable?)",
        _ => "",
    };
    let full = if e.raw_os_error() == Some(28) {
        " (the disk is full)"
    } else {
        ""
    };
    CliError::new(format!("{what} {}: {e}{hint}{full}", path.display()))
}

/// Extension trait to attach context to results.
pub trait Context<T> {
    /// Prefixes the error with `what`.
    fn context(self, what: impl fmt::Display) -> CliResult<T>;
}

impl<T, E: Into<CliError>> Context<T> for Result<T, E> {
    fn context(self, what: impl fmt::Display) -> CliResult<T> {
        self.map_err(|e| e.into().context(what))
    }
}
