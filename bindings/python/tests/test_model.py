"""ner_edge.load / Model: entities with Python offsets, batches, streams, CLI-identical JSONL,
errors, GIL release, pickling."""

from __future__ import annotations

import json
import pickle
import shutil
import threading
import time

import pytest

import ner_edge
from conftest import FIXTURES, TINY_BUNDLE, UNICODE_LINES, run_cli

NEWS = (FIXTURES / "samples" / "news.txt").read_text(encoding="utf-8").splitlines()


def test_default_model_finds_the_readme_entities(default_model):
    assert default_model.types == ["PER", "ORG", "LOC", "MISC"]
    found = default_model.predict_entities(NEWS[0])
    assert [(e["text"], e["label"]) for e in found] == [
        ("Angela Merkel", "PER"),
        ("Siemens", "ORG"),
        ("Erlangen", "LOC"),
    ]
    assert [(e["start"], e["end"]) for e in found] == [(0, 13), (26, 33), (43, 51)]
    assert all(set(e) == {"start", "end", "text", "label", "score"} for e in found)
    assert all(0.0 < e["score"] <= 1.0 for e in found)


@pytest.mark.parametrize("text", UNICODE_LINES)
def test_offsets_are_python_string_indices(default_model, text):
    for e in default_model.predict_entities(text):
        assert text[e["start"]:e["end"]] == e["text"]
        assert e["start"] < e["end"]


def test_offsets_after_emoji_and_combining_marks_match_the_ascii_twin(default_model):
    # The same sentence with a prefix of 3 code points: 1 emoji (4 UTF-8 bytes, 2 UTF-16
    # units), or e + combining diaeresis, or 3 ASCII letters. Offsets must shift by 3 each time.
    tail = " Angela Merkel visited Siemens in Erlangen."
    plain = default_model.predict_entities("abc" + tail)
    assert plain, "the ASCII twin must have entities for this test to mean anything"
    for prefix in ["😀ab", "e\u0308x", "🇺🇸x"]:
        assert len(prefix) == 3
        shifted = default_model.predict_entities(prefix + tail)
        assert [(e["start"], e["end"], e["text"], e["label"]) for e in shifted] == [
            (e["start"], e["end"], e["text"], e["label"]) for e in plain
        ]


def test_entities_match_the_cli_offsets(default_model, cli, tmp_path):
    lines = NEWS + UNICODE_LINES
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Not splitlines(): it would also split at the U+2028 that JSON leaves unescaped.
    out = run_cli(cli, "predict", str(path)).decode()
    cli_docs = [json.loads(l) for l in out.split("\n")[:-1]]
    assert len(cli_docs) == len(lines)
    for text, doc, found in zip(lines, cli_docs, default_model.inference(lines)):
        assert doc["text"] == text
        assert [(e["start"], e["end"], e["type"], e["text"]) for e in doc["entities"]] == [
            (e["start"], e["end"], e["label"], e["text"]) for e in found
        ]
        assert [e["score"] for e in doc["entities"]] == [round(e["score"], 4) for e in found]


def test_predict_jsonl_is_the_cli_output_byte_for_byte(default_model, cli, tmp_path):
    lines = NEWS + UNICODE_LINES + ["trailing carriage return\r", "Paris\r"]
    path = tmp_path / "in.txt"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    expected = run_cli(cli, "predict", str(path))
    assert default_model.predict_jsonl(lines).encode("utf-8") == expected
    assert default_model.predict_jsonl([]) == ""


def test_predict_jsonl_matches_the_cli_across_blocks_and_segments(tiny_model, cli, tmp_path):
    # 1,300 lines: three CLI blocks; one line of 150,000 bytes: three segments.
    long_line = "Paris " * 25_000
    lines = [f"Line {i} mentions Berlin and Tim Cook." for i in range(1300)]
    lines[700] = long_line
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = run_cli(cli, "predict", "--bundle", str(TINY_BUNDLE), str(path))
    assert tiny_model.predict_jsonl(iter(lines)).encode() == expected
    with open(tmp_path / "out.jsonl", "wb") as f:
        assert tiny_model.write_jsonl(lines, f) == len(lines)
    assert (tmp_path / "out.jsonl").read_bytes() == expected


def test_predict_jsonl_refuses_newlines_and_non_strings(tiny_model):
    with pytest.raises(ner_edge.UsageError, match=r"lines\[1\] contains a newline"):
        tiny_model.predict_jsonl(["a", "b\nc"])
    with pytest.raises(TypeError, match=r"lines\[0\] is a int"):
        tiny_model.predict_jsonl([3])

    def failing():
        yield "fine"
        raise KeyError("from the iterable")

    with pytest.raises(KeyError, match="from the iterable"):
        tiny_model.predict_jsonl(failing())


def test_inference_and_pipe_keep_order_whatever_the_batch_size(tiny_model):
    texts = [f"{i} Tim Cook met Angela Merkel in Berlin." * (1 + i % 4) for i in range(37)]
    one_by_one = [tiny_model.predict_entities(t) for t in texts]
    # Scores may differ in their last bits between batches; entities and offsets may not.
    def shape(results):
        return [[(e["start"], e["end"], e["label"]) for e in r] for r in results]

    for batch_size in (1, 5, 64):
        assert shape(tiny_model.inference(texts, batch_size=batch_size)) == shape(one_by_one)
        assert shape(tiny_model.pipe(iter(texts), batch_size=batch_size)) == shape(one_by_one)
    with pytest.raises(TypeError):
        tiny_model.inference("one string")


def test_pipe_reads_its_input_lazily(tiny_model):
    pulled = []

    def texts():
        for i in range(100):
            pulled.append(i)
            yield f"Tim Cook number {i}"

    stream = tiny_model.pipe(texts(), batch_size=10)
    next(stream)
    assert len(pulled) == 10
    assert sum(1 for _ in stream) == 99
    assert len(pulled) == 100


