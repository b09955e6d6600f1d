"""End to end on a real local Ray: accounting, determinism across worker counts, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from refine.config import load_config
from refine.readers import plan_units
from refine.run import RunError, largest_first, run

from .conftest import DATA, ROOT, SHARED

pytestmark = pytest.mark.slow
DEMO = ROOT / "configs" / "demo.yaml"
WARCS = sorted(str(p) for p in (DATA / "warc").glob("*.gz"))


def document_records(path: str) -> int:
    """Response/conversion records in a WARC, counted by warcio (independently of refine)."""
    count = 0
    with open(path, "rb") as stream:
        try:
            for record in ArchiveIterator(stream):
                count += record.rec_type in ("response", "conversion")
        except Exception:  # warcio gives up on some broken files; we only count what it saw
            pass
    return count


def rows(run_dir: Path, sub: str, columns=None) -> list[dict]:
    files = sorted((run_dir / sub).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f, columns=columns).to_pylist()]


def check_accounting(run_dir: Path, inputs: list[str]) -> dict:
    stats = json.loads((run_dir / "stats.json").read_text())
    kept, rejected = rows(run_dir, "data"), rows(run_dir, "rejected")
    kept_by_file = Counter(r["file_path"] for r in kept)
    rejected_by_file = Counter(r["file_path"] for r in rejected)
    reasons_by_file = Counter((r["file_path"], f"{r['stage']}.{r['reason']}") for r in rejected)
    assert stats["accounting_ok"]
    for path in inputs:
        entry = stats["inputs"][path]
        assert entry["complete"]
        assert entry["read"] == document_records(path), path
        assert entry["read"] == entry["kept"] + entry["rejected"], path
        assert entry["kept"] == kept_by_file[path]
        assert entry["rejected"] == rejected_by_file[path] == sum(entry["by_reason"].values())
        for reason, count in entry["by_reason"].items():
            assert reasons_by_file[(path, reason)] == count, (path, reason)
    for stage in stats["stages"].values():
        assert stage["in"] == stage["out"] + sum(stage["rejected"].values())
    ids = [r["id"] for r in kept] + [r["id"] for r in rejected]
    assert len(ids) == len(set(ids)), "a record landed twice"
    return stats


@pytest.fixture(scope="module")
def demo_config():
    return load_config(DEMO)


@pytest.fixture(scope="module")
def two_worker_run(refine_run):
    """The session's demo run (conftest.refine_run: 2 workers over tests/data/warc)."""
    return refine_run


