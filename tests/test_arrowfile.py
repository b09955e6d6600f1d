"""Reading a run's Parquet never leaves a Python file object for Arrow's threads to release
while the interpreter exits (that aborted `refine stats` with exit 134 about one run in three)."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from refine.rundir import RunDir

READ_EVERY_FILE_AND_EXIT = """
import sys
from refine.rundir import RunDir
run = RunDir(sys.argv[1])
print(sum(run.read_table(p).num_rows + run.num_rows(p) for p in run.files("data")))
"""


def _write_files(root, files: int = 8, rows: int = 2000) -> None:
    (root / "data").mkdir(parents=True)
    for i in range(files):
        table = pa.table({"text": [f"document {i}-{j} " * 40 for j in range(rows)]})
        pq.write_table(table, root / "data" / f"{i}.parquet", row_group_size=200)


def test_reading_every_file_then_exiting_never_aborts(tmp_path):
    _write_files(tmp_path)
    for attempt in range(15):
        done = subprocess.run([sys.executable, "-c", READ_EVERY_FILE_AND_EXIT, str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (attempt, done.returncode, done.stderr[-500:])
        assert done.stdout.strip() == str(2 * 8 * 2000)


def test_remote_files_read_through_an_arrow_owned_copy(tmp_path):
    run = RunDir("memory://arrowfile-test/run")
    table = pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"]})
    with run.writer(run.path("data", "0.parquet")) as handle:
        pq.write_table(table, handle)
    path = run.files("data")[0]
    assert run.read_table(path, columns=["text"]).column("text").to_pylist() == ["x", "y", "z"]
    assert run.num_rows(path) == 3
    with run.parquet(path) as parquet:
        assert [b.num_rows for b in parquet.iter_batches(batch_size=2)] == [2, 1]
