"""ner-edge for Python: few-shot named-entity recognition on CPU.

    >>> import ner_edge
    >>> model = ner_edge.load()                      # the default model, embedded in the wheel
    >>> model.predict_entities("Tim Cook visited Siemens in Erlangen.")
    [{'start': 0, 'end': 8, 'text': 'Tim Cook', 'label': 'PER', 'score': 0.99...}, ...]

The model is the Rust runtime of the ``ner-edge`` CLI (tokenizer, tract encoder, CRF); tagging
releases the GIL. Offsets are Python string indices (code points, end exclusive).
``Model.predict_jsonl`` / ``Model.write_jsonl`` write exactly the bytes of
``ner-edge predict FILE``. Models and packs pickle (a model as its load options, reloaded once
per process), so they travel to Dask, Ray or Spark workers; see ``ner_edge.dask``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ._errors import BundleError, EncoderError, InputError, NerEdgeError, UsageError
from ._native import BLOCK_SEGMENTS, NativeModel, Pack, __version__, document_block_starts

__all__ = [
    "BundleError",
    "DEFAULT_BATCH_SIZE",
    "EncoderError",
    "Entity",
    "InputError",
    "Model",
    "ModelSpec",
    "NerEdgeError",
    "Pack",
    "UsageError",
    "__version__",
    "cli_block_starts",
    "load",
]

#: Texts per tagging call in ``Model.inference`` and ``Model.pipe``: the CLI's block size for
#: short lines, so encoder batches are as full as the CLI's.
DEFAULT_BATCH_SIZE = BLOCK_SEGMENTS

#: One entity: ``{"start": int, "end": int, "text": str, "label": str, "score": float}``.
Entity = Dict[str, Any]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to load a model again, e.g. in another process: what a ``Model``
    pickles as. ``bundle`` is an absolute path (``None``: the embedded default bundle), so it
    must exist at the same path where the spec is loaded (shared storage for remote workers);
    the packs travel as ``(name, bytes)`` pairs (the name is for error messages)."""

    bundle: Optional[str] = None
    packs: Tuple[Tuple[str, bytes], ...] = ()
    types: Optional[Tuple[str, ...]] = None
    allow_override: bool = False
    no_other: bool = False
    threads: int = 1

    def load(self) -> "Model":
        """A new model loaded from this spec."""
        packs = [Pack(data, name) for name, data in self.packs]
        native = NativeModel(
            self.bundle,
            packs,
            list(self.types) if self.types is not None else None,
            self.allow_override,
            self.no_other,
            self.threads,
        )
        return Model(native, self)

    def cached(self) -> "Model":
        """The model of this spec, loaded at most once per process (later calls return the same
        object): how unpickled models and Dask partitions get their model."""
        with _CACHE_LOCK:
            model = _CACHE.get(self)
            if model is None:
                model = self.load()
                _CACHE[self] = model
            return model


_CACHE: Dict[ModelSpec, "Model"] = {}
_CACHE_LOCK = threading.Lock()


def _restore(spec: ModelSpec) -> "Model":
    """Unpickles a model: the process's cached model of ``spec``."""
    return spec.cached()


def _type_list(types: Union[None, str, Iterable[str]]) -> Optional[List[str]]:
    """``None``, or the type names of ``"A,B"`` or of an iterable of names."""
    if types is None:
        return None
    if isinstance(types, str):
        return [t.strip() for t in types.split(",") if t.strip()]
    names = list(types)
    for t in names:
        if not isinstance(t, str):
            raise TypeError(f"entity type names must be str, got {type(t).__name__}")
    return names


def _pack_entry(pack: Union[Pack, PathLike]) -> Tuple[str, bytes]:
    """``(name, bytes)`` of a ``Pack`` or of the pack file at a path (read and validated)."""
    if not isinstance(pack, Pack):
        pack = Pack.open(os.fspath(pack))
    return pack.name, pack.to_bytes()


def load(
    path: Optional[PathLike] = None,
    *,
    packs: Iterable[Union[Pack, PathLike]] = (),
    types: Union[None, str, Iterable[str]] = None,
    allow_override: bool = False,
    no_other: bool = False,
    threads: int = 1,
) -> "Model":
    """Loads a model, as ``ner-edge predict`` does with the same options.

    path: a bundle file (``.nerb``); ``None`` loads the default model embedded in the wheel.
    packs: label packs (``Pack`` objects or ``.nerp`` paths) whose types are activated on top
        of the bundle's (``--pack``); each must have been adapted on this bundle.
    types: the active types (``--types``), as names or one comma-separated string; default:
        the bundle's default set and every type of every pack.
    allow_override: let a later pack redefine a type name (``--override``).
    no_other: do not decode the bundle's "other" type (``--no-other``).
    threads: worker threads of one tagging call (``--threads``); the output does not depend
        on it.

    Raises ``FileNotFoundError``/``OSError`` for a path that cannot be read,
    ``ner_edge.BundleError`` for a corrupt bundle or pack or a pack of another bundle, and
    ``ner_edge.UsageError`` for unknown or duplicate type names.
    """
    if threads < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    type_list = _type_list(types)
    spec = ModelSpec(
        bundle=None if path is None else os.path.abspath(os.fspath(path)),
        packs=tuple(_pack_entry(p) for p in packs),
        types=None if type_list is None else tuple(type_list),
        allow_override=bool(allow_override),
        no_other=bool(no_other),
        threads=int(threads),
    )
    return spec.load()


