//! The C library of ner-edge: `libner_edge_c.so` / `libner_edge_c.a` with the header
//! `include/ner_edge.h` (generated from this crate by cbindgen; `cbindgen.toml` holds the
//! header's introduction: ownership, errors, thread safety).
//!
//! Every `extern "C"` function runs its body under `catch_unwind` ([`status::status_call`],
//! [`status::value_call`]): a Rust panic never unwinds into C. NULL pointers and invalid UTF-8
//! are reported as statuses, never dereferenced or assumed. The `unsafe` in this crate is the
//! FFI boundary only: turning caller pointers into references, and handing out and taking back
//! the boxes behind the opaque handles.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::PathBuf;
use std::sync::Arc;

use ner_edge::bundle::Bundle;
use ner_edge::input::{DocumentMode, SegmentReader, DEFAULT_MAX_SEGMENT_BYTES};
use ner_edge::output::{DocumentWriter, Format};
use ner_edge::pack::LabelPack;
use ner_edge::pipeline::Tagger;
use ner_edge::Error;

mod status;

pub use status::NerEdgeStatus;
use status::{last_error_ptr, status_call, value_call, Failure};

/// A loaded model: the bundle's tokenizer and encoder, the active entity types (bundle and label
/// packs) and their CRFs. Opaque; made by `ner_edge_model_open` or `ner_edge_model_open_with`,
/// freed by `ner_edge_model_free`.
///
/// Thread safety: a model is immutable once opened. Any number of threads may call
/// `ner_edge_tag`, `ner_edge_tag_jsonl`, `ner_edge_model_type_count` and
/// `ner_edge_model_type_name` on the same model at the same time; `ner_edge_model_free` must
/// not overlap any other use of it.
pub struct NerEdgeModel {
    tagger: Tagger,
    /// `type_names[k]`: name of active type `k`, shared with every entity list made from this
    /// model, so that an entity's `type_name` outlives the model.
    type_names: Arc<[CString]>,
    /// Threads `ner_edge_tag_jsonl` splits its documents over.
    threads: usize,
}

// The documented thread safety rests on this: `Tagger::tag` takes `&self`, and the model is
// never mutated after it is opened.
const _: fn() = || {
    fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<NerEdgeModel>();
    shared_across_threads::<Tagger>();
};

/// How to open a model: bundle, label packs, active types, decoding switches and threads, as the
/// CLI's `ner-edge predict` options. Opaque; made by `ner_edge_options_new`, freed by
/// `ner_edge_options_free`. Not synchronised: use one options object from one thread at a time.
#[derive(Clone, Debug)]
pub struct NerEdgeOptions {
    bundle: Option<PathBuf>,
    packs: Vec<PathBuf>,
    types: Option<Vec<String>>,
    allow_override: bool,
    no_other: bool,
    threads: usize,
}

impl Default for NerEdgeOptions {
    fn default() -> Self {
        NerEdgeOptions {
            bundle: None,
            packs: Vec::new(),
            types: None,
            allow_override: false,
            no_other: false,
            threads: 1,
        }
    }
}

/// One entity found in a text. Offsets count from the start of the text given to `ner_edge_tag`;
/// `end` and `char_end` are exclusive. The text of the entity is the `end - start` bytes at
/// `text + start`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NerEdgeEntity {
    /// First byte of the entity in the UTF-8 text (on a character boundary).
    pub start: usize,
    /// One past the last byte of the entity (on a character boundary).
    pub end: usize,
    /// `start` in Unicode scalar values (characters) instead of bytes, as the CLI's JSON output.
    pub char_start: usize,
    /// `end` in Unicode scalar values (characters).
    pub char_end: usize,
    /// Index of the entity's type among the model's active types (`ner_edge_model_type_name`).
    pub type_index: usize,
    /// The type's name, NUL-terminated; valid until the entity list is freed (even if the model
    /// is freed first).
    pub type_name: *const c_char,
    /// CRF marginal probability that exactly this entity is present, in [0, 1].
    pub score: f32,
}

/// The entities of one text, in text order and non-overlapping. Opaque; made by `ner_edge_tag`,
/// read with `ner_edge_entities_count` and `ner_edge_entities_get`, freed by
/// `ner_edge_entities_free`. Immutable: any number of threads may read one list at a time.
pub struct NerEdgeEntities {
    items: Vec<NerEdgeEntity>,
    /// Keeps every `items[i].type_name` alive.
    _type_names: Arc<[CString]>,
}

