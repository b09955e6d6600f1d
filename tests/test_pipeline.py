"""The per-unit pipeline without Ray: extraction outcomes each get their own rejection reason."""

import gzip
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from refine.config import parse_config
from refine.pipeline import UnitProcessor
from refine.readers import plan_units
from refine.sandbox import CRASHED, FAILED, OK, ExtractionSandbox
from refine.shards import metrics_dict

from .conftest import DATA

GOLD = DATA / "extraction"


def gold_page() -> tuple[str, bytes]:
    truth = json.loads((GOLD / "ground-truth.json").read_text())
    key = sorted(truth)[0]
    return truth[key]["url"], gzip.decompress((GOLD / "html" / f"{key}.html.gz").read_bytes())


def slow_html(cells: int = 60000) -> bytes:
    """About a megabyte of tiny table cells: trafilatura needs a second or more on it."""
    row = "".join(f"<td>c{i}</td>" for i in range(10))
    return ("<html><body><table>" + f"<tr>{row}</tr>" * (cells // 10)
            + "</table></body></html>").encode()


def warc_record(uri: str, body: bytes, record_id: str) -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {uri}\r\n"
            f"WARC-Record-ID: <urn:uuid:{record_id}>\r\nContent-Length: {len(http)}\r\n\r\n")
    return gzip.compress(head.encode() + http + b"\r\n\r\n")


def process(tmp_path: Path, records: bytes, **overrides) -> tuple[dict, list[dict], list[dict]]:
    path = tmp_path / "in.warc.gz"
    path.write_bytes(records)
    config = parse_config({"language": {"languages": []}, **overrides})
    processor = UnitProcessor(config, tmp_path / "run")
    try:
        unit = plan_units([(str(path), path.stat().st_size)], 1 << 30)[0]
        summary = processor.process(unit)
    finally:
        processor.close()
    rows = {}
    for sub in (processor.kept_dir, "rejected"):  # stages 1-7: filtered/ when dedup follows
        files = sorted((tmp_path / "run" / sub).glob("*.parquet"))
        rows[sub] = [r for f in files for r in pq.read_table(f).to_pylist()]
    return summary, rows[processor.kept_dir], rows["rejected"]


def test_empty_page_slow_page_and_good_page_each_end_in_their_place(tmp_path):
    url, html = gold_page()
    records = (warc_record("http://example.org/slow", slow_html(), "slow")
               + warc_record(url, html, "good")
               + warc_record("http://example.org/empty", b"<html><body></body></html>", "empty"))
    summary, kept, rejected = process(tmp_path, records, extract={"timeout_s": 0.3})
    reasons = {r["id"]: (r["stage"], r["reason"]) for r in rejected}
    assert reasons["empty"] == ("extract", "no_extracted_text")
    assert reasons["slow"] == ("extract", "extraction_timeout")
    assert [r["id"] for r in kept] == ["good"] and "good" not in reasons
    assert summary["read"] == 3 == summary["kept"] + sum(summary["rejected"].values())
    assert summary["worker"]["extract_child_restarts"] == 1
    # the worker survived the time-out: a fresh child extracted the page after it
    assert kept[0]["text"] and metrics_dict(kept[0]["metrics"])["extract.html_chars"] > 0
    assert summary["stages"]["extract"]["cpu_s"] > 0


def test_batch_size_changes_nothing_in_the_output(tmp_path, monkeypatch):
    """Records go through the stages a batch at a time; rows still come out in record order,
    with the same warnings, whatever the batch size."""
    import refine.pipeline

    records = (DATA / "warc" / "real-html-02-head35.warc.gz").read_bytes()
    records += warc_record("http://example.org/empty", b"<html><body></body></html>", "empty")
    records += (DATA / "warc" / "truncated-record.warc.gz").read_bytes()
    outputs = []
    for batch in (1, 4, 64):
        monkeypatch.setattr(refine.pipeline, "BATCH_RECORDS", batch)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        summary, kept, rejected = process(tmp_path, records, language={"languages": ["en"]})
        outputs.append((kept, rejected, summary["warnings"], summary["rejected"]))
    assert outputs[0] == outputs[1] == outputs[2]
    kept, rejected, warnings, reasons = outputs[0]
    assert len(kept) >= 3 and len(rejected) > 20 and warnings
    assert {"language.language_not_selected", "extract.no_extracted_text",
            "read.truncated_record"} <= set(reasons)
    for rows in (kept, rejected):
        offsets = [r["offset"] for r in rows]
        assert offsets == sorted(offsets)


def test_rejected_rows_keep_cut_text_and_metrics(tmp_path):
    url, html = gold_page()
    _, kept, rejected = process(tmp_path, warc_record(url, html, "good"),
                                quality={"min_words": 100000},
                                output={"rejected_text_chars": 50})
    assert kept == []
    row = rejected[0]
    assert (row["stage"], row["reason"]) == ("quality", "too_few_words")
    assert len(row["text"]) == 50 and row["text_chars"] > 50
    assert metrics_dict(row["metrics"])["gopher_quality.n_words"] > 50


def test_sandbox_reports_crash_and_error_and_recovers():
    sandbox = ExtractionSandbox({"timeout_s": 30}, timeout_s=30)
    try:
        sandbox.start()
        pid = sandbox.process.pid
        killer = threading.Timer(0.3, os.kill, args=(pid, 9))
        killer.start()
        started = time.monotonic()
        status, text, _, _ = sandbox.extract(slow_html(200000).decode())
        assert status == CRASHED and text == ""
        assert time.monotonic() - started < 20
        status, _, _, error = sandbox.extract(12345)  # not HTML at all: the extractor raises
        assert status == FAILED and error
        url, html = gold_page()
        status, text, cpu, _ = sandbox.extract(html.decode())
        assert status == OK and len(text) > 200 and cpu > 0
        assert sandbox.restarts == 1
    finally:
        sandbox.close()


def test_every_cpu_second_of_the_extraction_child_is_billed_to_extraction():
    import psutil

    sandbox = ExtractionSandbox({"timeout_s": 30}, timeout_s=30)
    try:
        _, html = gold_page()
        billed = [sandbox.extract(html.decode())[2] for _ in range(5)]
        times = psutil.Process(sandbox.process.pid).cpu_times()
        used = times.user + times.system  # clock ticks: 10 ms each
        assert billed[0] > billed[1]  # the first page carries the child's imports
        assert sandbox.child_cpu_s == pytest.approx(sum(billed))
        assert used - 0.03 <= sandbox.child_cpu_s <= used + 0.03
    finally:
        sandbox.close()


@pytest.mark.parametrize("bad,key", [
    ({"quality": {"min_words": -1}}, "quality.min_words"),
    ({"language": {"min_score": 2}}, "language.min_score"),
    ({"extract": {"deduplicate": True}}, "extract.deduplicate"),
    ({"repetiton": {}}, "repetiton"),
    ({"output": {"compression": "lz5"}}, "output.compression"),
])
def test_bad_config_names_the_key(bad, key):
    from refine.config import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(bad)
