#!/usr/bin/env python3
"""Generate fixtures/metrics/seqeval_golden.json: reference entity-level scores from seqeval.

Usage: gen_seqeval_golden.py [OUT.json]
  OUT: default fixtures/metrics/seqeval_golden.json next to this repository's tools/
Needs the `seqeval` package from PyPI (e.g. `python3 -m venv .venv-seqeval &&
.venv-seqeval/bin/pip install seqeval`).

The file holds sets of (gold, pred) tag sequence pairs: seeded random BIO, BIOES and IO
(Few-NERD style bare labels) sequences with stray I- tags, type switches, empty and all-O
sentences, plus hand-picked cases. Each set is split into consecutive groups that play the
role of few-shot episodes. For every set and every group the expected numbers come from
seqeval's default (non-strict) mode: `precision_score`, `recall_score`, `f1_score`, and
`classification_report(output_dict=True)` for the per-type rows; entity counts come from
seqeval's own `get_entities` (the sets seqeval compares). IO labels are given to seqeval as
`I-<label>`, which seqeval chunks as maximal runs of identical labels.

Layout (sentences are space-joined tag strings; "" is an empty sentence):
  {"seqeval_version", "seed", "sets": [{"name", "scheme": "bio"|"bioes"|"io",
    "sentences": [[gold, pred], ...], "groups": [[start, end), ...],
    "overall": RESULT, "group_results": [RESULT, ...],
    "episode_mean_f1", "episode_std_f1"}]}
  RESULT: {"precision", "recall", "f1", "tp", "predicted", "gold",
           "per_type": {TYPE: {"precision", "recall", "f1", "support"}}}
"""

import json
import math
import os
import random
import sys
import warnings
from importlib.metadata import version

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

SEED = 20240611
BIO_TYPES = ["PER", "LOC", "ORG", "MISC", "person-artist"]
IO_TYPES = ["person-artist", "person-actor", "location-GPE", "organization-company", "event"]

HAND_BIO = [
    ("O I-PER I-PER", "B-PER I-PER O"),
    ("B-PER I-ORG", "B-PER B-ORG"),
    ("B-LOC B-LOC", "B-LOC I-LOC"),
    ("B-LOC B-LOC", "B-LOC B-LOC"),
    ("I-PER O I-PER", "B-PER O B-PER"),
    ("B-PER I-PER I-ORG I-ORG O", "B-PER I-PER B-ORG I-ORG O"),
    ("", ""),
    ("O O O", "O O O"),
    ("O O O", "B-MISC O O"),
    ("B-MISC O O", "O O O"),
    ("B-person-artist I-person-artist", "I-person-artist I-person-artist"),
    ("B-PER", "I-PER"),
    ("I-LOC I-PER I-LOC", "B-LOC B-PER B-LOC"),
]
HAND_BIOES = [
    ("S-PER B-LOC I-LOC E-LOC O B-ORG E-ORG S-ORG", "S-PER B-LOC E-LOC O O B-ORG I-ORG E-ORG"),
    ("E-PER I-PER S-PER I-PER B-LOC O", "B-PER E-PER S-PER E-PER S-LOC O"),
    ("B-PER I-PER", "B-PER E-PER"),
    ("B-PER S-PER E-PER", "I-PER E-LOC E-LOC"),
    ("", ""),
    ("O O", "O O"),
]
HAND_IO = [
    ("O person-artist person-artist location-GPE O", "O person-artist location-GPE location-GPE O"),
    ("event event event", "event O event"),
    ("", ""),
    ("O", "event"),
    ("person-actor O event event", "person-actor O event O"),
]


def random_gold(rng, n, scheme, types):
    """A mostly well-formed sentence of n tags."""
    tags = []
    i = 0
    while i < n:
        if rng.random() < 0.6:
            tags.append("O")
            i += 1
            continue
        kind = rng.choice(types)
        length = min(n - i, rng.choice([1, 1, 2, 2, 3, 4]))
        if scheme == "io":
            tags.extend([kind] * length)
        elif scheme == "bioes":
            if length == 1:
                tags.append("S-" + kind)
            else:
                tags.extend(["B-" + kind] + ["I-" + kind] * (length - 2) + ["E-" + kind])
        else:
            tags.extend(["B-" + kind] + ["I-" + kind] * (length - 1))
        i += length
    if scheme == "bio" and tags and rng.random() < 0.15:
        j = rng.randrange(len(tags))
        if tags[j] != "O":
            tags[j] = "I-" + tags[j][2:]
    return tags


