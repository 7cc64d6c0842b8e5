"""ner_edge.dask on a LocalCluster of 2 worker processes on loopback: the CLI's output byte for
byte, input order and ids kept, exactly-once output when a worker is killed mid-run."""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import threading
import time

import pytest

import ner_edge
from conftest import TINY_BUNDLE, corpus_lines, import_or_fail, run_cli

dask = import_or_fail("dask")
distributed = import_or_fail("dask.distributed")
ner_edge_dask = import_or_fail("ner_edge.dask")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def joined(parts):
    return b"".join(open(p, "rb").read() for p in parts)


def test_ten_thousand_lines_are_the_cli_output_byte_for_byte(client, cli, tmp_path):
    # The tiny random-weight bundle: the same code paths as the default model (blocks,
    # windows, escaping, the writer) at a hundredth of the time; the default model's Dask
    # output is compared with the CLI in the worker-kill test below.
    lines = corpus_lines(10_000)
    assert len(lines) >= 10_000
    corpus = write_lines(tmp_path / "corpus.txt", lines)
    expected = run_cli(cli, "predict", "--bundle", str(TINY_BUNDLE), "--threads", "2", str(corpus))
    assert expected.count(b"\n") == len(lines)

    bag = ner_edge_dask.read_lines(corpus, blocks_per_partition=2)
    assert bag.npartitions >= 10
    with distributed.get_task_stream(client) as stream:
        parts = ner_edge_dask.tag_bag(bag, tmp_path / "out", model=ner_edge.load(TINY_BUNDLE))
    assert [os.path.basename(p) for p in parts] == [
        f"part-{i:05d}.jsonl" for i in range(bag.npartitions)
    ]
    assert joined(parts) == expected
    workers = {t["worker"] for t in stream.data if str(t["key"]).startswith("ner-edge-tag")}
    assert len(workers) == 2, "both worker processes tag"
    merged = ner_edge_dask.concatenate(parts, tmp_path / "all.jsonl")
    assert open(merged, "rb").read() == expected
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.path.basename(p) for p in parts)


def test_a_worker_killed_mid_run_loses_and_repeats_no_document(client, cli, tmp_path):
    # The default model: a partition (one CLI block, 512 lines) takes seconds, so the kill
    # lands inside one.
    lines = corpus_lines(2_100, long_line=False)[:2_100]
    corpus = write_lines(tmp_path / "corpus.txt", lines)
    expected = run_cli(cli, "predict", "--threads", "2", str(corpus))
    out = tmp_path / "out"
    bag = ner_edge_dask.read_lines(corpus, blocks_per_partition=1)
    assert bag.npartitions == 5
    pids = client.run(os.getpid)
    killed = {}

    def kill_a_tagging_worker():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            temporaries = glob.glob(str(out / "part-*.tmp-*"))
            busy = [
                address
                for address, keys in client.processing().items()
                if any(str(k).startswith("ner-edge-tag") for k in keys)
            ]
            if temporaries and busy and busy[0] in pids:
                time.sleep(0.5)  # well inside the partition: it takes seconds
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed["worker"] = busy[0]
                killed["temporaries"] = glob.glob(str(out / "part-*.tmp-*"))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_tagging_worker)
    killer.start()
    parts = ner_edge_dask.tag_bag(bag, out)
    killer.join()
    assert killed, "no worker was killed: the run ended before one was seen tagging"
    assert killed["temporaries"], "the killed run had a part file in progress"
    assert joined(parts) == expected, "every document exactly once, in order"
    assert not glob.glob(str(out / "*.tmp-*")), "temporary files of killed runs are removed"
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in parts)
    # The nanny restarted the killed worker: the cluster has 2 workers again.
    client.wait_for_workers(2, timeout=60)


