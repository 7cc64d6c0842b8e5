//! Status codes, the thread-local last-error message, and the `catch_unwind` guard every entry
//! point runs its body in.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use ner_edge::Error;

/// What a function that returns a status did. Every value but `NER_EDGE_STATUS_OK` comes with
/// a one-line message from `ner_edge_last_error()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NerEdgeStatus {
    /// Success.
    Ok = 0,
    /// A required pointer was NULL, or a value is out of range (e.g. 0 threads).
    InvalidArgument = 1,
    /// The text (or a string argument) is not valid UTF-8; the message gives the byte offset of
    /// the first invalid byte.
    InvalidUtf8 = 2,
    /// An operating-system I/O error, e.g. a bundle or pack file that does not exist or cannot
    /// be read; the message names the file.
    Io = 3,
    /// A bundle or label pack file is corrupt, truncated, of another format version, or does
    /// not fit (e.g. a pack made for another bundle); the message names the file and the problem.
    BadBundle = 4,
    /// The options are invalid together: an unknown entity type, a type name defined twice
    /// without override, too many types, or no bundle when the library was built without the
    /// embedded default model.
    Usage = 5,
    /// The input is malformed in a way other than UTF-8.
    InvalidInput = 6,
    /// The encoder graph could not be loaded or run.
    Encoder = 7,
    /// A bug: the library caught a Rust panic (the message says where); the handles passed to
    /// the call are still valid and may be freed, but their results should not be trusted.
    Internal = 8,
}

/// Every status, in value order.
const ALL_STATUSES: [NerEdgeStatus; 9] = [
    NerEdgeStatus::Ok,
    NerEdgeStatus::InvalidArgument,
    NerEdgeStatus::InvalidUtf8,
    NerEdgeStatus::Io,
    NerEdgeStatus::BadBundle,
    NerEdgeStatus::Usage,
    NerEdgeStatus::InvalidInput,
    NerEdgeStatus::Encoder,
    NerEdgeStatus::Internal,
];

impl NerEdgeStatus {
    /// The enumerator's name as it appears in the C header, NUL-terminated.
    pub(crate) fn c_name(self) -> &'static [u8] {
        match self {
            NerEdgeStatus::Ok => b"NER_EDGE_STATUS_OK\0",
            NerEdgeStatus::InvalidArgument => b"NER_EDGE_STATUS_INVALID_ARGUMENT\0",
            NerEdgeStatus::InvalidUtf8 => b"NER_EDGE_STATUS_INVALID_UTF8\0",
            NerEdgeStatus::Io => b"NER_EDGE_STATUS_IO\0",
            NerEdgeStatus::BadBundle => b"NER_EDGE_STATUS_BAD_BUNDLE\0",
            NerEdgeStatus::Usage => b"NER_EDGE_STATUS_USAGE\0",
            NerEdgeStatus::InvalidInput => b"NER_EDGE_STATUS_INVALID_INPUT\0",
            NerEdgeStatus::Encoder => b"NER_EDGE_STATUS_ENCODER\0",
            NerEdgeStatus::Internal => b"NER_EDGE_STATUS_INTERNAL\0",
        }
    }

    /// The status with C value `value`, if there is one.
    pub(crate) fn from_c(value: c_int) -> Option<NerEdgeStatus> {
        ALL_STATUSES.into_iter().find(|s| *s as c_int == value)
    }
}

/// A failed call: its status and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: NerEdgeStatus,
    pub message: String,
}

impl Failure {
    pub fn new(status: NerEdgeStatus, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// An [`NerEdgeStatus::InvalidArgument`] failure: `what` must not be NULL.
    pub fn null(function: &str, what: &str) -> Failure {
        Failure::new(
            NerEdgeStatus::InvalidArgument,
            format!("{function}: {what} is NULL"),
        )
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let status = match &e {
            Error::Format { .. } | Error::Bundle(_) => NerEdgeStatus::BadBundle,
            Error::Input(_) => NerEdgeStatus::InvalidInput,
            Error::Encoder(_) => NerEdgeStatus::Encoder,
            Error::Io { .. } => NerEdgeStatus::Io,
            Error::Usage(_) => NerEdgeStatus::Usage,
        };
        Failure::new(status, e.to_string())
    }
}

thread_local! {
    /// The message of the last failed status call on this thread; empty after a success.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message never holds NUL (the runtime's messages are one line of text), but a C string
    // must not: drop any rather than lose the message.
    let c = CString::new(message.replace('\0', "")).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; there is nobody left to read it.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = c);
}

/// Pointer to this thread's last-error message (valid until the next status call here).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs the body of an entry point that returns a status: clears the last error, runs `body`
/// under `catch_unwind`, and turns its failure or panic into a status and last-error message.
pub(crate) fn status_call(
    function: &str,
    body: impl FnOnce() -> Result<(), Failure>,
) -> NerEdgeStatus {
    set_last_error("");
    // AssertUnwindSafe: after a panic the caller only learns `Internal`; the handles stay valid
    // to free (every mutation the body makes to them is a whole-value replacement at its end).
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => NerEdgeStatus::Ok,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(payload) => {
            set_last_error(&format!(
                "{function}: internal error (Rust panic: {}); please report it",
                panic_message(payload.as_ref())
            ));
            NerEdgeStatus::Internal
        }
    }
}

/// Runs the body of an entry point that returns a value, not a status (accessors, `free`):
/// `fallback` if it panics. The last error is left alone.
pub(crate) fn value_call<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        // SAFETY: `last_error_ptr` points to this thread's NUL-terminated message, unchanged
        // until the next status call on this thread.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_internal_with_its_message_and_a_success_clears_it() {
        let status = status_call("ner_edge_test", || panic!("boom at {}", 42));
        assert_eq!(status, NerEdgeStatus::Internal);
        let message = last_error();
        assert!(message.contains("ner_edge_test") && message.contains("boom at 42"));
        assert_eq!(status_call("ner_edge_test", || Ok(())), NerEdgeStatus::Ok);
        assert_eq!(last_error(), "");
        let status = status_call("ner_edge_test", || {
            Err(Error::Usage("no \0 NUL here".into()).into())
        });
        assert_eq!(status, NerEdgeStatus::Usage);
        assert_eq!(last_error(), "usage error: no  NUL here");
        assert_eq!(value_call(7, || panic!("boom")), 7);
        assert_eq!(last_error(), "usage error: no  NUL here");
    }

    #[test]
    fn last_error_is_per_thread() {
        status_call("ner_edge_test", || Err(Failure::null("ner_edge_test", "x")));
        std::thread::spawn(|| {
            assert_eq!(last_error(), "");
            status_call("ner_edge_test", || Ok(()));
        })
        .join()
        .unwrap();
        assert_eq!(last_error(), "ner_edge_test: x is NULL");
    }

    #[test]
    fn status_names_are_the_header_enumerators() {
        let header =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/ner_edge.h"))
                .unwrap();
        for (value, status) in ALL_STATUSES.into_iter().enumerate() {
            assert_eq!(status as usize, value);
            assert_eq!(NerEdgeStatus::from_c(value as c_int), Some(status));
            let name = CStr::from_bytes_with_nul(status.c_name()).unwrap();
            let enumerator = format!("{} = {value},", name.to_str().unwrap());
            assert!(
                header.contains(&enumerator),
                "{enumerator} not in the header"
            );
        }
        assert_eq!(NerEdgeStatus::from_c(ALL_STATUSES.len() as c_int), None);
        assert_eq!(NerEdgeStatus::from_c(-1), None);
    }
}
