//! `NativeModel`: one loaded bundle, its label packs and a tagger, for the Python `Model`.

use std::cell::RefCell;
use std::io::{BufRead, Read, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyString};

use ner_edge::adapt::{
    adapt, parse_support, read_support, AdaptOptions, SupportFormat, TuneOptions,
    DEFAULT_MAX_SUPPORT_BYTES,
};
use ner_edge::bundle::Bundle;
use ner_edge::input::{DocumentMode, Segment, SegmentReader, DEFAULT_MAX_SEGMENT_BYTES};
use ner_edge::output::{CharCounter, DocumentWriter, Format};
use ner_edge::pack::LabelPack;
use ner_edge::pipeline::{TaggedText, Tagger};
use ner_edge::{Error, Result};

use crate::errors::{named_error, IntoPyResult};
use crate::pack::Pack;

/// A bundle, its active label packs and the tagger built from them (immutable once loaded).
///
/// Tagging releases the GIL, so Python threads can tag with one model at once (each call then
/// runs on its own thread; `threads` is the worker threads *within* one call).
#[pyclass(module = "ner_edge._native", frozen)]
pub struct NativeModel {
    bundle: Bundle,
    tagger: Tagger,
    threads: usize,
}

/// Loads the bundle at `path`, or the embedded default bundle when `None`.
fn open_bundle(path: Option<&PathBuf>) -> Result<Bundle> {
    match path {
        Some(p) => Bundle::open(p),
        None => ner_edge::bundle::embedded().unwrap_or_else(|| {
            Err(Error::Usage(
                "no bundle path given and this build has no embedded default bundle".into(),
            ))
        }),
    }
}

/// One entity as Python sees it: code-point offsets into the text, end exclusive.
struct PyEntity<'t> {
    start: usize,
    end: usize,
    text: &'t str,
    label: &'t str,
    score: f32,
}

impl NativeModel {
    /// The entities of `tagged` (the tagging of `text`) with code-point offsets, restricted to
    /// the type indices `keep` (all when `None`) and to scores of at least `threshold`.
    fn entities<'t>(
        &'t self,
        text: &'t str,
        tagged: &TaggedText,
        keep: Option<&[bool]>,
        threshold: Option<f32>,
    ) -> Vec<PyEntity<'t>> {
        let names = self.tagger.type_names();
        let mut chars = CharCounter::new(text);
        let mut out = Vec::with_capacity(tagged.entities.len());
        for e in &tagged.entities {
            if keep.is_some_and(|k| !k.get(e.type_index).copied().unwrap_or(false))
                || threshold.is_some_and(|t| e.score < t)
            {
                continue;
            }
            let Range { start, end } = e.span.clone();
            out.push(PyEntity {
                start: chars.chars_before(start),
                end: chars.chars_before(end),
                text: text.get(start..end).unwrap_or(""),
                label: names.get(e.type_index).map_or("?", String::as_str),
                score: e.score,
            });
        }
        out
    }

    /// `keep[k]`: whether active type `k` is in `types`; `None` for no restriction. Unknown
    /// names are a usage error naming the active types.
    fn type_filter(&self, types: Option<&[String]>) -> Result<Option<Vec<bool>>> {
        let Some(types) = types else {
            return Ok(None);
        };
        let names = self.tagger.type_names();
        let mut keep = vec![false; names.len()];
        for t in types {
            match names.iter().position(|n| n == t) {
                Some(k) => keep[k] = true,
                None => {
                    return Err(Error::Usage(format!(
                        "unknown entity type {t:?}: the active types are {} (load the model \
                         with types=[...] or packs=[...] to activate others)",
                        names.join(", ")
                    )))
                }
            }
        }
        Ok(Some(keep))
    }
}

/// A byte buffer shared between a [`DocumentWriter`] and the code that drains it after each
/// block.
#[derive(Clone, Default)]
struct SharedBuffer(Rc<RefCell<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The input of `ner-edge predict` made of the `str` items of a Python iterator: each item is
/// one line, followed by `"\n"`. Where the iterator fails, yields a non-`str` or a line with a
/// newline in it, reading fails and the Python exception waits in `error`.
struct PyLines<'py> {
    iter: Bound<'py, PyIterator>,
    buf: Vec<u8>,
    pos: usize,
    index: usize,
    done: bool,
    error: Rc<RefCell<Option<PyErr>>>,
}