/// Documents `ner_edge_tag_jsonl` hands to the tagger at once, as the CLI's `predict` does
/// (`runtime/src/main.rs`: `BLOCK_BYTES`, `BLOCK_SEGMENTS`), so its batches, and therefore its
/// scores, are the CLI's.
const BLOCK_BYTES: usize = 256 * 1024;
const BLOCK_SEGMENTS: usize = 512;

/// The bytes of the NUL-terminated string `ptr`; `None` when `ptr` is NULL.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and unchanged for `'a`.
unsafe fn c_bytes<'a>(ptr: *const c_char) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: not NULL, and NUL-terminated and live for 'a by this function's contract.
    Some(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// The NUL-terminated string `ptr` as UTF-8 text; `what` names it in the error.
///
/// # Safety
/// As [`c_bytes`].
unsafe fn c_text<'a>(function: &str, what: &str, ptr: *const c_char) -> Result<&'a str, Failure> {
    // SAFETY: passed on from this function's contract.
    let bytes = unsafe { c_bytes(ptr) }.ok_or_else(|| Failure::null(function, what))?;
    utf8(function, what, bytes)
}

/// `bytes` as UTF-8, or an [`NerEdgeStatus::InvalidUtf8`] failure naming the first bad byte.
fn utf8<'a>(function: &str, what: &str, bytes: &'a [u8]) -> Result<&'a str, Failure> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let how = match e.error_len() {
            Some(_) => "invalid UTF-8",
            None => "incomplete UTF-8 sequence at the end",
        };
        Failure::new(
            NerEdgeStatus::InvalidUtf8,
            format!(
                "{function}: {what} is not valid UTF-8: {how} at byte offset {at} (byte 0x{:02x})",
                bytes[at]
            ),
        )
    })
}

/// A path from a NUL-terminated string: any bytes on Unix, UTF-8 elsewhere.
///
/// # Safety
/// As [`c_bytes`].
unsafe fn c_path(function: &str, what: &str, ptr: *const c_char) -> Result<PathBuf, Failure> {
    // SAFETY: passed on from this function's contract.
    let bytes = unsafe { c_bytes(ptr) }.ok_or_else(|| Failure::null(function, what))?;
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        utf8(function, what, bytes).map(PathBuf::from)
    }
}

/// The text `len` bytes at `ptr`, which must be UTF-8; NULL with `len == 0` is the empty text.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes that stay unchanged for `'a`.
unsafe fn text_arg<'a>(function: &str, ptr: *const c_char, len: usize) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return if len == 0 {
            Ok("")
        } else {
            Err(Failure::new(
                NerEdgeStatus::InvalidArgument,
                format!("{function}: text is NULL but len is {len}"),
            ))
        };
    }
    if len > isize::MAX as usize {
        return Err(Failure::new(
            NerEdgeStatus::InvalidArgument,
            format!("{function}: len {len} is larger than any object"),
        ));
    }
    // SAFETY: not NULL, `len` readable bytes by this function's contract, len <= isize::MAX.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    utf8(function, "text", bytes)
}

/// `*out = value` after checking that `out` is not NULL.
///
/// # Safety
/// `out` is NULL or valid for a write of one `T`.
unsafe fn clear_out<T>(function: &str, what: &str, out: *mut *mut T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(function, what));
    }
    // SAFETY: not NULL and writable by this function's contract.
    unsafe { out.write(std::ptr::null_mut()) };
    Ok(())
}

/// `&*ptr`, or an invalid-argument failure when `ptr` is NULL.
///
/// # Safety
/// `ptr` is NULL or points to a live `T` that nobody mutates for `'a`.
unsafe fn handle<'a, T>(function: &str, what: &str, ptr: *const T) -> Result<&'a T, Failure> {
    // SAFETY: NULL or a live, unaliased-by-writers `T` by this function's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::null(function, what))
}

