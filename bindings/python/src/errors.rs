//! Runtime errors as Python exceptions.
//!
//! The exception classes are defined in Python (`ner_edge/_errors.py`) so that each can derive
//! from both `ner_edge.NerEdgeError` and the built-in a Python caller expects (`ValueError`,
//! `RuntimeError`); I/O errors become `OSError` and its errno subclasses
//! (`FileNotFoundError`, …). The message is always the runtime's own one-line message.

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;

use ner_edge::Error;

/// The Python exception for runtime error `e`:
///
/// | runtime error | Python exception |
/// |---|---|
/// | `Format`, `Bundle` (corrupt or unusable bundle or pack) | `ner_edge.BundleError` (a `ValueError`) |
/// | `Input` (malformed text or support set) | `ner_edge.InputError` (a `ValueError`) |
/// | `Usage` (unknown type names, bad options) | `ner_edge.UsageError` (a `ValueError`) |
/// | `Encoder` | `ner_edge.EncoderError` (a `RuntimeError`) |
/// | `Io` | `OSError(errno, message)`, e.g. `FileNotFoundError` |
pub fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    let message = e.to_string();
    let class = match &e {
        Error::Format { .. } | Error::Bundle(_) => "BundleError",
        Error::Input(_) => "InputError",
        Error::Usage(_) => "UsageError",
        Error::Encoder(_) => "EncoderError",
        Error::Io { source, .. } => {
            return match source.raw_os_error() {
                // OSError(errno, text) gives the errno's subclass (FileNotFoundError, …).
                Some(errno) => PyOSError::new_err((errno, message)),
                None => PyOSError::new_err(message),
            };
        }
    };
    named_error(py, class, message)
}

/// `ner_edge._errors.<class>(message)`, or a `RuntimeError` saying why that class is missing.
pub fn named_error(py: Python<'_>, class: &str, message: String) -> PyErr {
    let made = py
        .import("ner_edge._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1((message.clone(),)));
    match made {
        Ok(value) => PyErr::from_value(value),
        Err(why) => PyRuntimeError::new_err(format!(
            "{message} (and ner_edge._errors.{class} is not importable: {why})"
        )),
    }
}

/// Converts a runtime `Result` into a `PyResult`.
pub trait IntoPyResult<T> {
    /// The value, or the exception [`to_py_err`] maps the error to.
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for ner_edge::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py_err(py, e))
    }
}