impl PyLines<'_> {
    /// Reads the next line into `buf`; false at the end of the iterator.
    fn next_line(&mut self) -> PyResult<bool> {
        let Some(item) = self.iter.next() else {
            return Ok(false);
        };
        let item = item?;
        let line = item.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "lines[{}] is a {}, not a str",
                self.index,
                item.get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        })?;
        let line = line.to_cow()?;
        if line.contains('\n') {
            return Err(named_error(
                self.iter.py(),
                "UsageError",
                format!(
                    "lines[{}] contains a newline: one document per line, as the CLI reads a \
                     file",
                    self.index
                ),
            ));
        }
        self.buf.clear();
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.pos = 0;
        self.index += 1;
        Ok(true)
    }
}

impl Read for PyLines<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for PyLines<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.buf.len() && !self.done {
            match self.next_line() {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(e) => {
                    *self.error.borrow_mut() = Some(e);
                    self.done = true;
                    return Err(std::io::Error::other("the Python iterable of lines failed"));
                }
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.buf.len());
    }
}

#[pymethods]
impl NativeModel {
    /// Loads `bundle` (a path; the embedded default bundle when `None`) with `packs` active on
    /// top of it, as `ner-edge predict --bundle B --pack P... --types T --override --no-other
    /// --threads N` does. The GIL is released while the encoder plan is built.
    #[new]
    #[pyo3(signature = (bundle=None, packs=Vec::new(), types=None, allow_override=false, no_other=false, threads=1))]
    fn py_new(
        py: Python<'_>,
        bundle: Option<PathBuf>,
        packs: Vec<PyRef<'_, Pack>>,
        types: Option<Vec<String>>,
        allow_override: bool,
        no_other: bool,
        threads: usize,
    ) -> PyResult<NativeModel> {
        let packs: Vec<LabelPack> = packs.iter().map(|p| p.label_pack().clone()).collect();
        py.detach(|| {
            let bundle = open_bundle(bundle.as_ref())?;
            let mut tagger = Tagger::with_packs(&bundle, &packs, types.as_deref(), allow_override)?;
            if no_other {
                tagger.disable_other();
            }
            Ok(NativeModel {
                bundle,
                tagger,
                threads: threads.max(1),
            })
        })
        .py_err(py)
    }

    /// Names of the active entity types, in label order (the bundle's, then each pack's).
    #[getter]
    fn types(&self) -> Vec<String> {
        self.tagger.type_names().to_vec()
    }

    /// Content id of the loaded bundle (what a pack's `base_bundle` must equal).
    #[getter]
    fn bundle_id(&self) -> String {
        self.bundle.content_id()
    }