/// `&mut *ptr`, or an invalid-argument failure when `ptr` is NULL.
///
/// # Safety
/// `ptr` is NULL or points to a live `T` that nothing else uses for `'a`.
unsafe fn handle_mut<'a, T>(function: &str, what: &str, ptr: *mut T) -> Result<&'a mut T, Failure> {
    // SAFETY: NULL or a live `T` used only through this reference by this function's contract.
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::null(function, what))
}

/// The library's version (`MAJOR.MINOR.PATCH`), a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn ner_edge_version() -> *const c_char {
    value_call(c"".as_ptr(), || {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    })
}

/// The name of a status value (e.g. `"NER_EDGE_STATUS_IO"`), a static NUL-terminated string;
/// `"NER_EDGE_STATUS_UNKNOWN"` for a value that is not a `NerEdgeStatus`.
#[no_mangle]
pub extern "C" fn ner_edge_status_name(status: c_int) -> *const c_char {
    value_call(c"NER_EDGE_STATUS_UNKNOWN".as_ptr(), || {
        NerEdgeStatus::from_c(status).map_or(c"NER_EDGE_STATUS_UNKNOWN".as_ptr(), |s| {
            s.c_name().as_ptr().cast()
        })
    })
}

/// The message of the last call on this thread that returned a status: one line naming the
/// function and what went wrong (the file, the byte offset, the unknown type, ...), or `""`
/// when that call returned `NER_EDGE_STATUS_OK`. Never NULL. Owned by the library: valid until
/// the next status-returning call on this thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn ner_edge_last_error() -> *const c_char {
    value_call(c"".as_ptr(), last_error_ptr)
}

/// Makes default options in `*out`: the embedded default model, no label pack, the bundle's
/// default types, "other" decoded, 1 thread. Free with `ner_edge_options_free`.
///
/// # Safety
/// `out` is NULL (an error) or valid for writing a pointer; `*out` is NULL on failure.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_options_new(out: *mut *mut NerEdgeOptions) -> NerEdgeStatus {
    status_call("ner_edge_options_new", || {
        // SAFETY: `out` is NULL or writable, as this function's contract requires.
        unsafe { clear_out("ner_edge_options_new", "out", out) }?;
        let options = Box::into_raw(Box::<NerEdgeOptions>::default());
        // SAFETY: checked non-NULL and writable above.
        unsafe { out.write(options) };
        Ok(())
    })
}

/// Frees options made by `ner_edge_options_new`; NULL is ignored. Models opened with them are
/// not affected.
///
/// # Safety
/// `options` is NULL or a live pointer from `ner_edge_options_new`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_options_free(options: *mut NerEdgeOptions) {
    value_call((), || {
        if !options.is_null() {
            // SAFETY: a pointer from `Box::into_raw` in `ner_edge_options_new`, freed once.
            drop(unsafe { Box::from_raw(options) });
        }
    });
}

/// Sets the bundle file to open (the CLI's `--bundle`); NULL: the default model embedded in the
/// library (built with the cargo feature `embedded-bundle`, on by default). The path is copied.
///
/// # Safety
/// `options` is NULL (an error) or live and not used by another thread during the call;
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_options_set_bundle(
    options: *mut NerEdgeOptions,
    path: *const c_char,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_options_set_bundle";
    status_call(F, || {
        // SAFETY: NULL or live and exclusive during the call, by this function's contract.
        let options = unsafe { handle_mut(F, "options", options) }?;
        options.bundle = if path.is_null() {
            None
        } else {
            // SAFETY: not NULL, so a NUL-terminated string by this function's contract.
            Some(unsafe { c_path(F, "path", path) }?)
        };
        Ok(())
    })
}

/// Adds a label pack (`*.nerp`, made by `ner-edge adapt` for the same bundle) whose types are
/// activated on top of the bundle's (the CLI's repeatable `--pack`). The path is copied; the
/// file is read by `ner_edge_model_open_with`.
///
/// # Safety
/// `options` is NULL (an error) or live and not used by another thread during the call;
/// `path` is NULL (an error) or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_options_add_pack(
    options: *mut NerEdgeOptions,
    path: *const c_char,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_options_add_pack";
    status_call(F, || {
        // SAFETY: NULL or live and exclusive during the call, by this function's contract.
        let options = unsafe { handle_mut(F, "options", options) }?;
        // SAFETY: NULL or a NUL-terminated string by this function's contract.
        let path = unsafe { c_path(F, "path", path) }?;
        options.packs.push(path);
        Ok(())
    })
}

