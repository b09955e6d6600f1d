"""Run directories in a bucket: `refine run`, `stats` and `report` against a real S3-compatible
HTTP server (moto's standalone server) that the test starts on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refine.accounting import check_run
from refine.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.yaml"
WARCS = sorted((ROOT / "tests" / "data" / "warc").glob("*.warc.gz"))
BUCKET = "refine-test"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto server on loopback, a bucket with the test WARCs in in/, and the environment a
    user sets for it (credentials and endpoint from the environment, never the command line)."""
    pytest.importorskip("s3fs")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.2)
        import fsspec

        fs = fsspec.filesystem("s3", use_listings_cache=False)
        fs.mkdir(BUCKET)
        for path in WARCS:
            fs.put_file(str(path), f"{BUCKET}/in/{path.name}")
        yield {**os.environ, **env}
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def refine(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "refine.cli", *args], cwd=cwd, env=env,
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
    assert "testing-secret" not in str(manifest) and "AWS_" not in str(manifest)
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
