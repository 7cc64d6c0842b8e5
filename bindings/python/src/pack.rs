//! `ner_edge.Pack`: a label pack (new entity types adapted on one bundle) held in memory.

use std::io::Write;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use ner_edge::pack::{LabelPack, MAX_PACK_BYTES};
use ner_edge::Error;

use crate::errors::IntoPyResult;

/// A validated label pack and its file bytes.
///
/// Made by `Model.adapt`, read from a `.nerp` file (`Pack.open`) or from bytes (`Pack(data)`);
/// `ner_edge.load(packs=[...])` activates it. It pickles as its bytes.
#[pyclass(module = "ner_edge._native", name = "Pack", frozen)]
pub struct Pack {
    bytes: Vec<u8>,
    pack: LabelPack,
}

impl Pack {
    /// Validates `bytes` as a pack; `name` starts every error message.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> ner_edge::Result<Pack> {
        let pack = LabelPack::from_bytes(&bytes, name)?;
        Ok(Pack { bytes, pack })
    }

    /// The pack as the runtime reads it.
    pub fn label_pack(&self) -> &LabelPack {
        &self.pack
    }

    /// Reads and validates the pack file at `path` (at most `MAX_PACK_BYTES`).
    fn read(path: &Path) -> ner_edge::Result<Pack> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io("open label pack", path, e))?
            .len();
        if len > MAX_PACK_BYTES {
            return Err(Error::Bundle(format!(
                "{}: {len} bytes is more than a label pack can be ({MAX_PACK_BYTES})",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io("read label pack", path, e))?;
        Pack::from_bytes(bytes, &path.display().to_string())
    }
}

#[pymethods]
impl Pack {
    /// `Pack(data, name="<pack>")`: validates pack file bytes; `name` starts error messages.
    /// Raises `ner_edge.BundleError` for bytes that are not a valid pack.
    #[new]
    #[pyo3(signature = (data, name = "<pack>"))]
    fn py_new(py: Python<'_>, data: Vec<u8>, name: &str) -> PyResult<Pack> {
        Pack::from_bytes(data, name).py_err(py)
    }

    /// Reads and validates the `.nerp` file at `path` (`OSError` if it cannot be read,
    /// `ner_edge.BundleError` if it is not a valid pack).
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Pack> {
        Pack::read(&path).py_err(py)
    }

    /// The name error messages give the pack: its path, or the name it was made with.
    #[getter]
    fn name(&self) -> String {
        self.pack.name().to_string()
    }

    /// Names of the pack's entity types, in pack order.
    #[getter]
    fn types(&self) -> Vec<String> {
        self.pack.type_names()
    }

    /// Content id of the bundle the pack was adapted on (a pack only loads with that bundle).
    #[getter]
    fn base_bundle(&self) -> String {
        self.pack.metadata().base_bundle.content_id.clone()
    }

    /// Whether the pack carries tuned heads (`adapt(tune_heads=N)` with N > 0).
    #[getter]
    fn tuned_heads(&self) -> bool {
        self.pack.heads().is_some()
    }

    /// The same text as `ner-edge inspect PACK`.
    fn describe(&self) -> String {
        self.pack.describe()
    }

    /// The pack file's bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.bytes)
    }

    /// Writes the pack file to `path` atomically (temporary file in the same directory, fsync,
    /// rename), as `ner-edge adapt --out` does. `OSError` on failure.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        write_atomically(&path, &self.bytes).py_err(py)
    }

    /// Pickles as `Pack(bytes, name)`.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let this = slf.get();
        let args = (PyBytes::new(py, &this.bytes), this.pack.name().to_string());
        PyTuple::new(
            py,
            [
                slf.get_type().into_any(),
                args.into_pyobject(py)?.into_any(),
            ],
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "Pack(types={:?}, base_bundle={:?}, tuned_heads={})",
            self.pack.type_names(),
            self.pack.metadata().base_bundle.content_id,
            self.pack.heads().is_some()
        )
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory that is synced and
/// then renamed over `path`, so readers never see a partial file.
fn write_atomically(path: &Path, bytes: &[u8]) -> ner_edge::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write label pack", path, e)
    })
}