/// Sets the active entity types (the CLI's `--types`): names separated by commas, e.g.
/// `"PER,LOC"`, from the bundle and the packs; `""` activates no type (every word is outside
/// any entity); NULL restores the default (the bundle's default set and every type of every
/// pack). Unknown names are reported by `ner_edge_model_open_with` (`NER_EDGE_STATUS_USAGE`).
///
/// # Safety
/// `options` is NULL (an error) or live and not used by another thread during the call;
/// `types` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_options_set_types(
    options: *mut NerEdgeOptions,
    types: *const c_char,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_options_set_types";
    status_call(F, || {
        // SAFETY: NULL or live and exclusive during the call, by this function's contract.
        let options = unsafe { handle_mut(F, "options", options) }?;
        options.types = if types.is_null() {
            None
        } else {
            // SAFETY: not NULL, so a NUL-terminated string by this function's contract.
            let list = unsafe { c_text(F, "types", types) }?;
            Some(if list.is_empty() {
                Vec::new()
            } else {
                list.split(',').map(str::to_string).collect()
            })
        };
        Ok(())
    })
}

/// Lets a later pack redefine a type name that the bundle or an earlier pack already has (the
/// CLI's `--override`); default false.
///
/// # Safety
/// `options` is NULL (an error) or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_options_set_allow_override(
    options: *mut NerEdgeOptions,
    allow: bool,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_options_set_allow_override";
    status_call(F, || {
        // SAFETY: NULL or live and exclusive during the call, by this function's contract.
        unsafe { handle_mut(F, "options", options) }?.allow_override = allow;
        Ok(())
    })
}

/// Stops decoding the bundle's "other" prototypes (the CLI's `--no-other`): every entity the
/// model finds gets the likeliest active type (more recall, less precision); default false.
///
/// # Safety
/// `options` is NULL (an error) or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_options_set_no_other(
    options: *mut NerEdgeOptions,
    no_other: bool,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_options_set_no_other";
    status_call(F, || {
        // SAFETY: NULL or live and exclusive during the call, by this function's contract.
        unsafe { handle_mut(F, "options", options) }?.no_other = no_other;
        Ok(())
    })
}

/// Sets the worker threads `ner_edge_tag_jsonl` splits a many-line text over (the CLI's
/// `--threads`; at least 1, default 1). Results never depend on it. `ner_edge_tag` tags one
/// text on the calling thread; for parallel tagging call it from several threads on one model.
///
/// # Safety
/// `options` is NULL (an error) or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_options_set_threads(
    options: *mut NerEdgeOptions,
    threads: usize,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_options_set_threads";
    status_call(F, || {
        // SAFETY: NULL or live and exclusive during the call, by this function's contract.
        let options = unsafe { handle_mut(F, "options", options) }?;
        if threads == 0 {
            return Err(Failure::new(
                NerEdgeStatus::InvalidArgument,
                format!("{F}: threads must be at least 1"),
            ));
        }
        options.threads = threads;
        Ok(())
    })
}

