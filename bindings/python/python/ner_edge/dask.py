"""Batch tagging on Dask: many processes, many machines, exactly-once part files.

    import ner_edge, ner_edge.dask
    from dask.distributed import Client

    client = Client("tcp://scheduler:8786")           # or LocalCluster(n_workers=..., threads_per_worker=1)
    bag = ner_edge.dask.read_lines("/shared/corpus.txt")
    parts = ner_edge.dask.tag_bag(bag, "/shared/out", model=ner_edge.load())
    ner_edge.dask.concatenate(parts, "/shared/corpus.jsonl")   # == ner-edge predict corpus.txt

How it works:

- The model travels as its ``ModelSpec`` (bundle path, pack bytes, options) and is loaded once
  per worker process (``ModelSpec.cached``), not once per partition.
- Each partition is tagged as a stream, block by block, with the runtime's own JSONL writer
  (``Model.write_jsonl``), into ``OUT/part-NNNNN.jsonl`` (or ``.parquet``): the part file is
  written under a temporary name and renamed into place when complete. When a worker dies
  mid-partition, Dask runs the partition again elsewhere and that run's rename replaces
  nothing or an identical file: the parts together hold every document exactly once, in input
  order. Temporary files of killed runs are removed when ``tag_bag`` returns.
- Output is byte-identical to ``ner-edge predict FILE`` for a bag from ``read_lines(FILE)``:
  it cuts partitions where the CLI starts a tagging block, and the parts are tagged in the
  CLI's blocks. (With other partitions, a rounded score can differ from the CLI's in its 4th
  decimal on a few lines in a thousand, because the encoder's floating-point sums depend on
  which texts share a batch; entities and offsets are the same but for such near-ties.)

Ids: a bag of ``str`` gives the CLI's lines; a bag of ``(id, text)`` pairs, or a Dask
DataFrame (ids from ``id_column``, else its index), gives lines that start with
``{"id": ID,`` followed by the CLI's line without its ``{``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import uuid
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import dask
import dask.bag as db

from . import Model, ModelSpec, UsageError, cli_block_starts

__all__ = ["concatenate", "read_lines", "tag_bag"]

#: Part file names: ``part-00000.jsonl``, ``part-00001.jsonl``, ... (or ``.parquet``).
PART_PATTERN = "part-{index:05d}.{extension}"

_FORMATS = {"jsonl": "jsonl", "parquet": "parquet"}


def read_lines(path: Union[str, "os.PathLike[str]"], blocks_per_partition: int = 4,
               line_numbers: bool = False) -> db.Bag:
    """A Dask bag of the lines of the UTF-8 file ``path`` (one document per line; the
    terminator and a CRLF's ``\\r`` dropped, as the CLI reads it), with partitions cut where
    ``ner-edge predict`` starts a tagging block, ``blocks_per_partition`` blocks each (a block
    is 512 lines, fewer where lines average over 511 bytes). With ``line_numbers``, items are
    ``(line_index, text)`` pairs (0-based). The file is scanned once here, then each partition
    reads its own byte range: remote workers need the file at the same path."""
    if blocks_per_partition < 1:
        raise UsageError(f"blocks_per_partition must be at least 1, got {blocks_per_partition}")
    path = os.path.abspath(os.fspath(path))
    starts = cli_block_starts(path)[::blocks_per_partition]
    if not starts:
        return db.from_sequence([], npartitions=1)
    size = os.path.getsize(path)
    ends = [offset for offset, _ in starts[1:]] + [size]
    parts = [
        dask.delayed(_read_range, pure=True)(path, offset, end, first, line_numbers)
        for (offset, first), end in zip(starts, ends)
    ]
    return db.from_delayed(parts)


def _read_range(path: str, start: int, end: int, first_line: int,
                line_numbers: bool) -> List[Any]:
    """The lines in bytes ``[start, end)`` of ``path`` (which start and end at line starts)."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.decode("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
        terminated = len(lines)
    else:
        terminated = len(lines) - 1  # the file's last line, without a terminator
    for i in range(terminated):
        if lines[i].endswith("\r"):
            lines[i] = lines[i][:-1]
    if line_numbers:
        return list(zip(range(first_line, first_line + len(lines)), lines))
    return lines


def _spec_of(model: Union[None, Model, ModelSpec]) -> ModelSpec:
    if model is None:
        return ModelSpec()
    if isinstance(model, Model):
        return model.spec
    if isinstance(model, ModelSpec):
        return model
    raise TypeError(f"model must be a ner_edge.Model or ModelSpec, got {type(model).__name__}")


def _split_items(items: Iterable[Any]) -> Tuple[Iterator[str], Optional[List[Any]]]:
    """The texts of a bag partition and, for ``(id, text)`` items, their ids."""
    items = list(items)
    if not items or all(isinstance(x, str) for x in items):
        return iter(items), None
    ids, texts = [], []
    for i, x in enumerate(items):
        if not (isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[1], str)):
            raise TypeError(
                f"bag item {i} of a partition is a {type(x).__name__}: items must all be str, "
                "or all (id, text) pairs"
            )
        ids.append(x[0])
        texts.append(x[1])
    return iter(texts), ids