def test_types_filter_and_threshold(default_model):
    text = "Angela Merkel visited the Siemens plant in Erlangen on Tuesday."
    everything = default_model.predict_entities(text)
    assert {e["label"] for e in everything} == {"PER", "ORG", "LOC"}
    only = default_model.predict_entities(text, types=["LOC", "PER"])
    assert only == [e for e in everything if e["label"] in ("LOC", "PER")]
    assert default_model.predict_entities(text, types="ORG") == [
        e for e in everything if e["label"] == "ORG"
    ]
    cut = min(e["score"] for e in everything) + 1e-3
    assert default_model.predict_entities(text, threshold=cut) == [
        e for e in everything if e["score"] >= cut
    ]
    with pytest.raises(ner_edge.UsageError, match=r'unknown entity type "DRUG".*PER, ORG'):
        default_model.predict_entities(text, types=["DRUG"])


def test_load_options_are_the_cli_options(cli, tmp_path):
    text = "Angela Merkel visited the Siemens plant in Erlangen on Tuesday."
    path = tmp_path / "in.txt"
    path.write_text(text + "\n", encoding="utf-8")
    for kwargs, args in [
        ({"types": ["PER", "LOC"]}, ["--types", "PER,LOC"]),
        ({"types": "ORG"}, ["--types", "ORG"]),
        ({"no_other": True}, ["--no-other"]),
        ({"threads": 2}, ["--threads", "2"]),
    ]:
        model = ner_edge.load(**kwargs)
        assert model.predict_jsonl([text]).encode() == run_cli(cli, "predict", *args, str(path))
    assert ner_edge.load(types=["LOC", "PER"]).types == ["LOC", "PER"]


def test_errors_carry_the_runtime_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot open bundle .*missing.nerb"):
        ner_edge.load(tmp_path / "missing.nerb")
    truncated = tmp_path / "truncated.nerb"
    truncated.write_bytes(TINY_BUNDLE.read_bytes()[:5000])
    with pytest.raises(ner_edge.BundleError, match="truncated.nerb") as e:
        ner_edge.load(truncated)
    assert isinstance(e.value, ValueError) and isinstance(e.value, ner_edge.NerEdgeError)
    corrupt = tmp_path / "corrupt.nerb"
    data = bytearray(TINY_BUNDLE.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ner_edge.BundleError, match="checksum"):
        ner_edge.load(corrupt)
    with pytest.raises(ner_edge.UsageError, match="NOPE"):
        ner_edge.load(TINY_BUNDLE, types=["PER", "NOPE"])
    with pytest.raises(ner_edge.UsageError):
        ner_edge.load(TINY_BUNDLE, threads=0)
    with pytest.raises(FileNotFoundError):
        ner_edge.load(TINY_BUNDLE, packs=[tmp_path / "missing.nerp"])
    with pytest.raises(ner_edge.BundleError):
        ner_edge.Pack(b"not a pack")


def test_tagging_releases_the_gil(default_model):
    texts = NEWS * 40  # one native call of about a second
    done = threading.Event()
    result = []

    def tag():
        result.append(default_model.inference(texts, batch_size=len(texts)))
        done.set()

    worker = threading.Thread(target=tag)
    started = time.perf_counter()
    worker.start()
    spins = 0
    while not done.is_set():
        spins += 1
    worker.join()
    elapsed = time.perf_counter() - started
    assert len(result[0]) == len(texts)
    assert elapsed > 0.2, "the call was too short to show anything"
    # Holding the GIL through the call would leave this thread a handful of iterations
    # (it only runs at the call's start and end); released, it spins all along.
    assert spins > 100_000 * elapsed, (spins, elapsed)


def test_threads_tag_concurrently_with_one_model(tiny_model):
    texts = [f"Tim Cook {i} met Angela Merkel in Berlin." for i in range(200)]
    expected = tiny_model.inference(texts)
    results = [None] * 4

    def run(k):
        results[k] = tiny_model.inference(texts)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)


def test_models_and_packs_pickle(tmp_path):
    model = ner_edge.load(TINY_BUNDLE, types="PER,LOC", no_other=True)
    data = pickle.dumps(model)
    assert len(data) < 10_000, "a model pickles as its options, not its weights"
    again = pickle.loads(data)
    assert again.types == ["PER", "LOC"]
    assert again.spec == model.spec
    text = "Tim Cook met Angela Merkel in Berlin."
    assert again.predict_entities(text) == model.predict_entities(text)
    assert pickle.loads(data) is again, "unpickling loads a spec once per process"

    pack = model.adapt(["[aspirin](DRUG) reduced the fever.", "He took [ibuprofen](DRUG)."])
    copy = pickle.loads(pickle.dumps(pack))
    assert copy.to_bytes() == pack.to_bytes() and copy.types == ["DRUG"]
    with_pack = ner_edge.load(TINY_BUNDLE, packs=[pack])
    moved = pickle.loads(pickle.dumps(with_pack))
    assert moved.types == with_pack.types == ["PER", "ORG", "LOC", "MISC", "DRUG"]
    assert moved.predict_jsonl([text]) == with_pack.predict_jsonl([text])
    with pytest.raises(TypeError):
        pickle.dumps(model._native)


def test_moved_bundle_file_still_loads_by_absolute_path(tmp_path, monkeypatch):
    local = tmp_path / "b.nerb"
    shutil.copy(TINY_BUNDLE, local)
    monkeypatch.chdir(tmp_path)
    model = ner_edge.load("b.nerb")
    assert model.spec.bundle == str(local)
    monkeypatch.chdir(FIXTURES)
    assert model.spec.load().types == model.types