/// Opens the model `options` describe, as `ner-edge predict` does with the same options.
fn open_model(options: &NerEdgeOptions) -> Result<NerEdgeModel, Failure> {
    let bundle = match &options.bundle {
        Some(path) => Bundle::open(path)?,
        None => ner_edge::bundle::embedded().unwrap_or_else(|| {
            Err(Error::Usage(
                "no bundle given and this library was built without the embedded default \
                 bundle (cargo feature embedded-bundle): pass a bundle path"
                    .into(),
            ))
        })?,
    };
    let packs = options
        .packs
        .iter()
        .map(|p| LabelPack::open(p))
        .collect::<Result<Vec<_>, Error>>()?;
    let mut tagger = Tagger::with_packs(
        &bundle,
        &packs,
        options.types.as_deref(),
        options.allow_override,
    )?;
    if options.no_other {
        tagger.disable_other();
    }
    let type_names = tagger
        .type_names()
        .iter()
        .map(|n| {
            CString::new(n.as_bytes()).map_err(|_| {
                Failure::new(
                    NerEdgeStatus::BadBundle,
                    format!("{}: entity type name {n:?} contains NUL", bundle.name()),
                )
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(NerEdgeModel {
        tagger,
        type_names: type_names.into(),
        threads: options.threads,
    })
}

/// Opens the bundle file `bundle_path` (NULL: the default model embedded in the library) with
/// its default entity types, into `*out`. Free it with `ner_edge_model_free`.
///
/// Errors: `NER_EDGE_STATUS_IO` (missing or unreadable file), `NER_EDGE_STATUS_BAD_BUNDLE`
/// (corrupt, truncated or not a bundle), `NER_EDGE_STATUS_USAGE` (NULL path in a library built
/// without the embedded model), `NER_EDGE_STATUS_ENCODER`, `NER_EDGE_STATUS_INVALID_ARGUMENT`
/// (`out` is NULL).
///
/// # Safety
/// `bundle_path` is NULL or a NUL-terminated string; `out` is NULL (an error) or valid for
/// writing a pointer. `*out` is NULL on failure.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_model_open(
    bundle_path: *const c_char,
    out: *mut *mut NerEdgeModel,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_model_open";
    status_call(F, || {
        // SAFETY: `out` is NULL or writable, by this function's contract.
        unsafe { clear_out(F, "out", out) }?;
        let mut options = NerEdgeOptions::default();
        if !bundle_path.is_null() {
            // SAFETY: not NULL, so a NUL-terminated string by this function's contract.
            options.bundle = Some(unsafe { c_path(F, "bundle_path", bundle_path) }?);
        }
        let model = Box::into_raw(Box::new(open_model(&options)?));
        // SAFETY: checked non-NULL and writable by `clear_out`.
        unsafe { out.write(model) };
        Ok(())
    })
}

/// Opens a model as `options` describe (bundle, packs, types, ...), into `*out`. `options` can
/// be freed or changed afterwards. Free the model with `ner_edge_model_free`.
///
/// Errors: those of `ner_edge_model_open`, for the packs too; `NER_EDGE_STATUS_BAD_BUNDLE` also
/// for a pack made for another bundle; `NER_EDGE_STATUS_USAGE` for an unknown type, a type
/// defined twice without override, or more types than the decoder supports.
///
/// # Safety
/// `options` is NULL (an error) or live and not used by another thread during the call; `out`
/// is NULL (an error) or valid for writing a pointer. `*out` is NULL on failure.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_model_open_with(
    options: *const NerEdgeOptions,
    out: *mut *mut NerEdgeModel,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_model_open_with";
    status_call(F, || {
        // SAFETY: `out` is NULL or writable, by this function's contract.
        unsafe { clear_out(F, "out", out) }?;
        // SAFETY: NULL or live and not written during the call, by this function's contract.
        let options = unsafe { handle(F, "options", options) }?;
        let model = Box::into_raw(Box::new(open_model(options)?));
        // SAFETY: checked non-NULL and writable by `clear_out`.
        unsafe { out.write(model) };
        Ok(())
    })
}

/// Frees a model; NULL is ignored. Entity lists made from it stay valid.
///
/// # Safety
/// `model` is NULL or a live pointer from `ner_edge_model_open*`, not in use by any other
/// thread and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_model_free(model: *mut NerEdgeModel) {
    value_call((), || {
        if !model.is_null() {
            // SAFETY: a pointer from `Box::into_raw` in `ner_edge_model_open*`, freed once.
            drop(unsafe { Box::from_raw(model) });
        }
    });
}

/// Number of active entity types of `model` (0 when `model` is NULL).
///
/// # Safety
/// `model` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_model_type_count(model: *const NerEdgeModel) -> usize {
    value_call(0, || {
        // SAFETY: NULL or live, by this function's contract.
        unsafe { model.as_ref() }.map_or(0, |m| m.type_names.len())
    })
}

/// Name of active type `index` (bundle types first, then each pack's), NUL-terminated and valid
/// while `model` lives; NULL when `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_model_type_name(
    model: *const NerEdgeModel,
    index: usize,
) -> *const c_char {
    value_call(std::ptr::null(), || {
        // SAFETY: NULL or live, by this function's contract.
        unsafe { model.as_ref() }
            .and_then(|m| m.type_names.get(index))
            .map_or(std::ptr::null(), |n| n.as_ptr())
    })
}