def perturb(rng, gold, scheme, types):
    """A prediction: the gold with random prefix, type, boundary and outside errors."""
    prefixes = {"bio": ["B", "I"], "bioes": ["B", "I", "E", "S"]}.get(scheme)
    pred = list(gold)
    rate = rng.choice([0.0, 0.1, 0.25, 0.5])
    for j in range(len(pred)):
        if rng.random() >= rate:
            continue
        what = rng.random()
        if what < 0.3:
            pred[j] = "O"
        elif scheme == "io":
            pred[j] = rng.choice(types)
        elif what < 0.6 or pred[j] == "O":
            kind = pred[j][2:] if pred[j] != "O" else rng.choice(types)
            pred[j] = rng.choice(prefixes) + "-" + kind
        else:
            pred[j] = pred[j][:2] + rng.choice(types)
    return pred


def random_set(rng, name, scheme, types, count, groups):
    sentences = []
    for _ in range(count):
        r = rng.random()
        if r < 0.05:
            gold = []
        elif r < 0.1:
            gold = ["O"] * rng.randint(1, 8)
        else:
            gold = random_gold(rng, rng.randint(1, 20), scheme, types)
        if rng.random() < 0.05:
            pred = ["O"] * len(gold)
        else:
            pred = perturb(rng, gold, scheme, types)
        sentences.append((gold, pred))
    size = count // groups
    bounds = [(g * size, count if g == groups - 1 else (g + 1) * size) for g in range(groups)]
    return name, scheme, sentences, bounds


def hand_set(name, scheme, cases):
    sentences = [(g.split(), p.split()) for g, p in cases]
    return name, scheme, sentences, [(i, i + 1) for i in range(len(sentences))]


def seqeval_tags(tags, scheme):
    if scheme == "io":
        return [t if t == "O" else "I-" + t for t in tags]
    return list(tags)


def score(pairs, scheme):
    y_true = [seqeval_tags(g, scheme) for g, _ in pairs]
    y_pred = [seqeval_tags(p, scheme) for _, p in pairs]
    true_ents = set(get_entities(y_true))
    pred_ents = set(get_entities(y_pred))
    report = classification_report(y_true, y_pred, output_dict=True) if true_ents | pred_ents else {}
    per_type = {
        kind: {
            "precision": row["precision"],
            "recall": row["recall"],
            "f1": row["f1-score"],
            "support": int(row["support"]),
        }
        for kind, row in report.items()
        if not kind.endswith(" avg")
    }
    return {
        "precision": float(precision_score(y_true, y_pred)),
        "recall": float(recall_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred)),
        "tp": len(true_ents & pred_ents),
        "predicted": len(pred_ents),
        "gold": len(true_ents),
        "per_type": per_type,
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "..", "..", "fixtures", "metrics", "seqeval_golden.json")
    warnings.simplefilter("ignore")
    rng = random.Random(SEED)
    specs = [
        random_set(rng, "bio_random", "bio", BIO_TYPES, 200, 10),
        random_set(rng, "bioes_random", "bioes", BIO_TYPES, 50, 5),
        random_set(rng, "io_random", "io", IO_TYPES, 50, 5),
        hand_set("bio_hand", "bio", HAND_BIO),
        hand_set("bioes_hand", "bioes", HAND_BIOES),
        hand_set("io_hand", "io", HAND_IO),
    ]
    sets = []
    for name, scheme, sentences, bounds in specs:
        group_results = [score(sentences[a:b], scheme) for a, b in bounds]
        f1s = [r["f1"] for r in group_results]
        mean = sum(f1s) / len(f1s)
        std = math.sqrt(sum((f - mean) ** 2 for f in f1s) / (len(f1s) - 1)) if len(f1s) > 1 else 0.0
        sets.append({
            "name": name,
            "scheme": scheme,
            "sentences": [[" ".join(g), " ".join(p)] for g, p in sentences],
            "groups": [[a, b] for a, b in bounds],
            "overall": score(sentences, scheme),
            "group_results": group_results,
            "episode_mean_f1": mean,
            "episode_std_f1": std,
        })
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"seqeval_version": version("seqeval"), "seed": SEED, "sets": sets}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
