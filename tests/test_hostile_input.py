"""Hostile input (issue 7): every case of the table in tests/hostile_cases.py (one builder per
case, each writing its own input file) goes through ONE real refine run (Ray, two workers) and
must end as README "Hostile input" documents: kept, rejected with its stage and reason, or a clear
error, with read == kept + rejected (per reason) for every input, in stats.json and in the rows of
RUN/data and RUN/rejected, and nothing written outside RUN.

Each case has its own input file, with good records before and after the bad one where the
format allows, so "a bad record costs only itself" is checked too.
"""

from __future__ import annotations

import io
import json
import re
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from refine.config import parse_config
from refine.run import run
from refine.shards import metrics_dict
from refine.warc import iter_records

from .hostile_cases import CASES, build_cases
from .hostile_records import ESCAPE, prose

pytestmark = pytest.mark.slow


def config():
    return parse_config({
        "name": "hostile",
        "read": {"chunk_bytes": 1 << 20},  # the bigger inputs become several work units
        "language": {"languages": [], "min_score": 0.0},  # any language, fastText still runs
        "repetition": {"enabled": False},
        "quality": {"enabled": False},
        "lines": {"enabled": False},
        "output": {"shard_bytes": 1 << 22},
    })


def rows_of(run_dir: Path, sub: str) -> list[dict]:
    files = sorted((run_dir / sub).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under `root` outside `skip`, with size and mtime for files (a directory's
    mtime changes when RUN is made in it)."""
    return {str(p): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if skip not in p.parents and p != skip}


@pytest.fixture(scope="module")
def hostile(local_ray, tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    started = time.monotonic()
    cases = build_cases(base / "inputs")
    generated = time.monotonic() - started
    run_dir = base / "deep" / "er" / "run"  # "../../x" from RUN/data would still land in base
    run_dir.parent.mkdir(parents=True)
    before = snapshot(base, run_dir)
    inputs = sorted(str(base / "inputs" / name) for name in cases)
    started = time.monotonic()
    result = run(config(), inputs, run_dir, workers=2)
    print(f"\nhostile corpus: generated in {generated:.1f} s, "
          f"refined in {time.monotonic() - started:.1f} s")
    after = snapshot(base, run_dir)
    return {"base": base, "cases": cases, "result": result, "run_dir": run_dir,
            "before": before, "after": after}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_every_case_ends_as_documented(hostile, case):
    run_dir = hostile["run_dir"]
    name, want = case.name, hostile["cases"][case.name]
    stats = json.loads((run_dir / "stats.json").read_text())
    kept, rejected = rows_of(run_dir, "data"), rows_of(run_dir, "rejected")
    base = hostile["base"] / "inputs"
    problems = []
    path = str(base / name)
    entry = stats["inputs"][path]
    mine_kept = [r for r in kept if r["file_path"] == path]
    mine_rejected = [r for r in rejected if r["file_path"] == path]
    reasons = Counter(f"{r['stage']}.{r['reason']}" for r in mine_rejected)
    got = {"read": entry["read"], "kept": {r["id"] for r in mine_kept},
           "rejected": dict(reasons)}
    if want.get("arc"):  # ARC records have no id: refine derives one from path and offset
        ok = ({r["url"] for r in mine_kept} == want["urls"] and got["rejected"]
              == want["rejected"] and got["read"] == want["read"])
    else:
        ok = got == {k: want[k] for k in ("read", "kept", "rejected")}
    if not ok:
        problems.append((name, got, {k: want.get(k) for k in ("read", "kept", "rejected")}))
    by_id = {r["id"]: (r["stage"], r["reason"]) for r in mine_rejected}
    for rid, outcome in want.get("ids", {}).items():
        if by_id.get(rid) != outcome:
            problems.append((name, rid, by_id.get(rid), outcome))
    texts = {r["id"]: r["text"] for r in mine_kept}
    for rid, fragment in want.get("texts", {}).items():
        if fragment not in texts.get(rid, ""):
            problems.append((name, rid, "text", texts.get(rid, "")[:80], fragment))
    assert problems == []


def test_the_50mb_page_is_extracted_from_its_first_mib(hostile):
    kept = rows_of(hostile["run_dir"], "data")
    # the 50 MB page: read whole, extracted from its first MiB (extract.max_html_bytes)
    big = next(r for r in kept if r["id"] == "big")
    assert metrics_dict(big["metrics"])["extract.html_chars"] >= 50_000_000
    assert prose("big")[:60] in big["text"] and len(big["text"].encode()) <= 1 << 20


def test_bombs_and_corrupt_records_are_warnings_and_no_worker_died(hostile):
    stats = json.loads((hostile["run_dir"] / "stats.json").read_text())
    # bombs and corrupt records are warnings (`--strict` fails on them); no worker died
    warnings = "\n".join(stats["warnings"])
    for reason in ("record_too_large", "corrupt_record", "truncated_record"):
        assert reason in warnings
    assert not any(w for w in stats["warnings"] if "extraction_crashed" in w)


def test_accounting_law_holds_for_every_input(hostile):
    run_dir, cases = hostile["run_dir"], hostile["cases"]
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["accounting_ok"]
    kept, rejected = rows_of(run_dir, "data"), rows_of(run_dir, "rejected")
    kept_by = Counter(r["file_path"] for r in kept)
    rejected_by = Counter(r["file_path"] for r in rejected)
    reasons_by = Counter((r["file_path"], f"{r['stage']}.{r['reason']}") for r in rejected)
    base = hostile["base"] / "inputs"
    assert set(stats["inputs"]) == {str(base / name) for name in cases}
    for name, want in cases.items():
        path = str(base / name)
        entry = stats["inputs"][path]
        assert entry["complete"] and entry["accounting_ok"], name
        assert entry["read"] == entry["kept"] + entry["rejected"], name
        assert entry["kept"] == kept_by[path], name
        assert entry["rejected"] == rejected_by[path] == sum(entry["by_reason"].values()), name
        for reason, count in entry["by_reason"].items():
            assert reasons_by[(path, reason)] == count, (name, reason)
        if want.get("independent"):  # warcio (ARC: converted to WARC) sees the same records
            assert entry["read"] == independent_count(path), name
    for stage in stats["stages"].values():
        assert stage["in"] == stage["out"] + sum(stage["rejected"].values())
    ids = [r["id"] for r in kept] + [r["id"] for r in rejected]
    assert len(ids) == len(set(ids)), "a record landed twice"


def independent_count(path: str) -> int:
    with open(path, "rb") as stream:
        return sum(r.rec_type == "response"
                   for r in ArchiveIterator(stream, arc2warc=path.endswith((".arc", ".arc.gz"))))


SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def test_nothing_is_written_outside_the_run_and_names_never_come_from_ids(hostile):
    assert hostile["after"] == hostile["before"], "files appeared or changed outside RUN"
    assert not Path(f"/{ESCAPE}").exists()
    run_dir = hostile["run_dir"]
    for path in run_dir.rglob("*"):
        part = path.relative_to(run_dir)
        assert all(SAFE_NAME.fullmatch(p) for p in part.parts), part
        assert ESCAPE not in str(part) and "passwd" not in str(part), part
    kept = {r["id"] for r in rows_of(run_dir, "data")}
    assert f"../../{ESCAPE}/etc/passwd" in kept and f"nul\x00{ESCAPE}" in kept  # ids are data


def test_plain_reader_memory_is_bounded_without_line_breaks():
    """A file with no line break is not read into memory as one line."""
    blob = io.BytesIO(b"x" * (32 << 20))
    tracemalloc.start()
    try:
        problems = [r.problem for r in iter_records(blob)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problems == ["corrupt_record"]
    assert peak < 4 << 20, peak
