"""The ``ner_edge`` spaCy pipeline component: sets ``doc.ents`` from a ner-edge model.

    import spacy
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_edge")                                   # the embedded default model
    nlp.add_pipe("ner_edge", config={"bundle": "m.nerb", "packs": ["drugs.nerp"],
                                     "types": ["PER", "DRUG"], "threshold": 0.5})
    doc = nlp("Tim Cook visited Siemens in Erlangen.")
    [(e.text, e.label_) for e in doc.ents]

spaCy finds the factory through the package's ``spacy_factories`` entry point, so no import of
``ner_edge`` is needed. Entity character offsets are snapped outwards to spaCy's tokens
(``Doc.char_span(alignment_mode="expand")``); where two snapped entities then overlap, the
longer is kept (``spacy.util.filter_spans``). ``doc.ents`` is replaced.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import filter_spans, minibatch

from . import DEFAULT_BATCH_SIZE, Entity, Model, load

__all__ = ["EntityTagger", "make_ner_edge"]


class EntityTagger:
    """Tags each doc's text with a ner-edge ``Model`` and sets ``doc.ents``."""

    def __init__(self, model: Model, threshold: Optional[float] = None,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        self.model = model
        self.threshold = threshold
        self.batch_size = batch_size

    @property
    def labels(self) -> List[str]:
        """The entity labels the component can set (the model's active types)."""
        return self.model.types

    def __call__(self, doc: Doc) -> Doc:
        return self._set_entities(
            doc, self.model.predict_entities(doc.text, threshold=self.threshold)
        )

    def pipe(self, docs: Iterable[Doc], batch_size: Optional[int] = None) -> Iterator[Doc]:
        """Tags docs ``batch_size`` at a time (one runtime call per batch)."""
        for batch in minibatch(docs, size=batch_size or self.batch_size):
            batch = list(batch)
            found = self.model.inference(
                [d.text for d in batch], batch_size=len(batch), threshold=self.threshold
            )
            for doc, entities in zip(batch, found):
                yield self._set_entities(doc, entities)

    @staticmethod
    def _set_entities(doc: Doc, entities: List[Entity]) -> Doc:
        spans = []
        for e in entities:
            span = doc.char_span(e["start"], e["end"], label=e["label"], alignment_mode="expand")
            if span is not None:
                spans.append(span)
        doc.ents = filter_spans(spans)
        return doc


@Language.factory(
    "ner_edge",
    default_config={
        "bundle": None,
        "packs": [],
        "types": None,
        "threshold": None,
        "no_other": False,
        "batch_size": DEFAULT_BATCH_SIZE,
    },
)
def make_ner_edge(
    nlp: Language,
    name: str,
    bundle: Optional[str],
    packs: List[str],
    types: Optional[List[str]],
    threshold: Optional[float],
    no_other: bool,
    batch_size: int,
) -> EntityTagger:
    """The ``ner_edge`` component: ``bundle`` (path; ``None``: the embedded default model),
    ``packs`` (``.nerp`` paths), ``types``, ``no_other`` as for ``ner_edge.load``;
    ``threshold`` drops entities scored below it; ``batch_size`` texts per runtime call in
    ``nlp.pipe``."""
    model = load(bundle, packs=packs, types=types, no_other=no_other)
    return EntityTagger(model, threshold=threshold, batch_size=batch_size)
