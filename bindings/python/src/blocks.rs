//! Where `ner-edge predict` starts its tagging blocks in a file.
//!
//! The CLI tags a file in blocks ([`SegmentReader::next_block`]) and a score's last bits depend
//! on the block it was tagged in. A distributed run that cuts its partitions where the CLI
//! starts a block, and tags each partition in blocks from its start, therefore forms exactly
//! the CLI's blocks and writes exactly its output.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::rc::Rc;

use pyo3::prelude::*;

use ner_edge::input::{DocumentMode, SegmentReader, DEFAULT_MAX_SEGMENT_BYTES};
use ner_edge::Error;

use crate::errors::IntoPyResult;

/// A reader that counts the bytes its consumer has consumed, in a counter shared with the
/// code that hands it over.
struct CountingReader<R> {
    inner: R,
    consumed: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.set(self.consumed.get() + n as u64);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.consumed.set(self.consumed.get() + amount as u64);
        self.inner.consume(amount);
    }
}

/// `[(byte_offset, line_index), ...]`: every block of `ner-edge predict PATH` (one document per
/// line) that starts at the beginning of a line, as the byte offset of that line and its
/// 0-based index, in file order. The first entry is `(0, 0)` unless the file is empty. A block
/// that starts inside a line longer than the segment limit is not listed (a partition cannot
/// start there). Raises `OSError` if the file cannot be read, `ner_edge.InputError` (naming
/// line and byte) if it is not UTF-8, exactly as the CLI would.
#[pyfunction]
pub fn document_block_starts(py: Python<'_>, path: PathBuf) -> PyResult<Vec<(u64, usize)>> {
    py.detach(|| block_starts(&path)).py_err(py)
}

fn block_starts(path: &std::path::Path) -> ner_edge::Result<Vec<(u64, usize)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let consumed = Rc::new(Cell::new(0u64));
    let reader = CountingReader {
        inner: BufReader::with_capacity(1 << 16, file),
        consumed: Rc::clone(&consumed),
    };
    let source = path.display().to_string();
    let mut segments = SegmentReader::new(
        reader,
        &source,
        DocumentMode::Lines,
        false,
        DEFAULT_MAX_SEGMENT_BYTES,
    );
    let mut starts = Vec::new();
    let mut block = Vec::new();
    loop {
        // When the previous block ended with the last segment of a line, the reader has
        // consumed exactly up to the end of that line: no segment of a later line is made
        // before the queue of the current one is empty.
        let at = consumed.get();
        segments.next_block(&mut block)?;
        let Some(first) = block.first() else {
            break;
        };
        if first.first {
            starts.push((at, first.doc));
        }
    }
    Ok(starts)
}