def _frame_items(frame: Any, text_column: str, id_column: Optional[str]) -> List[Tuple[Any, str]]:
    """``(id, text)`` pairs of a pandas partition of a Dask DataFrame."""
    if text_column not in frame.columns:
        raise UsageError(f"the DataFrame has no column {text_column!r} (text_column)")
    ids = frame.index if id_column is None else frame[id_column]
    return list(zip([_plain(i) for i in ids], frame[text_column].tolist()))


def _plain(value: Any) -> Any:
    """A JSON-serialisable Python value for an id (numpy scalars become Python numbers)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class _IdLines:
    """A binary file-like object that receives the CLI's JSON lines and writes each one with
    ``"id": ID`` as its first field (to ``out``) or parses it into ``records``."""

    def __init__(self, ids: Optional[Sequence[Any]], out: Any = None, records: Optional[list] = None):
        self._ids = iter(ids) if ids is not None else None
        self._out = out
        self._records = records
        self._pending = b""

    def write(self, data: bytes) -> int:
        if self._ids is None and self._records is None:
            return self._out.write(data)
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._line(line)
        return len(data)

    def _line(self, line: bytes) -> None:
        if self._records is not None:
            record = json.loads(line)
            if self._ids is not None:
                record = {"id": _plain(next(self._ids)), **record}
            self._records.append(record)
            return
        ident = json.dumps(_plain(next(self._ids)), ensure_ascii=False, separators=(",", ":"))
        self._out.write(b'{"id":' + ident.encode("utf-8") + b"," + line[1:] + b"\n")


def _tag_partition(items: Iterable[Any], index: int, out_dir: str, spec: ModelSpec,
                   output: str) -> str:
    """Tags one partition into its part file (temporary name, then rename); returns its path."""
    model = spec.cached()
    texts, ids = _split_items(items)
    final = os.path.join(out_dir, PART_PATTERN.format(index=index, extension=_FORMATS[output]))
    tmp = f"{final}.tmp-{uuid.uuid4().hex}"
    try:
        if output == "jsonl":
            with open(tmp, "wb") as f:
                model.write_jsonl(texts, _IdLines(ids, out=f))
                f.flush()
                os.fsync(f.fileno())
        else:
            _write_parquet(model, texts, ids, tmp)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return final


def _write_parquet(model: Model, texts: Iterator[str], ids: Optional[List[Any]], tmp: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records: list = []
    model.write_jsonl(texts, _IdLines(ids, records=records))
    entity = pa.struct([
        ("start", pa.int64()), ("end", pa.int64()), ("type", pa.string()),
        ("text", pa.string()), ("score", pa.float64()),
    ])
    fields = [("text", pa.string()), ("entities", pa.list_(entity))]
    if ids is not None:
        table = pa.Table.from_pylist(records)
        schema = pa.schema([("id", table.schema.field("id").type), *fields])
    else:
        schema = pa.schema(fields)
    with open(tmp, "wb") as f:
        pq.write_table(pa.Table.from_pylist(records, schema=schema), f)
        f.flush()
        os.fsync(f.fileno())


def _partitions(data: Any, text_column: str, id_column: Optional[str]) -> list:
    """One Delayed per partition of a Dask bag or DataFrame, yielding str or (id, text) items."""
    if isinstance(data, db.Bag):
        return list(data.to_delayed())
    to_delayed = getattr(data, "to_delayed", None)
    if callable(to_delayed) and hasattr(data, "columns"):
        frame_items = dask.delayed(_frame_items, pure=True)
        return [frame_items(part, text_column, id_column) for part in to_delayed()]
    raise TypeError(f"tag_bag takes a dask.bag.Bag or a dask DataFrame, got {type(data).__name__}")


def _remove_temporaries(out_dir: str) -> None:
    for path in glob.glob(os.path.join(out_dir, "part-*.tmp-*")):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def tag_bag(
    data: Any,
    out_dir: Union[str, "os.PathLike[str]"],
    *,
    model: Union[None, Model, ModelSpec] = None,
    text_column: str = "text",
    id_column: Optional[str] = None,
    output: str = "jsonl",
    overwrite: bool = False,
) -> List[str]:
    """Tags every document of ``data`` on the current Dask scheduler (a distributed
    ``Client`` if one is active) and returns the paths of the part files, in partition order.

    data: a ``dask.bag.Bag`` of ``str`` (e.g. ``read_lines(path)``) or of ``(id, text)`` pairs,
        or a Dask DataFrame with a ``text_column`` (ids: ``id_column``, else the index).
    out_dir: where ``part-NNNNN.jsonl`` (or ``.parquet``) files go; created if missing. It must
        hold no part files unless ``overwrite`` (which removes them first).
    model: a ``Model`` or ``ModelSpec`` (default: the embedded default model); each worker
        process loads it once.
    output: ``"jsonl"`` (the CLI's lines) or ``"parquet"`` (needs pyarrow; columns ``id`` when
        there are ids, ``text``, ``entities`` as a list of
        ``{start, end, type, text, score}``).

    A worker killed mid-run costs a re-run of its partitions, never a lost or repeated
    document (see the module documentation).
    """
    if output not in _FORMATS:
        raise UsageError(f"output must be 'jsonl' or 'parquet', got {output!r}")
    if output == "parquet":
        import pyarrow  # noqa: F401  (fail here, not on the workers)
    spec = _spec_of(model)
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    existing = sorted(glob.glob(os.path.join(out_dir, "part-*")))
    if existing:
        if not overwrite:
            raise UsageError(
                f"{out_dir} already holds part files ({os.path.basename(existing[0])}, ...): "
                "pass overwrite=True or another directory"
            )
        for path in existing:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    tag = dask.delayed(_tag_partition, pure=False)
    tasks = [
        tag(part, i, out_dir, spec, output, dask_key_name=f"ner-edge-tag-{uuid.uuid4().hex}-{i}")
        for i, part in enumerate(_partitions(data, text_column, id_column))
    ]
    try:
        paths = dask.compute(*tasks)
    finally:
        _remove_temporaries(out_dir)
    return list(paths)


def concatenate(parts: Iterable[Union[str, "os.PathLike[str]"]],
                destination: Union[str, "os.PathLike[str]"]) -> str:
    """Joins JSONL part files, in the order given, into ``destination`` (written under a
    temporary name, then renamed); returns its path."""
    destination = os.fspath(destination)
    tmp = f"{destination}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, destination)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return destination
