"""`refine report` on a crafted run (markup in documents, duplicates, two inputs): what `collect`
counts, resumed runs, the accounting alarm, the CLI, and markup shown as text in Chromium.
"""

import json
import shutil
from pathlib import Path

import pytest

from refine.cli import main
from refine.config import parse_config
from refine.report import build_report, collect
from refine.report.render import render
from refine.run import run

from .chromium import ARTIFACTS, _assert_self_contained, _open
from .conftest import DATA, cc_documents

PAYLOADS = ("<script>window.pwned = 1; alert(1)</script>",
            '<img src="x" onerror="window.pwned = 2; alert(2)">',
            "</script><script>window.pwned = 3</script>")


# -- a crafted run: markup in documents, duplicates, two inputs -------------------------------

def _corpus_docs(count: int) -> list[dict]:
    return cc_documents(count, min_words=120)


def _crafted_config():
    return parse_config({
        "name": "report-test",
        "url": {"enabled": False}, "language": {"enabled": False},
        "quality": {"min_words": 20, "min_stop_words": 0},
        "output": {"shard_bytes": 200_000},
    })


@pytest.fixture(scope="module")
def crafted_inputs(tmp_path_factory) -> list[str]:
    docs = _corpus_docs(24)
    body = docs[0]["text"]
    markup = ("Here is how a page embeds a script, shown as an example of markup in text.\n"
              + "\n".join(f"Example {i}: {p} and more words follow here" for i, p in
                          enumerate(PAYLOADS)) + "\n"
              + " ".join((DATA / "text" / "lee-news-background.txt").read_text().split()[:300]))
    long_xss = {"id": "xss-long", "url": "https://example.com/x?a=<b>&c=\"d\"", "text": markup}
    short_xss = {"id": "xss-short", "url": "javascript:alert(5)",
                 "text": "Too short: " + " ".join(PAYLOADS)}
    copies = [{"id": f"copy-{k}", "url": f"https://copies.example.org/{k}", "text": body}
              for k in range(2)]  # with docs[0]: a fuzzy cluster of 3 (docs[0] is in part-0)
    parts = ([long_xss, *docs[::2]], [short_xss, *docs[1::2], *copies])
    directory = tmp_path_factory.mktemp("report-corpus")
    paths = []
    for k, part in enumerate(parts):
        path = directory / f"part-{k}.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in part))
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def crafted_run(local_ray, crafted_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report-run") / "run"
    run(_crafted_config(), crafted_inputs, out, workers=2)
    return out


@pytest.mark.slow
def test_collect_counts_the_crafted_run(crafted_run, crafted_inputs):
    data = collect(crafted_run, samples=100)
    stats = json.loads((crafted_run / "stats.json").read_text())
    assert data["funnel"][-1]["docs"] == stats["documents"]["kept"]
    assert all(row["ok"] and row["complete"] for row in data["files"])
    assert data["dedup"]["cluster_sizes"].get(3, 0) >= 1  # docs[0] and its two copies
    assert "quality.too_few_words" in data["examples"]
    shown = [ex["text"] for exs in data["examples"].values() for ex in exs]
    shown += [ex["text"] for ex in data["kept_examples"]]
    assert any(PAYLOADS[2] in text for text in shown)


@pytest.mark.slow
def test_resumed_run_reports_every_input(crafted_run, crafted_inputs, tmp_path):
    """Acceptance 4: a launch that finishes only the second input still reports the first."""
    partial = tmp_path / "run"
    shutil.copytree(crafted_run, partial)
    units = partial / "stats" / "units"
    second = [p for p in units.glob("*.json")
              if json.loads(p.read_text())["input"] == crafted_inputs[1]]
    assert len(second) == 1
    second[0].unlink()  # as if killed before the second input finished
    (partial / "stats.json").unlink()
    (partial / "stats" / "dedup.json").unlink()
    before = collect(partial)
    rows = {r["input"]: r for r in before["files"]}
    assert rows[crafted_inputs[0]]["complete"] and not rows[crafted_inputs[1]]["complete"]
    assert any("stats.json is missing" in note for note in before["notes"])
    assert 'id="accounting" class="banner alarm"' in render(before)

    result = run(_crafted_config(), crafted_inputs, partial, workers=1, resume=True)
    assert result.units_skipped == 1 and result.units_total == 2  # one input in this launch
    full = json.loads((crafted_run / "stats.json").read_text())
    after = collect(partial)
    assert after["stats"]["documents"] == full["documents"]
    assert {r["input"] for r in after["files"]} == set(crafted_inputs)
    for row in after["files"]:
        assert row["ok"] and row["complete"]
        assert row["read"] == full["inputs"][row["input"]]["read"]
    page = build_report(partial, tmp_path / "report.html").read_text()
    assert 'id="accounting" class="banner ok"' in page


@pytest.mark.slow
def test_missing_rows_raise_the_accounting_alarm(crafted_run, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(crafted_run, broken)
    next(iter(sorted((broken / "rejected").glob("*.parquet")))).unlink()
    data = collect(broken)
    assert not all(row["ok"] for row in data["files"])
    page = render(data)
    assert 'id="accounting" class="banner alarm"' in page and "rows in rejected/" in page


@pytest.mark.slow
def test_cli_report_and_stats(crafted_run, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", str(crafted_run), "--output", str(out), "--samples", "2"]) == 0
    assert out.stat().st_size > 10_000
    assert main(["stats", str(crafted_run)]) == 0
    printed = capsys.readouterr().out
    assert "% of read" in printed and "fuzzy_dedup" in printed
    assert main(["report", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_markup_in_documents_is_shown_as_text(browser, crafted_run, tmp_path):
    page = build_report(crafted_run, tmp_path / "report.html", samples=100)
    html = page.read_text()
    assert html.count("<script") == 2  # the data block and the page's own script
    _open(browser, page)
    _assert_self_contained(browser, page)
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.execute_script(
        "return document.querySelectorAll('pre.doc img, pre.doc script, main img').length") == 0
    texts = browser.execute_script(
        "return Array.from(document.querySelectorAll('pre.doc')).map(p => p.textContent)")
    for payload in PAYLOADS:
        assert any(payload in text for text in texts), payload
    heads = " ".join(browser.execute_script(
        "return Array.from(document.querySelectorAll('.exhead')).map(p => p.textContent)"))
    assert "javascript:alert(5)" in heads and 'https://example.com/x?a=<b>&c="d"' in heads
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "report-markup.png"))


def test_report_of_a_directory_that_is_not_a_run_fails(tmp_path):
    with pytest.raises(Exception, match="not a run directory"):
        build_report(tmp_path)
