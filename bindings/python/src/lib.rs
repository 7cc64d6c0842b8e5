//! `ner_edge._native`: the ner-edge runtime as a CPython extension module (abi3, CPython ≥ 3.9).
//!
//! The public Python API is the package `ner_edge` (`python/ner_edge/`): `ner_edge.load`, its
//! `Model`, `ner_edge.dask` and the spaCy component are Python on top of this module, which
//! holds what must run in Rust:
//!
//! - [`model::NativeModel`]: a loaded [`ner_edge::pipeline::Tagger`] with its bundle and
//!   packs; tags lists of texts (with Python string offsets) or writes them as `ner-edge
//!   predict`'s JSON lines, and adapts label packs, with the GIL released while it works;
//! - [`pack::Pack`]: a label pack (public as `ner_edge.Pack`), picklable as its bytes;
//! - [`blocks::document_block_starts`]: where `ner-edge predict` starts its tagging blocks in a
//!   file, so a distributed run can cut partitions there and reproduce its output exactly.
//!
//! Every runtime error becomes a Python exception carrying the runtime's message ([`errors`]).

mod blocks;
mod errors;
mod model;
mod pack;

use pyo3::prelude::*;

/// The extension module `ner_edge._native`.
#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::NativeModel>()?;
    m.add_class::<pack::Pack>()?;
    m.add_function(wrap_pyfunction!(blocks::document_block_starts, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("BLOCK_SEGMENTS", ner_edge::input::BLOCK_SEGMENTS)?;
    m.add("BLOCK_BYTES", ner_edge::input::BLOCK_BYTES)?;
    Ok(())
}