def cli_block_starts(path: PathLike) -> List[Tuple[int, int]]:
    """Where ``ner-edge predict PATH`` starts a tagging block at the beginning of a line, as
    ``(byte_offset, line_index)`` pairs in file order (``(0, 0)`` first unless the file is
    empty). Tagging a range of lines that starts and ends at such points with
    ``Model.write_jsonl`` gives exactly the CLI's lines for that range, so a distributed run cut
    there reproduces the CLI's output. Raises ``OSError`` if the file cannot be read and
    ``ner_edge.InputError`` (naming line and byte) if it is not UTF-8."""
    return document_block_starts(os.fspath(path))


def _examples_as_support(examples: Sequence[Any]) -> Tuple[str, str]:
    """The support text and its format for ``Model.adapt(examples)``."""
    if isinstance(examples, (str, bytes)):
        raise TypeError("examples must be a list of examples, not one string")
    items = list(examples)
    if not items:
        raise UsageError("examples is empty: give at least one example, or descriptions only")
    if all(isinstance(e, str) for e in items):
        for i, e in enumerate(items):
            if "\n" in e:
                raise UsageError(f"examples[{i}] contains a newline: one sentence per example")
        return "\n".join(items) + "\n", "inline"
    lines = []
    for i, e in enumerate(items):
        if isinstance(e, dict):
            text = e.get("text")
            spans = e.get("entities", [])
            entities = [
                {"start": s["start"], "end": s["end"], "type": s.get("label", s.get("type"))}
                for s in spans
            ]
        elif isinstance(e, (tuple, list)) and len(e) == 2:
            text, spans = e
            entities = [{"start": s, "end": t, "type": label} for s, t, label in spans]
        else:
            raise TypeError(
                f"examples[{i}]: expected a markup string '[aspirin](DRUG) ...', a dict "
                "{'text': ..., 'entities': [{'start', 'end', 'label'}]} or a tuple "
                "(text, [(start, end, label), ...])"
            )
        if not isinstance(text, str):
            raise TypeError(f"examples[{i}]: the text must be a str")
        lines.append(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))
    return "\n".join(lines) + "\n", "jsonl"


