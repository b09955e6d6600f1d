"""`refine report`: the numbers it computes, and the page in a real headless Chromium."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refine.cli import main
from refine.config import parse_config
from refine.document import Threshold
from refine.filters.lines import LineCorrectionFilter
from refine.filters.quality import THRESHOLDS as QUALITY_CHECKS
from refine.report import build_report, collect
from refine.report.columns import metric_arrays, word_counts
from refine.report.examples import Reservoir
from refine.report.render import render, script_json
from refine.report.whatif import bin_edges, histogram, kept_at
from refine.run import run
from refine.shards import METRICS, metrics_dict

from .conftest import DATA, ROOT, cc_documents

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
PAYLOADS = ("<script>window.pwned = 1; alert(1)</script>",
            '<img src="x" onerror="window.pwned = 2; alert(2)">',
            "</script><script>window.pwned = 3</script>")


# -- numbers, without a browser ----------------------------------------------------------------

def test_script_json_cannot_end_its_script_block():
    payload = {"text": "</script><script>alert(1)</script> <!-- \u2028 & >"}
    text = script_json(payload)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == payload


KEEP = {"min": np.greater_equal, "max": np.less_equal, "above": np.greater, "below": np.less}


@pytest.mark.parametrize("direction", ["min", "max", "above", "below"])
@pytest.mark.parametrize("integer", [False, True])
def test_whatif_bins_are_exact_at_every_edge(direction, integer):
    rng = np.random.default_rng(7)
    values = rng.gamma(2.0, 30.0, 5000)
    if integer:
        values = np.floor(values)
    words = rng.integers(1, 500, len(values))
    check = Threshold("m", "t", direction, "r", integer)
    threshold = 40.0
    edges = bin_edges(values, threshold, integer)
    assert threshold in edges
    docs, word_bins = histogram(check, values, words, edges)
    assert docs.sum() == len(values) and word_bins.sum() == words.sum()
    for k, t in enumerate(edges):
        keep = KEEP[direction](values, t)
        assert kept_at(check, docs, k) == keep.sum(), (k, t)
        upper = direction in ("max", "below")
        word_sum = word_bins[: k + 1].sum() if upper else word_bins[k + 1 :].sum()
        assert word_sum == words[keep].sum()


def test_metric_arrays_and_word_counts_match_python():
    rows = [{"a": 1.5, "b": 2.0}, {}, None, {"b": -3.0}, {"a": 0.25}]
    column = pa.array([list(r.items()) if r is not None else None for r in rows], type=METRICS)
    for sliced, offset in ((column, 0), (column.slice(2), 2)):
        arrays = metric_arrays(sliced, ["a", "b", "c"])
        for key in ("a", "b", "c"):
            expected = [(r or {}).get(key, np.nan) for r in rows[offset:]]
            np.testing.assert_array_equal(arrays[key], np.array(expected, dtype=float))
    texts = ["a  b\n c", " x ", "", "é\u00a0f\x1cg\u2003h\u200bi", None, "\tone\x0btwo\x85three"]
    assert word_counts(pa.array(texts)).tolist() == [len((t or "").split()) for t in texts]


def test_reservoir_is_seeded_and_bounded():
    batch = pa.RecordBatch.from_pydict({"i": list(range(1000))})
    codes = np.array([i % 3 for i in range(1000)])

    def sample(seed: int) -> list[int]:
        reservoir = Reservoir(4, seed)
        for start in range(0, 1000, 250):
            reservoir.offer(batch.slice(start, 250), codes[start : start + 250], ["a", "b", "c"])
        return [r["i"] for name in "abc" for r in reservoir.rows(name)]

    first = sample(1)
    assert first == sample(1) and first != sample(2)
    assert len(first) == 12 and len(set(first)) == 12
    assert all(i % 3 == k for k, name in enumerate("abc") for i in first[4 * k : 4 * k + 4])


def test_line_flags_are_the_lines_correct_lines_removes():
    line_filter = LineCorrectionFilter()
    text = ("A normal sentence with several words.\nSIGN IN NOW\n3 likes\nRead more\n"
            "Good text here | read more\nword\n\nAnother fine line of text stays here.")
    flags = line_filter.line_flags(text)
    removed = {text[s:e] for s, e, rule in flags if rule != "edited"}
    corrected, _, counts = line_filter.correct_lines(text)
    kept_lines = set(corrected.split("\n"))
    assert removed == {"SIGN IN NOW", "3 likes", "Read more", "word"}
    assert not removed & kept_lines
    assert sum(rule != "edited" for _, _, rule in flags) == sum(
        v for k, v in counts.items() if k != "edited")


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


# -- the page in Chromium -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium and chromium-driver are not installed (`make browser` does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2400"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _open(driver, page: Path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get_log("performance")
    driver.get(page.as_uri())


def _assert_self_contained(driver, page: Path) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    requested = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])
    assert set(requested) <= {page.as_uri()}, requested
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    linked = driver.execute_script(
        "return Array.from(document.querySelectorAll('[src],[href]'))"
        ".map(e => e.getAttribute('src') || e.getAttribute('href'))")
    assert not [u for u in linked if u.lower().startswith(("http:", "https:", "//"))], linked


def _set_whatif(driver, card_id: str, index: int) -> tuple[float, int, int]:
    card = f"document.getElementById('{card_id}')"
    driver.execute_script(
        f"const r = {card}.querySelector('input[type=range]'); r.value = arguments[0];"
        "r.dispatchEvent(new Event('input'));", index)
    threshold = float(driver.execute_script(f"return {card}.getAttribute('data-threshold')"))
    docs = driver.execute_script(f"return {card}.querySelector('.kept-docs').textContent")
    words = driver.execute_script(f"return {card}.querySelector('.kept-words').textContent")
    return threshold, int(docs.replace(",", "")), int(words.replace(",", ""))


def _edge_index(data: dict, stage: str, key: str, near: float) -> int:
    w = next(w for w in data["whatif"] if w["stage"] == stage and w["config_key"] == key)
    return int(np.argmin(np.abs(np.array(w["edges"]) - near)))


def _rows(run_dir: Path, sub: str) -> list[dict]:
    out = []
    for path in sorted((run_dir / sub).glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            row["metrics"] = metrics_dict(row["metrics"])
            out.append(row)
    return out


def _passes(check: Threshold, value: float | None, threshold: float) -> bool:
    if value is None:
        return False
    return value >= threshold if check.direction == "min" else value <= threshold


def _settings(run_dir: Path, stage: str, language: str | None) -> tuple[dict, set[str]]:
    """The `stage` settings a document of `language` was judged by (the run's, with the
    language's section of `languages` over them) and the keys that section sets."""
    config = json.loads((run_dir / "manifest.json").read_text())["config"]
    own = config.get("languages", {}).get(language or "", {}).get(stage, {})
    return {**config[stage], **own}, set(own)


def _expected_quality_kept(run_dir: Path, key: str, threshold: float) -> tuple[int, int]:
    """Independently of refine.report: documents (and words) the quality check `key` keeps at
    `threshold`, by the page's documented rule, from the Parquet files (a document whose
    language sets `key` itself is held at its language's value)."""
    check = next(c for c in QUALITY_CHECKS if c.config_key == key)
    docs = words = 0
    for row in _rows(run_dir, "data"):
        config, own = _settings(run_dir, "quality", row["language"])
        limit = config[key] if key in own else threshold
        if _passes(check, row["metrics"].get(check.metric), limit):
            docs += 1
            words += row["token_count"]
    for row in _rows(run_dir, "rejected"):
        if row["stage"] != "quality":
            continue
        config, own = _settings(run_dir, "quality", row["language"])
        limit = config[key] if key in own else threshold
        others = all(_passes(c, row["metrics"].get(c.metric), config[c.config_key])
                     for c in QUALITY_CHECKS if c is not check)
        if others and _passes(check, row["metrics"].get(check.metric), limit):
            docs += 1
            words += int(row["metrics"]["gopher_quality.n_words"])
    return docs, words


def _expected_repetition_kept(run_dir: Path, key: str, threshold: float) -> int:
    config = json.loads((run_dir / "manifest.json").read_text())["config"]["repetition"]
    prefix = "gopher_repetition."
    docs = sum(row["metrics"][prefix + key] <= threshold for row in _rows(run_dir, "data"))
    for row in _rows(run_dir, "rejected"):
        if row["stage"] == "repetition":
            m = row["metrics"]
            others = all(m[prefix + k] <= v for k, v in config.items()
                         if k not in ("enabled", key))
            docs += others and m[prefix + key] <= threshold
    return docs


@pytest.mark.slow
def test_demo_report_in_chromium(browser, refine_run, tmp_path):
    page = build_report(refine_run, tmp_path / "report.html")
    html = page.read_text()
    assert len(html.encode()) < 10_000_000
    _open(browser, page)
    _assert_self_contained(browser, page)

    stats = json.loads((refine_run / "stats.json").read_text())
    remaining = stats["documents"]["read"]
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('#funnel tr[data-stage]')).map(r => "
        "[r.dataset.stage, r.querySelector('.docs').dataset.value, "
        "r.querySelector('.docs').textContent])")
    expected = []
    for name in ("read", "url", "extract", "language", "repetition", "quality", "lines",
                 "fuzzy_dedup", "url_dedup", "exact_dedup", "write"):
        remaining -= sum(stats["stages"][name]["rejected"].values())
        expected.append([name, str(remaining), f"{remaining:,}"])
    assert shown == expected
    assert expected[-1][1] == str(stats["documents"]["kept"])
    assert browser.execute_script("return document.getElementById('accounting').dataset.ok") \
        == "true"

    data = json.loads(browser.execute_script(
        "return document.getElementById('report-data').textContent"))
    card = "whatif-quality-min_alpha_word_frac"
    before = _set_whatif(browser, card, _edge_index(data, "quality", "min_alpha_word_frac",
                                                    0.8))
    assert before[0] == 0.8 and before[1] == stats["documents"]["kept"]
    threshold, docs, words = _set_whatif(
        browser, card, _edge_index(data, "quality", "min_alpha_word_frac", 0.7))
    assert threshold < 0.8
    assert (docs, words) == _expected_quality_kept(refine_run, "min_alpha_word_frac", threshold)
    assert docs > stats["documents"]["kept"]  # the demo run drops documents for alpha_word_frac

    card = "whatif-repetition-dup_5gram_char_frac"
    threshold, docs, _ = _set_whatif(
        browser, card, _edge_index(data, "repetition", "dup_5gram_char_frac", 1.0))
    assert docs == _expected_repetition_kept(refine_run, "dup_5gram_char_frac", threshold)
    threshold, docs, _ = _set_whatif(
        browser, card, _edge_index(data, "repetition", "dup_5gram_char_frac", 0.05))
    assert docs == _expected_repetition_kept(refine_run, "dup_5gram_char_frac", threshold)
    assert docs < stats["documents"]["kept"]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-demo.png"
    browser.execute_script("document.getElementById('whatif').scrollIntoView()")
    assert browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")


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
