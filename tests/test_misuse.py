"""Mistakes people make with `refine run`, through the real CLI: one writer per run directory,
--overwrite and --resume guarded by the manifest, an unreachable --address, bad output paths."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from refine.lease import LEASE

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.yaml"
WARCS = sorted(str(p) for p in (ROOT / "tests" / "data" / "warc").glob("*.gz"))


def refine(*args: str, wait: bool = True, **kwargs):
    command = [sys.executable, "-m", "refine.cli", *args]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kwargs)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          **kwargs)


def run_args(output: Path, *extra: str, inputs: list[str] = WARCS) -> list[str]:
    return ["run", str(DEMO), "--input", *inputs, "--output", str(output), "--quiet",
            "--workers", "1", *extra]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def outputs(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for sub in ("data", "rejected", "spans") for p in sorted((run_dir / sub).glob("*"))}


@pytest.mark.slow
def test_second_writers_are_refused_while_a_run_is_live(refine_run, tmp_path):
    out = tmp_path / "run"
    first = refine(*run_args(out), wait=False)
    try:
        wait_for(lambda: (out / LEASE).exists() or first.poll() is not None, 120, "the lease")
        assert first.poll() is None, first.communicate()
        holder = json.loads((out / LEASE).read_text())
        assert holder["pid"] == first.pid
        for mode in ([], ["--resume"], ["--overwrite"]):
            started = time.monotonic()
            second = refine(*run_args(out, *mode))
            assert second.returncode == 2, (mode, second.stderr)
            assert f"pid {first.pid}" in second.stderr and "being written by" in second.stderr
            assert "Traceback" not in second.stderr
            assert time.monotonic() - started < 60  # refused before any work
        assert first.wait(timeout=600) == 0, first.communicate()
    finally:
        if first.poll() is None:
            first.kill()
    assert not (out / LEASE).exists()  # released
    assert outputs(out) == outputs(refine_run)  # as a clean run of the same inputs


@pytest.mark.slow
def test_a_killed_writers_lease_is_taken_over_by_resume(refine_run, tmp_path):
    out = tmp_path / "run"
    first = refine(*run_args(out), wait=False, start_new_session=True)
    units = out / "stats" / "units"
    wait_for(lambda: (units.exists() and any(units.glob("*.json"))) or first.poll() is not None,
             300, "a finished unit")
    assert first.poll() is None, "the first run finished before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert (out / LEASE).exists()  # left behind by the killed writer
    resumed = refine(*run_args(out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "accounting OK" in resumed.stdout
    assert outputs(out) == outputs(refine_run)


def test_overwrite_deletes_only_a_refine_run(tmp_path):
    tokens = tmp_path / "tokens"  # as `pretrain.encode` leaves it
    (tokens / "train").mkdir(parents=True)
    (tokens / "val").mkdir()
    (tokens / "train" / "shard-00000.bin").write_bytes(b"\0" * 64)
    (tokens / "manifest.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 8000}))
    done = refine(*run_args(tokens, "--overwrite"))
    assert done.returncode == 2 and "not a refine run" in done.stderr
    assert (tokens / "train" / "shard-00000.bin").exists() and (tokens / "val").is_dir()
    assert not (tokens / LEASE).exists()


@pytest.mark.slow
def test_resume_with_other_inputs_is_refused_with_the_difference(refine_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(refine_run, copy)
    before = outputs(copy)
    manifest = (copy / "manifest.json").read_bytes()
    fewer = [p for p in WARCS if "truncated" not in p]
    other = tmp_path / "other.warc.gz"
    shutil.copy(WARCS[0], other)
    done = refine(*run_args(copy, "--resume", inputs=[*fewer, str(other)]))
    assert done.returncode == 2, done.stderr
    assert "other inputs" in done.stderr
    assert f"- {WARCS[-1]}" in done.stderr and f"+ {other}" in done.stderr
    assert (copy / "manifest.json").read_bytes() == manifest and outputs(copy) == before


def test_unreachable_address_fails_in_time_and_creates_nothing(tmp_path):
    out = tmp_path / "never"
    started = time.monotonic()
    done = refine(*run_args(out, "--address", "127.0.0.1:9", "--connect-timeout", "3"))
    assert done.returncode == 2, done.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 45
    assert not out.exists()


def test_output_that_is_a_file_is_a_message(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    done = refine(*run_args(target))
    assert done.returncode == 2 and "is a file" in done.stderr and "Traceback" not in done.stderr
    below = refine(*run_args(target / "run"))
    assert below.returncode == 2 and "Traceback" not in below.stderr
    assert target.read_text() == "not a directory"


def test_debug_shows_the_traceback(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    done = refine("--debug", *run_args(target))
    assert done.returncode != 0 and "Traceback" in done.stderr


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    # as from a terminal: a command started in the background of a script inherits SIGINT
    # ignored (POSIX), and Python then never raises KeyboardInterrupt
    first = refine(*run_args(out), wait=False,
                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    driver = psutil.Process(first.pid)

    def refining() -> bool:  # a worker and its extraction child at work (a local run: ~5 s)
        return (out / LEASE).exists() and len(driver.children(recursive=True)) >= 2

    wait_for(lambda: refining() or first.poll() is not None, 120, "the workers")
    time.sleep(0.5)
    children = driver.children(recursive=True)  # workers, extraction
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    assert "--resume" in stderr and str(out) in stderr
    assert not (out / LEASE).exists()
    assert children
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []  # none left running


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["deleted_rejected_file", "interrupted"])
def test_stats_and_report_give_the_same_verdict(refine_run, tmp_path, damage):
    copy = tmp_path / "run"
    shutil.copytree(refine_run, copy)
    healthy = refine("stats", str(copy))
    assert healthy.returncode == 0 and "accounting OK" in healthy.stdout
    if damage == "deleted_rejected_file":
        next(iter(sorted((copy / "rejected").glob("*.parquet")))).unlink()
    else:  # killed before its last unit finished: that unit's statistics and rows are missing
        unit = sorted((copy / "stats" / "units").glob("*.json"))[-1]
        unit.unlink()
        (copy / "stats.json").unlink()
    summary = refine("stats", str(copy))
    assert summary.returncode == 0 and "accounting FAILED" in summary.stdout, summary.stdout
    as_json = json.loads(refine("stats", str(copy), "--json").stdout)
    assert as_json["accounting_ok"] is False and as_json["accounting_problems"]
    report = refine("report", str(copy), "--output", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    assert 'id="accounting" class="banner alarm" data-ok="false"' in page
    for problem in as_json["accounting_problems"]:
        assert problem.split(":")[0] in page


@pytest.mark.slow
def test_report_to_an_unwritable_place_is_a_message(refine_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    done = refine("report", str(refine_run), "--output", str(blocker / "report.html"))
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith("error:"), done.stderr
    assert str(blocker) in last and "Traceback" not in done.stderr