/// The entities of `text` with their byte and char offsets.
fn tag_text(model: &NerEdgeModel, text: &str) -> Result<NerEdgeEntities, Failure> {
    let tagged = model.tagger.tag(&[text], 1)?;
    let tagged = tagged.into_iter().next().ok_or_else(|| {
        Failure::new(
            NerEdgeStatus::Internal,
            "ner_edge_tag: the tagger returned no result",
        )
    })?;
    let mut items = Vec::with_capacity(tagged.entities.len());
    // Entities are in text order and do not overlap: count chars once, left to right.
    let mut chars = ner_edge::output::CharCounter::new(text);
    for e in &tagged.entities {
        let type_name = model.type_names.get(e.type_index).ok_or_else(|| {
            Failure::new(
                NerEdgeStatus::Internal,
                format!("ner_edge_tag: entity of unknown type {}", e.type_index),
            )
        })?;
        items.push(NerEdgeEntity {
            start: e.span.start,
            end: e.span.end,
            char_start: chars.chars_before(e.span.start),
            char_end: chars.chars_before(e.span.end),
            type_index: e.type_index,
            type_name: type_name.as_ptr(),
            score: e.score,
        });
    }
    Ok(NerEdgeEntities {
        items,
        _type_names: Arc::clone(&model.type_names),
    })
}

/// Tags one text: `len` bytes of UTF-8 at `text` (not NUL-terminated; NULL with `len` 0 is the
/// empty text), as one document, on the calling thread. On success `*out` holds its entities
/// (possibly none); free them with `ner_edge_entities_free`.
///
/// Errors: `NER_EDGE_STATUS_INVALID_UTF8` (the message gives the byte offset),
/// `NER_EDGE_STATUS_INVALID_ARGUMENT` (NULL `model` or `out`, NULL `text` with `len` > 0),
/// `NER_EDGE_STATUS_ENCODER`.
///
/// # Safety
/// `model` is NULL or live; `text` is NULL or points to `len` readable bytes; `out` is NULL (an
/// error) or valid for writing a pointer. `*out` is NULL on failure.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_tag(
    model: *const NerEdgeModel,
    text: *const c_char,
    len: usize,
    out: *mut *mut NerEdgeEntities,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_tag";
    status_call(F, || {
        // SAFETY: `out` is NULL or writable, by this function's contract.
        unsafe { clear_out(F, "out", out) }?;
        // SAFETY: NULL or live (shared use is fine: the model is Sync), by this contract.
        let model = unsafe { handle(F, "model", model) }?;
        // SAFETY: NULL or `len` readable bytes, by this function's contract.
        let text = unsafe { text_arg(F, text, len) }?;
        let entities = Box::into_raw(Box::new(tag_text(model, text)?));
        // SAFETY: checked non-NULL and writable by `clear_out`.
        unsafe { out.write(entities) };
        Ok(())
    })
}

/// Number of entities in `entities` (0 when NULL).
///
/// # Safety
/// `entities` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_entities_count(entities: *const NerEdgeEntities) -> usize {
    value_call(0, || {
        // SAFETY: NULL or live, by this function's contract.
        unsafe { entities.as_ref() }.map_or(0, |e| e.items.len())
    })
}

/// Entity `index` of `entities`, valid until the list is freed; NULL when `entities` is NULL or
/// `index` is out of range. The entities are contiguous: `ner_edge_entities_get(e, 0)` points
/// to an array of `ner_edge_entities_count(e)` entities.
///
/// # Safety
/// `entities` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_entities_get(
    entities: *const NerEdgeEntities,
    index: usize,
) -> *const NerEdgeEntity {
    value_call(std::ptr::null(), || {
        // SAFETY: NULL or live, by this function's contract.
        unsafe { entities.as_ref() }
            .and_then(|e| e.items.get(index))
            .map_or(std::ptr::null(), |e| e as *const NerEdgeEntity)
    })
}

/// Frees an entity list from `ner_edge_tag`; NULL is ignored.
///
/// # Safety
/// `entities` is NULL or a live pointer from `ner_edge_tag`, not in use by any other thread and
/// not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_entities_free(entities: *mut NerEdgeEntities) {
    value_call((), || {
        if !entities.is_null() {
            // SAFETY: a pointer from `Box::into_raw` in `ner_edge_tag`, freed once.
            drop(unsafe { Box::from_raw(entities) });
        }
    });
}

