"""Shared fixtures of the Python binding's tests.

Environment:
  NER_EDGE_CLI           the `ner-edge` binary of the same build tree as the installed wheel
                         (tests that compare with the CLI need it).
  NER_EDGE_PY_REQUIRE=1  nothing may be missing (set by .ci/run): a test whose CLI binary or
                         optional package (dask, spaCy, pandas/pyarrow) is absent fails
                         instead of skipping.
A skipped test prints its reason (run pytest with -rs).
"""

from __future__ import annotations

import importlib
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "fixtures"
TINY_BUNDLE = FIXTURES / "bundles" / "tiny.nerb"
SHARED_CONLL_TEST = REPO.parent / "shared" / "data" / "conll2003" / "test.txt"

# Lines that exercise offsets and JSON escaping: accents (precomposed and combining), emoji
# (astral code points, a ZWJ sequence), CJK, quotes, backslashes, tabs, control characters.
UNICODE_LINES = [
    "Zoë Müller met Ángela Merkel in Köln on Tuesday.",
    "Zoe\u0308 Mu\u0308ller flew from Sa\u0303o Paulo to Zu\u0308rich with Lufthansa.",
    "😀 Tim Cook 👩‍💻 visited Apple in Cupertino 🇺🇸 and Sony in Tokyo.",
    "東京 is where Sony and Toyota met 安倍晋三 .",
    'The "New York Times" quoted Barack Obama \\ in a tab\there.',
    "Control \x01 chars \x1f near Berlin and the Deutsche Bank \u2028 line separator.",
    "",
    "   ",
]


def require_everything() -> bool:
    """Whether NER_EDGE_PY_REQUIRE=1 forbids skipping."""
    return os.environ.get("NER_EDGE_PY_REQUIRE") == "1"


def skip_or_fail(reason: str):
    """Skips with `reason`, or fails under NER_EDGE_PY_REQUIRE=1."""
    if require_everything():
        pytest.fail(f"{reason}, and NER_EDGE_PY_REQUIRE=1 forbids skipping")
    pytest.skip(reason)


def import_or_fail(module: str):
    """`module`, or skip (fail under NER_EDGE_PY_REQUIRE=1) when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        skip_or_fail(f"{module} is not installed ({e})")


@pytest.fixture(scope="session")
def cli() -> Path:
    """The `ner-edge` binary named by NER_EDGE_CLI."""
    path = os.environ.get("NER_EDGE_CLI")
    if not path:
        skip_or_fail("NER_EDGE_CLI is not set (path of the ner-edge binary of this build)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"NER_EDGE_CLI={path} is not an executable file")
    return Path(path)


def run_cli(cli: Path, *args: str) -> bytes:
    """The CLI's stdout; fails the test with its stderr when it exits non-zero."""
    done = subprocess.run([str(cli), *args], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"ner-edge {' '.join(args)} exited {done.returncode}: {done.stderr.decode()}")
    return done.stdout


@pytest.fixture(scope="session")
def default_model():
    import ner_edge

    return ner_edge.load()


@pytest.fixture(scope="session")
def tiny_model():
    import ner_edge

    return ner_edge.load(TINY_BUNDLE)


def corpus_lines(minimum: int, long_line: bool = True) -> list:
    """At least `minimum` lines of real text: the CoNLL-2003 test sentences (words joined by
    spaces) when ../shared/data is here, else the sample news lines, cycled; plus
    UNICODE_LINES spread through the file and, with `long_line`, one line of 65,719 bytes in
    the middle (the CLI tags it in two segments)."""
    if SHARED_CONLL_TEST.is_file():
        sentences, words = [], []
        for line in SHARED_CONLL_TEST.read_text(encoding="utf-8").splitlines():
            if line.startswith("-DOCSTART-"):
                continue
            if not line.strip():
                if words:
                    sentences.append(" ".join(words))
                words = []
            else:
                words.append(line.split()[0])
        if words:
            sentences.append(" ".join(words))
    else:
        sentences = []
        for name in ("news.txt", "news-long.txt"):
            sentences += (FIXTURES / "samples" / name).read_text(encoding="utf-8").splitlines()
    long_text = " ".join(["Angela Merkel visited the Siemens plant in Erlangen."] * 1240)
    assert len(long_text.encode()) > 64 * 1024
    lines = []
    i = 0
    while len(lines) < minimum:
        lines.append(sentences[i % len(sentences)])
        if i % 997 == 0:
            lines.extend(UNICODE_LINES)
        if long_line and i == minimum // 2:
            lines.append(long_text)
        i += 1
    return lines
