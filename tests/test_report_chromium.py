"""`refine report`'s page for the demo run in a real headless Chromium: self-contained, and every
what-if slider's count checked against an independent reading of the run's rows.

The `browser` fixture is in conftest (skips without chromium and chromium-driver: `make
browser` installs them).
"""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from refine.document import Threshold
from refine.filters.quality import THRESHOLDS as QUALITY_CHECKS
from refine.report import build_report
from refine.shards import metrics_dict

from .chromium import ARTIFACTS, _assert_self_contained, _open, _set_whatif

# -- the page in Chromium -----------------------------------------------------------------------


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
