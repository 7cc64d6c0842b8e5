"""The "ner_edge" spaCy component sets doc.ents (on spacy.blank: no model download)."""

from __future__ import annotations

import pickle
import subprocess
import sys

from conftest import TINY_BUNDLE, import_or_fail

TEXTS = [
    "Angela Merkel visited the Siemens plant in Erlangen on Tuesday.",
    "Zoë Müller met 😀 Tim Cook in Köln.",
    "Nothing to see here.",
]


def test_add_pipe_finds_the_factory_through_the_entry_point():
    import_or_fail("spacy")
    # A fresh interpreter that never imports ner_edge itself: spaCy must find the factory.
    code = (
        "import sys, spacy\n"
        "nlp = spacy.blank('en')\n"
        "nlp.add_pipe('ner_edge')\n"
        "doc = nlp('Angela Merkel visited the Siemens plant in Erlangen.')\n"
        "print([(e.text, e.label_) for e in doc.ents])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "[('Angela Merkel', 'PER'), ('Siemens', 'ORG'), ('Erlangen', 'LOC')]"
    )


def test_doc_ents_are_the_model_entities(default_model):
    spacy = import_or_fail("spacy")
    import ner_edge.spacy  # noqa: F401  (registers the factory in this process)

    nlp = spacy.blank("en")
    nlp.add_pipe("ner_edge", config={"threshold": 0.5})
    for doc in [nlp(t) for t in TEXTS] + list(nlp.pipe(TEXTS, batch_size=2)):
        expected = [
            (e["start"], e["end"], e["label"])
            for e in default_model.predict_entities(doc.text, threshold=0.5)
        ]
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == expected
    assert nlp.get_pipe("ner_edge").labels == ["PER", "ORG", "LOC", "MISC"]


def test_component_config_and_pickling():
    spacy = import_or_fail("spacy")
    import ner_edge.spacy  # noqa: F401

    nlp = spacy.blank("en")
    nlp.add_pipe("ner_edge", config={"bundle": str(TINY_BUNDLE), "types": ["PER", "LOC"]})
    docs = list(nlp.pipe(TEXTS))
    assert {e.label_ for d in docs for e in d.ents} <= {"PER", "LOC"}
    again = pickle.loads(pickle.dumps(nlp))
    assert [[(e.start_char, e.end_char, e.label_) for e in again(t).ents] for t in TEXTS] == [
        [(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs
    ]
