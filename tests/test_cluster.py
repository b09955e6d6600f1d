"""A Ray cluster of three processes on this machine (a head and two worker nodes, started with
`ray start`), `refine run --address` against it, and faults injected while it runs."""

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testkit.localcluster import LocalCluster

from .conftest import DATA, ROOT

pytestmark = pytest.mark.slow
WARCS = sorted(str(p) for p in (DATA / "warc").glob("*.gz"))


@pytest.fixture
def cluster():
    temp = Path(tempfile.mkdtemp(prefix="rc-"))  # short: Ray's socket paths must fit 107 bytes
    started = LocalCluster(temp)
    yield started
    started.stop()
    shutil.rmtree(temp, ignore_errors=True)


def refine_cli(cluster: LocalCluster, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "refine.cli", "run", str(ROOT / "configs" / "demo.yaml"),
         "--input", *WARCS, "--output", str(output), "--address", cluster.address, "--quiet"],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def files(run_dir: Path) -> dict[str, bytes]:
    return {f"{sub}/{p.name}": p.read_bytes()
            for sub in ("data", "rejected", "spans") for p in (run_dir / sub).glob("*.parquet")}


def assert_same_output(run_dir: Path, reference: Path) -> None:
    mine, theirs = files(run_dir), files(reference)
    assert sorted(mine) == sorted(theirs)
    assert [name for name in mine if mine[name] != theirs[name]] == []


def test_run_on_a_multi_node_cluster_equals_a_local_run(cluster, refine_run, tmp_path):
    proc = refine_cli(cluster, tmp_path / "run")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert "accounting OK" in output
    assert_same_output(tmp_path / "run", refine_run)


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_a_missing_or_wrong_auth_token_is_a_message(cluster, tmp_path, token):
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    if token:
        env["RAY_AUTH_TOKEN"] = token
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "refine.cli", "run", str(ROOT / "configs" / "demo.yaml"),
         "--input", WARCS[0], "--output", str(out), "--address", cluster.address, "--quiet"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"cannot connect to the Ray cluster at {cluster.address}" in done.stderr
    assert "RAY_AUTH_TOKEN" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()  # nothing created before the connection


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_killing_a_worker_process_and_then_a_node_changes_nothing(cluster, refine_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = refine_cli(cluster, run_dir)
    units = run_dir / "stats" / "units"

    def units_done() -> int:
        return len(list(units.glob("*.json"))) if units.exists() else 0

    wait_for(lambda: cluster.workers_running("PoolWorker"), 120, "the worker actors")
    victim = cluster.workers_running("PoolWorker")[0]
    assert proc.poll() is None and units_done() < 8
    victim.send_signal(signal.SIGKILL)  # a worker process dies mid-unit
    wait_for(lambda: units_done() >= 2 or proc.poll() is not None, 300, "two units")
    assert proc.poll() is None and units_done() < 8, "the run ended before the node was killed"
    cluster.kill_node(2)  # then a whole worker node
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert_same_output(run_dir, refine_run)


def test_killing_a_node_during_dedup_changes_nothing(cluster, refine_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = refine_cli(cluster, run_dir)
    wait_for(lambda: (run_dir / "dedup" / "work").exists() or proc.poll() is not None, 600,
             "dedup to start")
    assert proc.poll() is None and not (run_dir / "stats" / "dedup.json").exists(), \
        "the run ended before the node was killed"
    cluster.kill_node(2)  # its dedup tasks are retried elsewhere; their files are rewritten
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert_same_output(run_dir, refine_run)
