"""Dedup's shuffle files (`refine.dedup.shuffle`): what producers scatter, each partition gathers
whole and in producer order, on a local disk and in a bucket (real S3-compatible server)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from refine.dedup.shuffle import gather, gather_table, scatter, scatter_table
from refine.rundir import RunDir

from .s3server import BUCKET, moto_server

RECORD = np.dtype([("key", "<u8"), ("value", "<u4")])
SCHEMA = pa.schema([("doc", pa.uint64()), ("id", pa.string())])
PARTITIONS, PRODUCERS = 7, 5


def produced(seed: int) -> list[tuple[np.ndarray, np.ndarray, pa.Table]]:
    """Per producer: records, their partitions (some partitions get nothing), and a table."""
    rng = np.random.default_rng(seed)
    out = []
    for producer in range(PRODUCERS):
        size = int(rng.integers(0, 40)) if producer != 2 else 0  # one producer sends nothing
        records = np.empty(size, dtype=RECORD)
        records["key"] = rng.integers(0, 2**63, size, dtype=np.uint64)
        records["value"] = np.arange(size, dtype=np.uint32)
        partition = rng.choice([0, 1, 3, 6], size)  # 2, 4, 5: empty everywhere
        ids = [f"doc-{producer}-{i}-é✓" * int(rng.integers(1, 4)) for i in range(size)]
        table = pa.table({"doc": pa.array(records["key"]), "id": pa.array(ids)}, schema=SCHEMA)
        out.append((records, partition, table))
    return out


def check_round_trip(run: RunDir) -> None:
    sent = produced(seed=5)
    for producer, (records, partition, table) in enumerate(sent):
        scatter(run, "step", records, partition, PARTITIONS, f"p{producer}")
        scatter_table(run, "tables", table, partition, PARTITIONS, f"p{producer}")
    for k in range(PARTITIONS):
        expected = [records[partition == k] for records, partition, _ in sent]
        got = gather(run, "step", k, RECORD)
        assert got.dtype == RECORD
        np.testing.assert_array_equal(got, np.concatenate(expected))
        table = gather_table(run, "tables", k, SCHEMA)
        assert table.schema == SCHEMA
        want = pa.concat_tables([t.filter(pa.array(p == k)) for _, p, t in sent])
        assert table.to_pylist() == want.to_pylist()
    assert not len(gather(run, "nothing-sent", 0, RECORD))
    assert gather_table(run, "nothing-sent", 0, SCHEMA).num_rows == 0


def test_every_partition_gets_its_records_in_producer_order(tmp_path):
    check_round_trip(RunDir(tmp_path))


@pytest.mark.slow
def test_the_same_in_a_bucket():
    pytest.importorskip("s3fs")
    with moto_server():
        check_round_trip(RunDir(f"s3://{BUCKET}/shuffle"))


def test_a_bad_file_fails_with_its_path(tmp_path):
    run = RunDir(tmp_path)
    records = np.zeros(10, dtype=RECORD)
    scatter(run, "step", records, np.zeros(10, dtype=np.int64), 2, "p0")
    with pytest.raises(ValueError, match="p0.shuf: not a shuffle file of 8-byte records"):
        gather(run, "step", 0, np.dtype("<u8"))
    with pytest.raises(ValueError, match="partition 2 of 2"):
        gather(run, "step", 2, RECORD)
    path = tmp_path / "step" / "p0.shuf"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="p0.shuf: truncated"):
        gather(run, "step", 0, RECORD)


def test_scratch_files_are_not_fsynced_but_outputs_are(tmp_path, monkeypatch):
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    run = RunDir(tmp_path)
    scatter(run, "step", np.zeros(3, dtype=RECORD), np.zeros(3, dtype=np.int64), 1, "p0")
    assert synced == []
    run.write_json({"a": 1}, "stats.json")
    assert len(synced) == 1
