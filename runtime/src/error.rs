//! The runtime's error type: one line of context, never a panic.

use std::fmt;
use std::path::Path;

pub use crate::container::{ChecksumSection, FormatProblem};

/// Everything that can go wrong in the runtime. `Display` gives a one-line message that names
/// the file, line or byte where the problem is.
#[derive(Debug)]
pub enum Error {
    /// A bundle or label pack file breaks its format: `problem` says which rule (bad magic,
    /// version, truncation, checksum, tensor shape, missing tensor, metadata, layout) for
    /// programs to match on; `message` says the same for people, file name first.
    Format {
        /// Which structural rule is broken.
        problem: FormatProblem,
        /// One line naming the file and, where there is one, the byte or field.
        message: String,
    },
    /// The model in a structurally valid bundle or pack cannot be used: a vocabulary without
    /// the special tokens, non-finite values, prototypes that do not fit the encoder, a pack
    /// made for another bundle.
    Bundle(String),
    /// User input is malformed: invalid UTF-8, bad tags, unreadable file.
    Input(String),
    /// The encoder graph could not be loaded or run.
    Encoder(String),
    /// An operating-system I/O error, with what was being done.
    Io {
        /// What was being done, with the path: e.g. `read support file data/x.txt`.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The command line or an option combination is invalid.
    Usage(String),
}

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`] naming `path` and the action that failed.
    pub fn io(action: &str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            context: format!("{action} {}", path.display()),
            source,
        }
    }

    /// Process exit code for this error (all runtime errors exit with 2).
    pub fn exit_code(&self) -> i32 {
        2
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Format { message, .. } | Error::Bundle(message) => {
                write!(f, "bundle error: {message}")
            }
            Error::Input(m) => write!(f, "input error: {m}"),
            Error::Encoder(m) => write!(f, "encoder error: {m}"),
            Error::Io { context, source } => write!(f, "cannot {context}: {source}"),
            Error::Usage(m) => write!(f, "usage error: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