def test_every_record_is_accounted_for(two_worker_run):
    stats = check_accounting(two_worker_run, WARCS)
    truncated = str(DATA / "warc" / "truncated-record.warc.gz")
    assert stats["inputs"][truncated]["by_reason"] == {"read.truncated_record": 1}
    assert any("truncated_record" in w for w in stats["warnings"])
    assert stats["documents"]["kept"] >= 40  # the demo sample must feed the later stages
    kept = rows(two_worker_run, "data")
    assert {r["language"] for r in kept} >= {"en", "de"}
    assert all(r["token_count"] == len(r["text"].split()) for r in kept)
    manifest = json.loads((two_worker_run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert all(i["complete"] for i in manifest["inputs"])
    assert manifest["config_hash"] == load_config(DEMO).hash


def test_one_and_two_workers_give_identical_output(local_ray, demo_config, two_worker_run,
                                                    tmp_path):
    one = run(demo_config, WARCS, tmp_path / "one", workers=1)
    for sub in ("data", "rejected"):
        a = {r["id"]: r for r in rows(one.run_dir, sub)}
        b = {r["id"]: r for r in rows(two_worker_run, sub)}
        assert a.keys() == b.keys()
        assert all(a[k]["text"].encode() == b[k]["text"].encode() for k in a)
    for sub in ("data", "rejected", "spans"):  # reproducible to the byte
        mine = {p.name: p.read_bytes() for p in (one.run_dir / sub).glob("*.parquet")}
        theirs = {p.name: p.read_bytes() for p in (two_worker_run / sub).glob("*.parquet")}
        assert mine.keys() == theirs.keys() and mine, sub
        assert [n for n in mine if mine[n] != theirs[n]] == [], sub


def test_existing_output_needs_resume_or_overwrite(two_worker_run, demo_config):
    with pytest.raises(RunError, match="--resume"):
        run(demo_config, WARCS, two_worker_run, workers=1)
    other = demo_config.model_copy(update={"name": "changed"})
    with pytest.raises(RunError, match="config"):
        run(other, WARCS, two_worker_run, workers=1, resume=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "refine.cli", *args]


def settled(parts: Path) -> dict[str, int]:
    previous: dict[str, int] = {}
    for _ in range(60):
        current = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.json")}
        if current == previous:
            return current
        previous = current
        time.sleep(2)
    raise AssertionError("unit files kept changing after the driver was killed")


def test_killed_run_resumes_to_the_same_output(two_worker_run, tmp_path):
    out = tmp_path / "killed"
    cmd = _cli("run", str(DEMO), "--input", *WARCS, "--output", str(out), "--workers", "1",
               "--quiet")
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    parts = out / "stats" / "units"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(parts.glob("*.json"))) < 2:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = settled(parts)  # a Ray worker may finish the unit it was on after the kill
    assert 2 <= len(finished) < len(WARCS), "kill the run midway"
    result = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed: {len(finished)} of {len(WARCS)} units were already done" in result.stdout
    for name, mtime in finished.items():
        assert (parts / name).stat().st_mtime_ns == mtime, f"{name} was processed again"
    for sub in ("data", "rejected"):
        clean = sorted((r["id"], r["text"]) for r in rows(two_worker_run, sub))
        assert sorted((r["id"], r["text"]) for r in rows(out, sub)) == clean
    assert not list(out.rglob("*.tmp")), "temp files left behind"
    check_accounting(out, WARCS)


def test_strict_fails_on_truncated_input_and_default_warns(tmp_path):
    truncated = str(DATA / "warc" / "truncated-record.warc.gz")
    base = _cli("run", str(DEMO), "--input", truncated, "--quiet", "--workers", "1")
    warn = subprocess.run([*base, "--output", str(tmp_path / "a")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert warn.returncode == 0, warn.stderr[-2000:]
    assert "truncated_record" in warn.stderr
    strict = subprocess.run([*base, "--output", str(tmp_path / "b"), "--strict"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert strict.returncode == 3


@pytest.mark.skipif(not (SHARED / "warc").exists(), reason="../shared/data not present")
def test_accounting_over_every_shared_warc(local_ray, demo_config, tmp_path):
    inputs = sorted(str(p) for p in (SHARED / "warc").rglob("*.gz"))
    result = run(demo_config, inputs, tmp_path / "shared", workers=2)
    stats = check_accounting(result.run_dir, inputs)
    assert stats["documents"]["read"] >= 1213 + 16 + 1 + 1 + 1


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, demo_config):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(RunError, match="not a refine run"):
        run(demo_config, WARCS, precious, workers=1, overwrite=True)
    assert (precious / "thesis.tex").exists()


def test_text_inputs_skip_extraction_and_are_accounted_for(local_ray, tmp_path):
    """RefinedWeb's filters over an already-extracted corpus (JSONL), with the default preset."""
    jsonl = str(DATA / "text" / "cc-main-2019-30-text-sample.jsonl.gz")
    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    result = run(config, [jsonl], tmp_path / "text", workers=2)
    stats = result.stats
    assert stats["inputs"][jsonl]["read"] == 697
    assert stats["accounting_ok"]
    assert stats["stages"]["extract"]["in"] == 0
    assert stats["stages"]["language"]["in"] > 0 and stats["documents"]["kept"] > 0
    kept = rows(result.run_dir, "data")
    assert len(kept) == stats["documents"]["kept"]
    assert {r["language"] for r in kept} == {"en"}


def test_the_local_ray_listens_on_loopback_only(local_ray):
    import psutil

    node = local_ray.nodes()[0]
    assert node["NodeManagerAddress"] == "127.0.0.1"
    session = Path(local_ray._private.worker.global_worker.node.get_session_dir_path()).name
    def of_this_session(proc: psutil.Process) -> bool:
        try:
            return session in " ".join(proc.cmdline())
        except psutil.Error:  # ended, or a zombie, while we looked
            return False

    def listening(proc: psutil.Process) -> list[str]:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.Error:
            return []
        return [c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN]

    ours = [p for p in psutil.process_iter() if of_this_session(p)]
    assert any("gcs_server" in p.name() for p in ours)
    addresses = [ip for p in ours for ip in listening(p)]
    assert addresses and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in addresses)


def test_units_scheduled_largest_first():
    sizes = {"a.warc.gz": 30, "b.warc.gz": 70, "c.jsonl": 50, "d.warc.gz": 50}
    units = plan_units(sorted(sizes.items()), chunk_bytes=40)  # b: 40 + 30, d: 40 + 10
    order = [(u.path, u.index) for u in largest_first(units, sizes)]
    assert order == [("c.jsonl", 0), ("b.warc.gz", 0), ("d.warc.gz", 0), ("a.warc.gz", 0),
                     ("b.warc.gz", 1), ("d.warc.gz", 1)]
    assert largest_first([], sizes) == []