class Model:
    """A loaded bundle with its label packs and active types (immutable).

    Thread-safe: tagging releases the GIL, so several Python threads can tag with one model at
    once. Pickles as its ``ModelSpec``; unpickling loads the model once per process and reuses
    it afterwards.
    """

    def __init__(self, native: NativeModel, spec: ModelSpec):
        self._native = native
        self._spec = spec

    @property
    def types(self) -> List[str]:
        """Names of the active entity types, in label order (the bundle's, then each pack's)."""
        return self._native.types

    @property
    def spec(self) -> ModelSpec:
        """The options this model was loaded with (what it pickles as)."""
        return self._spec

    @property
    def bundle_id(self) -> str:
        """Content id of the bundle (a pack's ``base_bundle`` must equal it)."""
        return self._native.bundle_id

    def predict_entities(
        self,
        text: str,
        types: Union[None, str, Iterable[str]] = None,
        threshold: Optional[float] = None,
    ) -> List[Entity]:
        """The entities of one text, in text order, non-overlapping: dicts
        ``{"start", "end", "text", "label", "score"}`` with ``text[start:end] == entity["text"]``
        (code-point offsets, end exclusive) and ``score`` the CRF marginal probability of exactly
        that entity (not rounded; the CLI prints it to 4 decimals).

        types: report only entities of these active types (``ner_edge.UsageError`` for a name
            that is not active). Decoding is unchanged; to decode with another set of active
            types, as the CLI's ``--types`` does, load the model with ``types=``.
        threshold: drop entities scored below it.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._native.tag([text], _type_list(types), threshold)[0]

    def inference(
        self,
        texts: Iterable[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        types: Union[None, str, Iterable[str]] = None,
        threshold: Optional[float] = None,
    ) -> List[List[Entity]]:
        """``predict_entities`` for many texts: one entity list per text, in input order. Texts
        are tagged ``batch_size`` at a time (the encoder batches are formed within each batch;
        larger batches pad less), with the GIL released while each batch is tagged."""
        return list(self.pipe(texts, batch_size=batch_size, types=types, threshold=threshold))

    def pipe(
        self,
        texts: Iterable[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        types: Union[None, str, Iterable[str]] = None,
        threshold: Optional[float] = None,
    ) -> Iterator[List[Entity]]:
        """Streams: yields one entity list per text of ``texts`` (any iterable, read lazily
        ``batch_size`` texts at a time), in input order."""
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of str, not one str")
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        type_list = _type_list(types)
        iterator = iter(texts)
        while True:
            batch = list(itertools.islice(iterator, batch_size))
            if not batch:
                return
            yield from self._native.tag(batch, type_list, threshold)

    def write_jsonl(self, lines: Iterable[str], file: Any) -> int:
        """Writes to the binary file ``file`` exactly what ``ner-edge predict`` (JSONL) writes
        for a file whose lines are ``lines`` (one document per line; no line may contain
        ``"\\n"``; a trailing ``"\\r"`` is dropped as from a CRLF line end), with this model's
        options: same tagging blocks, same writer, same bytes (scores rounded to 4 decimals,
        offsets in code points). Streams block by block. Returns the number of lines written."""
        return self._native.write_jsonl(lines, file)

    def predict_jsonl(self, lines: Iterable[str]) -> str:
        """``write_jsonl`` into a string: the CLI's JSON lines for ``lines``, each ending in
        ``"\\n"``."""
        buffer = io.BytesIO()
        self._native.write_jsonl(lines, buffer)
        return buffer.getvalue().decode("utf-8")

    def adapt(
        self,
        examples: Optional[Sequence[Any]] = None,
        *,
        support: Optional[PathLike] = None,
        format: str = "auto",
        descriptions: Optional[Dict[str, str]] = None,
        types: Union[None, str, Iterable[str]] = None,
        examples_only: bool = False,
        tune_heads: int = 0,
        tune_lr: Optional[float] = None,
        tune_l2: Optional[float] = None,
        notes: str = "",
    ) -> Pack:
        """New entity types from a few examples and/or descriptions, as ``ner-edge adapt``:
        returns a label ``Pack`` for this model's bundle (``pack.save(path)`` writes the
        ``.nerp``; ``load(packs=[pack])`` or ``model.with_packs(pack)`` activates it).

        examples: sentences with their entities, as markup strings
            ``"[aspirin](DRUG) reduced the fever"``, dicts
            ``{"text": ..., "entities": [{"start", "end", "label"}]}`` or tuples
            ``(text, [(start, end, label), ...])`` (code-point offsets, end exclusive).
        support: a support file instead (CoNLL, token<TAB>tag, JSONL or inline markup), read
            as ``format`` (auto, conll, tsv, jsonl, inline).
        descriptions: ``{type: description}`` (``--type-name``): seeds a type without examples
            and is added to a type's examples unless ``examples_only``.
        types: the pack's types (default: every type of the examples and descriptions).
        tune_heads: then tune the boundary head and type projection for this many steps
            (recommended with examples, e.g. 30); ``tune_lr``/``tune_l2`` as the CLI's.
        """
        support_text = None
        if examples is not None:
            if support is not None:
                raise UsageError("give examples or a support file, not both")
            support_text, format = _examples_as_support(examples)
        kwargs: Dict[str, Any] = {}
        if tune_lr is not None:
            kwargs["tune_lr"] = float(tune_lr)
        if tune_l2 is not None:
            kwargs["tune_l2"] = float(tune_l2)
        return self._native.adapt(
            support_path=None if support is None else os.fspath(support),
            support_text=support_text,
            format=format,
            descriptions=list((descriptions or {}).items()),
            types=_type_list(types),
            examples_only=examples_only,
            tune_heads=int(tune_heads),
            notes=notes,
            **kwargs,
        )

    def with_packs(
        self, *packs: Union[Pack, PathLike], allow_override: Optional[bool] = None
    ) -> "Model":
        """A new model: this one's bundle and options with ``packs`` activated after its own
        packs (the active types become the bundle's default set plus every pack's, unless this
        model was loaded with ``types=``)."""
        spec = ModelSpec(
            bundle=self._spec.bundle,
            packs=self._spec.packs + tuple(_pack_entry(p) for p in packs),
            types=self._spec.types,
            allow_override=self._spec.allow_override if allow_override is None else allow_override,
            no_other=self._spec.no_other,
            threads=self._spec.threads,
        )
        return spec.load()

    def __reduce__(self):
        return (_restore, (self._spec,))

    def __repr__(self) -> str:
        bundle = self._spec.bundle or "<embedded default bundle>"
        return f"ner_edge.Model(bundle={bundle!r}, types={self.types!r})"
