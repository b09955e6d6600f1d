"""Run directories in a bucket: `refine run`, `stats` and `report` against a real S3-compatible
HTTP server (moto's standalone server) that the test starts on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refine.accounting import check_run
from refine.rundir import RunDir

from .s3server import BUCKET, SECRET, WARCS, moto_server

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("s3fs")
    with moto_server() as env:
        yield env


def refine(env: dict[str, str], cwd: Path, *args: str,
           module: str = "refine.cli") -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def outputs(run: RunDir) -> dict[str, bytes]:
    out = {}
    for sub in ("data", "rejected", "spans"):
        for path in run.files(sub):
            with run.open(path) as handle:
                out[f"{sub}/{Path(path).name}"] = handle.read()
    return out


@pytest.fixture(scope="module")
def bucket_run(s3, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("empty-cwd")
    url = f"s3://{BUCKET}/runs/r1"
    done = refine(s3, cwd, "run", str(DEMO), "--input", f"s3://{BUCKET}/in/*.warc.gz",
                  "--output", url, "--workers", "2", "--quiet")
    return url, cwd, done


def test_run_stats_and_report_in_a_bucket(s3, bucket_run):
    url, cwd, done = bucket_run
    assert "accounting OK" in done.stdout
    run = RunDir(url)
    names = set(run.entries())
    assert {"data", "rejected", "stats.json", "manifest.json"} <= names
    stats = run.read_json("stats.json")
    assert stats["accounting_ok"]
    verdict = check_run(run, stats)  # on what is in the bucket: read == kept + rejected, rows
    assert verdict["ok"], verdict["problems"]
    assert len(verdict["files"]) == len(WARCS)
    for entry in stats["inputs"].values():
        assert entry["read"] == entry["kept"] + entry["rejected"] and entry["complete"]
    manifest = run.read_json("manifest.json")
    assert SECRET not in str(manifest) and "AWS_" not in str(manifest)
    printed = refine(s3, cwd, "stats", url)
    assert "accounting OK" in printed.stdout
    report = refine(s3, cwd, "report", url)
    assert run.exists("report.html") and "report.html" in report.stdout
    with run.open(run.path("report.html")) as handle:
        assert b'id="accounting" class="banner ok"' in handle.read()
    assert list(cwd.iterdir()) == []  # nothing written where the command ran


def test_bucket_run_equals_a_local_run_of_the_same_inputs(s3, bucket_run, tmp_path):
    url, cwd, _ = bucket_run
    local = tmp_path / "local"
    refine(s3, cwd, "run", str(DEMO), "--input", f"s3://{BUCKET}/in/*.warc.gz", "--output",
           str(local), "--workers", "1", "--quiet")
    mine, theirs = outputs(RunDir(url)), outputs(RunDir(local))
    assert sorted(mine) == sorted(theirs) and mine
    assert [name for name in mine if mine[name] != theirs[name]] == []


def test_a_run_killed_midway_and_resumed_in_the_bucket_equals_a_clean_run(s3, bucket_run,
                                                                          tmp_path):
    import signal

    url = f"s3://{BUCKET}/runs/killed"
    run = RunDir(url)
    args = [sys.executable, "-m", "refine.cli", "run", str(DEMO), "--input",
            f"s3://{BUCKET}/in/*.warc.gz", "--output", url, "--workers", "1", "--quiet"]
    first = subprocess.Popen(args, cwd=tmp_path, env=s3, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not run.files("stats/units", suffix=".json") and first.poll() is None:
        assert time.monotonic() < deadline, "no unit finished"
        time.sleep(0.5)
    assert first.poll() is None, "the run finished before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert run.exists(".lease.json") and not run.exists("stats.json")
    done = refine(s3, tmp_path, *args[3:], "--resume")
    assert "resumed:" in done.stdout and "accounting OK" in done.stdout
    clean = outputs(RunDir(bucket_run[0]))
    mine = outputs(run)
    assert sorted(mine) == sorted(clean)
    assert [name for name in mine if mine[name] != clean[name]] == []


def test_a_job_submitted_to_a_cluster_writes_the_same_run_into_the_bucket(s3, bucket_run):
    """`ray job submit` to a three-node cluster whose dashboard listens on 127.0.0.1; the nodes
    have the credentials in their environment, the command line has none."""
    import shutil
    import tempfile

    from testkit.localcluster import LocalCluster

    temp = Path(tempfile.mkdtemp(prefix="rj-"))  # short: Ray's socket paths must fit 107 bytes
    cluster = LocalCluster(temp, dashboard=True)
    try:
        url = f"s3://{BUCKET}/runs/cluster"
        submit = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address",
                  cluster.dashboard_url, "--", sys.executable, "-m", "refine.cli", "run",
                  str(DEMO), "--input", f"s3://{BUCKET}/in/*.warc.gz", "--output", url,
                  "--address", "auto", "--workers", "2", "--quiet"]
        assert SECRET not in " ".join(submit)
        for _ in range(30):  # the head's job agent starts a while after `ray start` returns
            done = subprocess.run(submit, env=cluster.env, capture_output=True, text=True,
                                  timeout=900)
            if "No available agent" not in done.stdout + done.stderr:
                break
            time.sleep(2)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        assert "accounting OK" in done.stdout and "succeeded" in done.stdout
    finally:
        cluster.stop()
        shutil.rmtree(temp, ignore_errors=True)
    mine, local = outputs(RunDir(url)), outputs(RunDir(bucket_run[0]))
    assert sorted(mine) == sorted(local) and mine
    assert [name for name in mine if mine[name] != local[name]] == []
    assert RunDir(url).read_json("stats.json")["accounting_ok"]


def test_quick_ablation_with_its_runs_and_results_in_the_bucket(s3, tmp_path):
    import json

    cwd, work = tmp_path / "cwd", tmp_path / "work"
    cwd.mkdir()
    url = f"s3://{BUCKET}/ablate"
    done = refine(s3, cwd, str(DEMO), "--input", f"s3://{BUCKET}/in/*.warc.gz",
                  "--output", url, "--work", str(work), "--quick", "--seeds", "1",
                  module="pretrain.ablate")
    assert f"wrote {url}/ablation.json" in done.stdout
    out = RunDir(url)
    assert {"raw-run", "run", "ablation.json", "ablation.md", "ablation.svg"} <= set(out.entries())
    result = out.read_json("ablation.json")
    assert result["runs"] == {"raw": f"{url}/raw-run", "full": f"{url}/run"}
    assert result["problems"] == []
    assert all(len(v["runs"]) == 1 for v in result["variants"].values())
    # the variants are made of what the runs in the bucket kept
    refined_ids = {r["id"] for p in out.files("run/data")
                   for r in out.read_table(p, columns=["id"]).to_pylist()}
    train = json.loads((work / "tokens" / "refined" / "manifest.json").read_text())
    assert train["totals"]["train"]["tokens"] > 0 and refined_ids
    with out.open(out.path("run", "report.html")) as handle:
        assert b'id="ablation"' in handle.read()
    assert list(cwd.iterdir()) == []
