"""Model.adapt → Pack: the same pack as `ner-edge adapt`, usable by load and predict."""

from __future__ import annotations

import pytest

import ner_edge
from conftest import REPO, TINY_BUNDLE, run_cli

DRUG_TEXT = "The patient took aspirin and ibuprofen after seeing Dr. Smith in Boston."


@pytest.mark.parametrize(
    "kwargs, args",
    [
        ({}, []),
        (
            {"tune_heads": 5, "descriptions": {"DRUG": "medication or drug name"}},
            ["--tune-heads", "5", "--type-name", "DRUG=medication or drug name"],
        ),
    ],
)
def test_adapt_writes_the_cli_pack(cli, tmp_path, monkeypatch, kwargs, args):
    monkeypatch.chdir(REPO)  # the pack records the support path as given
    support = "fixtures/adapt/drugs.txt"
    model = ner_edge.load()
    pack = model.adapt(support=support, **kwargs)
    out = tmp_path / "cli.nerp"
    run_cli(cli, "adapt", support, "--out", str(out), "--quiet", *args)
    assert pack.to_bytes() == out.read_bytes()
    assert pack.types == ["DRUG"]
    assert pack.base_bundle == model.bundle_id
    assert pack.tuned_heads == ("tune_heads" in kwargs)

    saved = tmp_path / "py.nerp"
    pack.save(saved)
    assert saved.read_bytes() == out.read_bytes()
    assert ner_edge.Pack.open(saved).to_bytes() == out.read_bytes()

    text_file = tmp_path / "in.txt"
    text_file.write_text(DRUG_TEXT + "\n", encoding="utf-8")
    expected = run_cli(cli, "predict", "--pack", str(out), str(text_file))
    for with_pack in (ner_edge.load(packs=[pack]), ner_edge.load(packs=[saved]),
                      model.with_packs(saved)):
        assert with_pack.types == ["PER", "ORG", "LOC", "MISC", "DRUG"]
        assert with_pack.predict_jsonl([DRUG_TEXT]).encode() == expected


def test_examples_in_every_form_give_the_same_pack():
    model = ner_edge.load(TINY_BUNDLE)
    markup = model.adapt(["[aspirin](DRUG) reduced the fever.", "Zoë took [ibuprofen](DRUG)."])
    dicts = model.adapt([
        {"text": "aspirin reduced the fever.",
         "entities": [{"start": 0, "end": 7, "label": "DRUG"}]},
        {"text": "Zoë took ibuprofen.", "entities": [{"start": 9, "end": 18, "label": "DRUG"}]},
    ])
    tuples = model.adapt([
        ("aspirin reduced the fever.", [(0, 7, "DRUG")]),
        ("Zoë took ibuprofen.", [(9, 18, "DRUG")]),
    ])
    # Same mentions, so the same types, support counts, retrieved memory slot and OT distance
    # (the recorded support hash, hence the content id, differs with the support text).
    def body(p):
        return [l for l in p.describe().splitlines() if not l.startswith("content id")]

    assert body(markup) == body(dicts) == body(tuples)
    assert markup.types == ["DRUG"]


def test_description_only_pack_and_errors():
    model = ner_edge.load(TINY_BUNDLE)
    pack = model.adapt(descriptions={"DRUG": "medication or drug name"})
    assert pack.types == ["DRUG"] and not pack.tuned_heads
    with pytest.raises(ner_edge.UsageError, match="needs a support set"):
        model.adapt()
    with pytest.raises(ner_edge.UsageError, match="tune_heads needs"):
        model.adapt(descriptions={"DRUG": "drug"}, tune_heads=3)
    with pytest.raises(ner_edge.InputError, match="<examples>"):
        model.adapt([("aspirin", [(0, 99, "DRUG")])])
    with pytest.raises(TypeError):
        model.adapt("[aspirin](DRUG) as one string")
    with pytest.raises(FileNotFoundError):
        model.adapt(support="/nonexistent/support.txt")
    # A pack of another bundle is refused where it is loaded, naming both bundles.
    with pytest.raises(ner_edge.UsageError, match="was adapted on bundle .*tiny.nerb"):
        ner_edge.load(packs=[pack])