/// `ner-edge predict`'s JSON lines for `text` read as a file, documents one per line.
fn jsonl(model: &NerEdgeModel, text: &str) -> Result<Vec<u8>, Failure> {
    let mut segments = SegmentReader::new(
        text.as_bytes(),
        "<text>",
        DocumentMode::Lines,
        false,
        DEFAULT_MAX_SEGMENT_BYTES,
    );
    let mut out = Vec::new();
    let mut writer = DocumentWriter::new(
        &mut out,
        Format::Jsonl,
        model.tagger.type_names().to_vec(),
        false,
    );
    let mut block = Vec::new();
    let mut done = false;
    while !done {
        block.clear();
        let mut bytes = 0;
        while bytes < BLOCK_BYTES && block.len() < BLOCK_SEGMENTS {
            match segments.next_segment()? {
                Some(s) => {
                    bytes += s.text.len() + 1;
                    block.push(s);
                }
                None => {
                    done = true;
                    break;
                }
            }
        }
        if block.is_empty() {
            break;
        }
        let texts: Vec<&str> = block.iter().map(|s| s.text.as_str()).collect();
        let tagged = model.tagger.tag(&texts, model.threads)?;
        for (segment, t) in block.iter().zip(&tagged) {
            writer.write_segment(segment, t)?;
        }
    }
    writer.flush()?;
    drop(writer);
    Ok(out)
}

/// Tags `text` (`len` bytes of UTF-8, as for `ner_edge_tag`) and gives in `*out` exactly what
/// `ner-edge predict` (JSON lines) prints for a file holding these bytes: one line per line of
/// `text` (a final newline does not start another; `\r\n` counts as a newline), each
/// `{"text":...,"entities":[{"start":..,"end":..,"type":..,"text":..,"score":..}]}` with char
/// offsets and a trailing newline; nothing for an empty text. Lines are tagged in the CLI's
/// batches, over the options' threads. `*out` is NUL-terminated (JSON escapes every NUL) and
/// `*out_len`, when `out_len` is not NULL, is its length without the NUL. Free it with
/// `ner_edge_string_free`.
///
/// Errors: as `ner_edge_tag`.
///
/// # Safety
/// As `ner_edge_tag`; `out_len` is NULL or valid for writing a `size_t`. `*out` is NULL and
/// `*out_len` 0 on failure.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_tag_jsonl(
    model: *const NerEdgeModel,
    text: *const c_char,
    len: usize,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> NerEdgeStatus {
    const F: &str = "ner_edge_tag_jsonl";
    status_call(F, || {
        // SAFETY: `out` is NULL or writable, by this function's contract.
        unsafe { clear_out(F, "out", out) }?;
        if !out_len.is_null() {
            // SAFETY: not NULL, so writable by this function's contract.
            unsafe { out_len.write(0) };
        }
        // SAFETY: NULL or live (shared use is fine: the model is Sync), by this contract.
        let model = unsafe { handle(F, "model", model) }?;
        // SAFETY: NULL or `len` readable bytes, by this function's contract.
        let text = unsafe { text_arg(F, text, len) }?;
        let bytes = jsonl(model, text)?;
        let n = bytes.len();
        let line = CString::new(bytes).map_err(|_| {
            Failure::new(
                NerEdgeStatus::Internal,
                format!("{F}: JSON output contains NUL"),
            )
        })?;
        // SAFETY: checked non-NULL and writable by `clear_out`.
        unsafe { out.write(line.into_raw()) };
        if !out_len.is_null() {
            // SAFETY: not NULL, so writable by this function's contract.
            unsafe { out_len.write(n) };
        }
        Ok(())
    })
}

/// Frees a string from `ner_edge_tag_jsonl`; NULL is ignored.
///
/// # Safety
/// `s` is NULL or a live pointer from `ner_edge_tag_jsonl`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ner_edge_string_free(s: *mut c_char) {
    value_call((), || {
        if !s.is_null() {
            // SAFETY: a pointer from `CString::into_raw` in `ner_edge_tag_jsonl`, freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    });
}
