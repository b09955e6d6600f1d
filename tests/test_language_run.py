"""Per-language thresholds in a run: the worker builds one filter chain per language (statistics
per stage), and the report's what-if holds each document at its language's thresholds.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from refine.config import parse_config
from refine.languages import language_config
from refine.pipeline import UnitProcessor
from refine.readers import plan_units
from refine.report import whatif
from refine.shards import metrics_dict

from .conftest import DATA
from .language_pages import BASE, DEDUP_OFF, GERMAN, GERMAN_STOP_WORDS, english, with_de

# --- the worker: one chain per language, statistics per stage ------------------------------

def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _process(tmp_path: Path, settings: dict, rows: list[dict]) -> tuple[dict, dict, dict]:
    tmp_path.mkdir(parents=True)
    path = _jsonl(tmp_path / "in.jsonl", rows)
    processor = UnitProcessor(parse_config({**settings, "dedup": DEDUP_OFF}),
                              tmp_path / "run")
    try:
        summary = processor.process(plan_units([(str(path), path.stat().st_size)], 1 << 30)[0])
    finally:
        processor.close()
    out = {}
    for sub in ("data", "rejected"):
        files = sorted((tmp_path / "run" / sub).glob("*.parquet"))
        out[sub] = {r["id"]: r for f in files for r in pq.read_table(f).to_pylist()}
    return summary, out["data"], out["rejected"]


def test_worker_judges_each_document_by_its_language(tmp_path):
    rows = [{"id": "de", "text": GERMAN}, {"id": "en", "text": english()}]
    summary, kept, rejected = _process(tmp_path / "plain", BASE, rows)
    assert set(kept) == {"en"} and rejected["de"]["reason"] == "stop_words"
    settings = with_de({"quality": {"stop_words": GERMAN_STOP_WORDS, "min_stop_words": 3}})
    summary, kept, rejected = _process(tmp_path / "german", settings, rows)
    assert set(kept) == {"de", "en"} and not rejected
    assert kept["de"]["language"] == "de"
    assert metrics_dict(kept["de"]["metrics"])["gopher_quality.stop_words"] == 6
    # one funnel: the same stages for both languages, counted together
    assert summary["stages"]["quality"]["in"] == summary["stages"]["quality"]["out"] == 2
    assert summary["stages"]["lines"]["out"] == 2 and summary["kept"] == 2


# --- the report's what-if: each document at its language's thresholds ----------------------

def _sample_rows(language_filter) -> list[dict]:
    """The Common Crawl text sample's English and German documents (real pages)."""
    rows = []
    with gzip.open(DATA / "text" / "cc-main-2019-30-text-sample.jsonl.gz", "rt") as stream:
        for line in stream:
            row = json.loads(line)
            language, _ = language_filter.identify(row["text"])
            if language == "de" or (language == "en" and len(rows) < 140):
                rows.append({"id": row["id"], "text": row["text"]})
    return rows


WHATIF_SETTINGS = {
    "language": {"languages": ["en", "de"]},
    "dedup": DEDUP_OFF,
    "languages": {"de": {"quality": {"stop_words": GERMAN_STOP_WORDS, "min_words": 150},
                         "repetition": {"dup_5gram_char_frac": 0.15}}},
}


@pytest.fixture(scope="module")
def language_run(local_ray, language_filter, tmp_path_factory) -> Path:
    from refine.run import run

    base = tmp_path_factory.mktemp("language-run")
    rows = _sample_rows(language_filter)
    inputs = [str(_jsonl(base / f"part-{i}.jsonl", rows[i::2])) for i in range(2)]
    return run(parse_config(WHATIF_SETTINGS), inputs, base / "run", workers=2).run_dir


