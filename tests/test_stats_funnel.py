"""The funnel and the accounting verdict that `refine stats` and the report print."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from refine.accounting import check, record
from refine.cli import format_funnel, format_summary
from refine.report.collect import _funnel
from refine.stats import merge


def _stage(n_in: int, dropped: dict[str, int]) -> dict:
    return {"in": n_in, "out": n_in - sum(dropped.values()), "rejected": dropped, "cpu_s": 1.0,
            "bytes_in": 0, "bytes_out": 0}


def _part(unit: str, path: str, read: int, rejected: dict[str, int]) -> dict:
    dropped_url = {k.split(".", 1)[1]: v for k, v in rejected.items() if k.startswith("url.")}
    dropped_lang = {k.split(".", 1)[1]: v for k, v in rejected.items()
                    if k.startswith("language.")}
    after_url = read - sum(dropped_url.values())
    kept = read - sum(rejected.values())
    stages = {"read": _stage(read, {}), "url": _stage(read, dropped_url),
              "extract": _stage(after_url, {}), "language": _stage(after_url, dropped_lang)}
    for name in ("repetition", "quality", "lines", "write"):
        stages[name] = _stage(kept, {})
    return {"unit": unit, "input": path, "read": read, "kept": kept, "rejected": rejected,
            "stages": stages, "records_by_type": {"response": read}, "warnings": []}


@pytest.fixture()
def stats() -> dict:
    # 200 read; URL filter drops 50 (150 left, 75%); language drops 30 (120 left, 60%)
    stats = merge([_part("a-0", "a.warc.gz", 200, {"url.blocklisted_domain": 50,
                                                    "language.language_not_selected": 30})],
                  {"a.warc.gz": 1})
    return record(stats, check(stats, Counter({"a.warc.gz": 120}), Counter({"a.warc.gz": 80})))


def test_cli_funnel_shows_what_remains_after_each_stage(stats):
    rows = {line.split()[0]: line.split()[1:] for line in format_funnel(stats).splitlines()[1:]}
    assert rows["read"] == ["200", "100.0%"]
    assert rows["url"] == ["150", "75.0%"]
    assert rows["language"] == ["120", "60.0%"]
    assert rows["write"] == ["120", "60.0%"]


def test_summary_shares_and_verdict(stats):
    summary = format_summary(stats)
    assert "kept 120 (60.0%), rejected 80; accounting OK" in summary


def test_report_funnel_percentages(stats):
    rows = {r["stage"]: r for r in _funnel(stats, Counter({"language.language_not_selected": 300}),
                                           kept_words=1200)}
    assert (rows["url"]["docs"], rows["url"]["docs_pct"]) == (150, 75.0)
    assert (rows["language"]["docs"], rows["language"]["docs_pct"]) == (120, 60.0)
    assert rows["url"]["dropped"] == 50
    # words after extraction: 1,500 (1,200 kept + 300 the language filter dropped) = 100%
    assert rows["extract"]["words"] == 1500 and rows["extract"]["words_pct"] == 100.0
    assert rows["language"]["words"] == 1200 and rows["language"]["words_pct"] == 80.0


def _verdict(stats: dict, kept: int, rejected: int) -> dict:
    return check(stats, Counter({"a.warc.gz": kept}), Counter({"a.warc.gz": rejected}))


def test_an_input_with_an_unprocessed_unit_is_not_accounted_ok():
    part = _part("a-0", "a.warc.gz", 100, {"url.blocklisted_domain": 10})
    whole = merge([part], {"a.warc.gz": 1})
    assert whole["inputs"]["a.warc.gz"]["complete"] and _verdict(whole, 90, 10)["ok"]
    half = merge([part], {"a.warc.gz": 2})  # the second unit never ran
    assert not half["inputs"]["a.warc.gz"]["complete"]
    verdict = _verdict(half, 90, 10)
    assert not verdict["ok"] and "incomplete (1 of 2 units done)" in verdict["problems"][0]
    record(half, verdict)
    assert not half["inputs"]["a.warc.gz"]["accounting_ok"]
    assert re.search(r"accounting FAILED", format_summary(half))
    assert "incomplete" in format_summary(half)


def test_records_that_do_not_add_up_fail_the_check():
    part = _part("a-0", "a.warc.gz", 100, {"url.blocklisted_domain": 10})
    part["kept"] -= 1  # one record lost
    assert not _verdict(merge([part], {"a.warc.gz": 1}), 89, 10)["ok"]


@pytest.mark.parametrize(("kept", "rejected"), [(89, 10), (90, 9), (90, 11)])
def test_rows_on_disk_that_disagree_fail_the_check(kept: int, rejected: int):
    stats = merge([_part("a-0", "a.warc.gz", 100, {"url.blocklisted_domain": 10})],
                  {"a.warc.gz": 1})
    verdict = _verdict(stats, kept, rejected)
    assert not verdict["ok"] and "rows in" in verdict["problems"][0]