    /// Worker threads per tagging call.
    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    /// Tags `texts` as one batch, GIL released. Returns one list per text of entity dicts
    /// `{"start", "end", "text", "label", "score"}`: `start`/`end` are Python string indices
    /// (code points, end exclusive), `score` the CRF marginal of exactly that entity (not
    /// rounded). `types` keeps only entities of those active types (an unknown name raises
    /// `ner_edge.UsageError`); `threshold` drops entities scored below it.
    #[pyo3(signature = (texts, types=None, threshold=None))]
    fn tag<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        types: Option<Vec<String>>,
        threshold: Option<f32>,
    ) -> PyResult<Bound<'py, PyList>> {
        let keep = self.type_filter(types.as_deref()).py_err(py)?;
        let tagged = py
            .detach(|| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                self.tagger.tag(&refs, self.threads)
            })
            .py_err(py)?;
        let k_start = pyo3::intern!(py, "start");
        let k_end = pyo3::intern!(py, "end");
        let k_text = pyo3::intern!(py, "text");
        let k_label = pyo3::intern!(py, "label");
        let k_score = pyo3::intern!(py, "score");
        let out = PyList::empty(py);
        for (text, t) in texts.iter().zip(&tagged) {
            let ents = PyList::empty(py);
            for e in self.entities(text, t, keep.as_deref(), threshold) {
                let d = PyDict::new(py);
                d.set_item(k_start, e.start)?;
                d.set_item(k_end, e.end)?;
                d.set_item(k_text, PyString::new(py, e.text))?;
                d.set_item(k_label, PyString::new(py, e.label))?;
                d.set_item(k_score, f64::from(e.score))?;
                ents.append(d)?;
            }
            out.append(ents)?;
        }
        Ok(out)
    }

    /// Writes to `file` (anything with `write(bytes)`) exactly what `ner-edge predict`
    /// (JSONL) writes for a file whose lines are the `str` items of `lines`, with this model's
    /// bundle, packs and options: the same blocks through the same writer, so the same bytes.
    /// Streams: reads one block of lines, tags it with the GIL released, writes its output,
    /// and so on. Returns the number of documents (lines) written. No line may contain `"\n"`
    /// (`ner_edge.UsageError`); a trailing `"\r"` is dropped, as from a CRLF line end.
    fn write_jsonl(
        &self,
        py: Python<'_>,
        lines: &Bound<'_, PyAny>,
        file: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let error = Rc::new(RefCell::new(None));
        let reader = PyLines {
            iter: lines.try_iter()?,
            buf: Vec::new(),
            pos: 0,
            index: 0,
            done: false,
            error: Rc::clone(&error),
        };
        let mut segments = SegmentReader::new(
            reader,
            "<lines>",
            DocumentMode::Lines,
            false,
            DEFAULT_MAX_SEGMENT_BYTES,
        );
        let buffer = SharedBuffer::default();
        let mut writer = DocumentWriter::new(
            buffer.clone(),
            Format::Jsonl,
            self.tagger.type_names().to_vec(),
            false,
        );
        let write = pyo3::intern!(py, "write");
        let mut documents = 0;
        // The CLI's loop (runtime/src/main.rs, `predict`): same blocks, same writer.
        let mut block: Vec<Segment> = Vec::new();
        loop {
            let read = segments.next_block(&mut block);
            if let Some(e) = error.borrow_mut().take() {
                return Err(e);
            }
            read.py_err(py)?;
            if block.is_empty() {
                break;
            }
            let tagged = py
                .detach(|| {
                    let texts: Vec<&str> = block.iter().map(|s| s.text.as_str()).collect();
                    self.tagger.tag(&texts, self.threads)
                })
                .py_err(py)?;
            for (seg, t) in block.iter().zip(&tagged) {
                writer.write_segment(seg, t).py_err(py)?;
                documents += usize::from(seg.last);
            }
            let bytes = std::mem::take(&mut *buffer.0.borrow_mut());
            file.call_method1(write, (PyBytes::new(py, &bytes),))?;
        }
        Ok(documents)
    }

    /// Adapts new entity types on this model's bundle, as `ner-edge adapt` does, and returns
    /// the label pack. The support set is the file `support_path` or the text `support_text`
    /// (in `format`: auto, conll, tsv, jsonl or inline), or neither when every type has a
    /// description. GIL released.
    #[pyo3(signature = (
        support_path=None, support_text=None, format="auto", descriptions=Vec::new(),
        types=None, examples_only=false, tune_heads=0,
        tune_lr=ner_edge::adapt::tune::DEFAULT_TUNE_LR,
        tune_l2=ner_edge::adapt::tune::DEFAULT_TUNE_L2, notes=String::new()
    ))]
    #[allow(clippy::too_many_arguments)]
    fn adapt(
        &self,
        py: Python<'_>,
        support_path: Option<PathBuf>,
        support_text: Option<String>,
        format: &str,
        descriptions: Vec<(String, String)>,
        types: Option<Vec<String>>,
        examples_only: bool,
        tune_heads: usize,
        tune_lr: f32,
        tune_l2: f32,
        notes: String,
    ) -> PyResult<Pack> {
        let format: SupportFormat = format.parse().py_err(py)?;
        let bytes = py
            .detach(|| -> Result<Vec<u8>> {
                let support = match (&support_path, &support_text) {
                    (Some(_), Some(_)) => {
                        return Err(Error::Usage(
                            "give the support set as a file or as examples, not both".into(),
                        ))
                    }
                    (Some(p), None) => Some(read_support(p, format, DEFAULT_MAX_SUPPORT_BYTES)?),
                    (None, Some(t)) => Some(parse_support(t, "<examples>", format)?),
                    (None, None) if descriptions.is_empty() => {
                        return Err(Error::Usage(
                            "adapt needs a support set (examples or a file), or a description \
                             for every type"
                                .into(),
                        ))
                    }
                    (None, None) => None,
                };
                if tune_heads > 0 && support.is_none() {
                    return Err(Error::Usage(
                        "tune_heads needs a support set with examples".into(),
                    ));
                }
                if !(tune_lr.is_finite() && tune_lr > 0.0 && tune_l2.is_finite() && tune_l2 >= 0.0)
                {
                    return Err(Error::Usage(format!(
                        "tune_lr must be positive and tune_l2 non-negative (got {tune_lr} and \
                         {tune_l2})"
                    )));
                }
                let opts = AdaptOptions {
                    descriptions,
                    types,
                    examples_only,
                    notes,
                    tune: (tune_heads > 0).then_some(TuneOptions {
                        steps: tune_heads,
                        learning_rate: tune_lr,
                        l2: tune_l2,
                    }),
                };
                adapt(&self.bundle, support.as_ref(), &opts)?.to_pack_bytes()
            })
            .py_err(py)?;
        Pack::from_bytes(bytes, "<adapted pack>").py_err(py)
    }
}