@pytest.mark.slow
def test_whatif_at_the_run_settings_is_the_run_kept_count(language_run, tmp_path):
    from refine.report import build_report, collect

    stats = json.loads((language_run / "stats.json").read_text())
    kept = stats["documents"]["kept"]
    assert stats["accounting_ok"] and kept > 0
    data = collect(language_run, samples=2)
    assert data["languages"]["kept"].get("de", 0) >= 3
    for w in data["whatif"]:
        assert w["kept_now"] == kept, (w["stage"], w["config_key"], w["language"])
        assert w["inconsistent"] == 0 and w["missing"] == 0
    cards = {(w["stage"], w["config_key"], w["language"]): w for w in data["whatif"]}
    # German's own threshold has its own control; the top-level one holds German at 150
    assert cards[("quality", "min_words", "de")]["threshold"] == 150
    assert cards[("quality", "min_words", None)]["threshold"] == 50
    assert cards[("repetition", "dup_5gram_char_frac", "de")]["threshold"] == 0.15
    assert ("quality", "min_stop_words", "de") not in cards  # not overridden: one control
    german = cards[("quality", "min_words", "de")]
    assert german["fixed_docs"] == data["languages"]["kept"].get("en", 0)
    # moving German's min_words down to t (the edge nearest 50, the top-level value) adds
    # exactly the German pages dropped for t..149 words that pass the stage's other checks at
    # German's thresholds
    rows = [r for f in sorted((language_run / "rejected").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    short = [r for r in rows if r["stage"] == "quality" and r["reason"] == "too_few_words"
             and r["language"] == "de"]
    assert short, "no German page between the two thresholds: the test would prove nothing"
    config = parse_config(WHATIF_SETTINGS)
    others = [c for c in whatif.STAGE_THRESHOLDS["quality"] if c.config_key != "min_words"]
    rules = language_config(config, "de").quality
    edge = int(np.argmin(np.abs(np.array(german["edges"]) - 50)))
    lowered = german["edges"][edge]
    assert lowered < 150
    gained = sum(
        1 for r in short
        if metrics_dict(r["metrics"])["gopher_quality.n_words"] >= lowered
        and all(whatif.passes(c, np.array([metrics_dict(r["metrics"])[c.metric]]),
                              getattr(rules, c.config_key))[0] for c in others))
    assert gained >= 1
    assert whatif.kept_at(whatif.STAGE_THRESHOLDS["quality"][0], np.array(german["docs"]),
                          edge) + german["fixed_docs"] == kept + gained
    page = build_report(language_run, tmp_path / "report.html").read_text()
    assert 'id="accounting" class="banner ok"' in page
    assert 'id="whatif-quality-min_words-de"' in page and 'id="whatif-quality-min_words"' in page


def test_whatif_without_languages_is_as_before():
    """No `languages`: one control per check, nothing held fixed (the pre-existing numbers)."""
    check = whatif.STAGE_THRESHOLDS["quality"][0]
    config = {"quality": {"enabled": True, **{c.config_key: 0.0 for c in
                                               whatif.STAGE_THRESHOLDS["quality"]}}}
    config["quality"].update(min_words=50, max_words=100_000, max_mean_word_len=10.0,
                             max_hash_word_ratio=0.1, max_ellipsis_word_ratio=0.1,
                             max_bullet_line_frac=0.9, max_ellipsis_line_frac=0.3)
    keys = whatif.metric_keys(config)["quality"]
    kept_metrics = {k: np.full(3, 0.05) for k in keys}  # passes every other check
    kept_metrics[check.metric] = np.array([60.0, 70.0, 80.0])
    rows = whatif.StageRows()
    rows.add(np.array(["too_few_words"], dtype=object), np.array([40]),
             {k: np.array([40.0 if k == check.metric else 0.05]) for k in keys})
    out = whatif.build(config, kept_metrics, np.array([60, 70, 80]), {"quality": rows})
    first = next(w for w in out if w["config_key"] == "min_words")
    assert first["language"] is None and first["fixed_docs"] == 0 and first["kept_now"] == 3
    assert first["eligible"] == 4
    assert whatif.kept_at(check, np.array(first["docs"]), first["edges"].index(40)) == 4