def test_ids_survive_in_jsonl_and_parquet(client, cli, tmp_path):
    db = dask.bag
    lines = corpus_lines(1_200)[:1_200]
    corpus = write_lines(tmp_path / "corpus.txt", lines)
    cli_lines = run_cli(cli, "predict", "--bundle", str(TINY_BUNDLE), str(corpus)).split(b"\n")[:-1]
    model = ner_edge.load(TINY_BUNDLE)

    ids = [f"doc-{i}" for i in range(len(lines))]
    bag = db.from_sequence(list(zip(ids, lines)), npartitions=3)
    parts = ner_edge_dask.tag_bag(bag, tmp_path / "jsonl", model=model)
    out_lines = joined(parts).split(b"\n")[:-1]
    assert len(out_lines) == len(lines)
    for ident, line, cli_line in zip(ids, out_lines, cli_lines):
        prefix = b'{"id":' + json.dumps(ident).encode() + b","
        assert line.startswith(prefix)
        record = json.loads(line)
        assert record["id"] == ident
        # Same document and entities as the CLI (partitions here are not the CLI's blocks,
        # so the last digit of a score may differ: compare everything else).
        cli_record = json.loads(cli_line)
        assert record["text"] == cli_record["text"]
        assert [(e["start"], e["end"], e["type"]) for e in record["entities"]] == [
            (e["start"], e["end"], e["type"]) for e in cli_record["entities"]
        ]

    pd = import_or_fail("pandas")
    import_or_fail("pyarrow")
    dd = import_or_fail("dask.dataframe")
    frame = pd.DataFrame({"text": lines}, index=pd.RangeIndex(100, 100 + len(lines)))
    ddf = dd.from_pandas(frame, npartitions=2)
    parts = ner_edge_dask.tag_bag(ddf, tmp_path / "parquet", model=model, output="parquet")
    assert [os.path.basename(p) for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert table["id"].tolist() == list(range(100, 100 + len(lines)))
    assert table["text"].tolist() == lines
    first = json.loads(out_lines[0])
    assert [e["text"] for e in table["entities"][0]] == [e["text"] for e in first["entities"]]


def test_read_lines_cuts_partitions_at_cli_block_starts(tmp_path):
    # 1,100 short lines in CRLF, no final newline; line 511 has 70,000 bytes, two segments, so
    # the CLI's second block (512 segments) starts inside it: no partition may start there.
    lines = [f"line {i}" for i in range(1_100)]
    lines[511] = "word " * 14_000
    path = tmp_path / "crlf.txt"
    path.write_bytes(("\r\n".join(lines)).encode())
    starts = ner_edge.cli_block_starts(path)
    # Blocks: lines 0-510 + line 511's first segment; its second segment + lines 512-1022;
    # lines 1023-1099.
    assert starts == [(0, 0), (sum(len(l) + 2 for l in lines[:1023]), 1023)]
    bag = ner_edge_dask.read_lines(path, blocks_per_partition=1)
    assert bag.npartitions == len(starts)
    got = bag.compute(scheduler="sync")
    assert got == lines
    numbered = ner_edge_dask.read_lines(path, line_numbers=True).compute(scheduler="sync")
    assert numbered == list(enumerate(lines))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert ner_edge_dask.read_lines(empty).compute(scheduler="sync") == []
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\nab\xffcd\n")
    with pytest.raises(ner_edge.InputError, match="line 2, byte 3"):
        ner_edge_dask.read_lines(bad)


def test_tag_bag_refuses_to_mix_with_earlier_parts(tmp_path):
    db = dask.bag
    bag = db.from_sequence(["Tim Cook in Berlin."], npartitions=1)
    model = ner_edge.load(TINY_BUNDLE)
    ner_edge_dask.tag_bag(bag, tmp_path, model=model)
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ner_edge.UsageError, match="already holds part files"):
            ner_edge_dask.tag_bag(bag, tmp_path, model=model)
        parts = ner_edge_dask.tag_bag(bag, tmp_path, model=model, overwrite=True)
    assert len(parts) == 1
    with pytest.raises(ner_edge.UsageError, match="output must be"):
        ner_edge_dask.tag_bag(bag, tmp_path / "x", output="csv")
