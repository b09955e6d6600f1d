"""The three per-document filters on real text.

- tests/data/text/cc-main-2019-30-text-sample.jsonl.gz: 697 noisy, multilingual Common Crawl
  documents (JSON lines with a ``text`` field), as extracted, boilerplate and all.
- tests/data/text/lee-news-background.txt: 300 clean English news articles, one per line.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from refine.document import Document
from refine.filters.lines import RULES, LineCorrectionFilter
from refine.filters.quality import QualityFilter
from refine.filters.repetition import (
    CHECKS,
    RepetitionFilter,
    _ngram_chars_np,
    _ngram_chars_py,
)

DATA = Path(__file__).parent / "data" / "text"

REASONS = {
    "gopher_repetition": set(CHECKS),
    "gopher_quality": {
        "too_few_words",
        "too_many_words",
        "mean_word_len",
        "hash_word_ratio",
        "ellipsis_word_ratio",
        "bullet_line_frac",
        "ellipsis_line_frac",
        "alpha_word_frac",
        "stop_words",
    },
    "line_corrections": {"too_many_words_removed"},
}
COUNT_METRICS = {
    "gopher_quality.n_words",
    "gopher_quality.stop_words",
    "line_corrections.removed_words",
    "line_corrections.lines_removed",
    "line_corrections.lines_edited",
    *(f"line_corrections.{r}_lines" for r in RULES),
}
UNBOUNDED_METRICS = {"gopher_quality.mean_word_len", "gopher_quality.hash_word_ratio",
                     "gopher_quality.ellipsis_word_ratio"}


@pytest.fixture(scope="module")
def cc_texts() -> list[str]:
    with gzip.open(DATA / "cc-main-2019-30-text-sample.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def news_texts() -> list[str]:
    lines = (DATA / "lee-news-background.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


def run_all(texts: list[str]) -> tuple[list[Document], dict[str, list[str | None]]]:
    """Each filter on its own copy of every document (so they do not see each other's edits)."""
    filters = [RepetitionFilter(), QualityFilter(), LineCorrectionFilter()]
    docs = [Document(id=str(i), url="", text=t) for i, t in enumerate(texts)]
    reasons: dict[str, list[str | None]] = {}
    for f in filters:
        copies = [Document(id=d.id, url="", text=d.text) for d in docs]
        reasons[f.name] = [f.apply(c) for c in copies]
        for d, c in zip(docs, copies, strict=True):
            d.metrics.update(c.metrics)
    return docs, reasons


@pytest.fixture(scope="module")
def cc(cc_texts: list[str]) -> tuple[list[Document], dict[str, list[str | None]]]:
    return run_all(cc_texts)


@pytest.fixture(scope="module")
def news(news_texts: list[str]) -> tuple[list[Document], dict[str, list[str | None]]]:
    return run_all(news_texts)


def kept_frac(reasons: list[str | None]) -> float:
    return sum(r is None for r in reasons) / len(reasons)


def test_data_sizes(cc_texts: list[str], news_texts: list[str]) -> None:
    assert len(cc_texts) == 697
    assert len(news_texts) == 300


def test_clean_news_is_kept(news) -> None:
    docs, reasons = news
    assert kept_frac(reasons["gopher_repetition"]) >= 0.98
    assert kept_frac(reasons["line_corrections"]) >= 0.98
    # Some articles are short: the only quality rule that may drop them is the word count.
    assert kept_frac(reasons["gopher_quality"]) >= 0.95
    assert set(reasons["gopher_quality"]) <= {None, "too_few_words"}
    for d, reason in zip(docs, reasons["gopher_quality"], strict=True):
        m = d.metrics
        assert 3 <= m["gopher_quality.mean_word_len"] <= 10
        if reason is None:  # a short article may hold one stop word only: too_few_words first
            assert m["gopher_quality.stop_words"] >= 2
        assert m["gopher_quality.alpha_word_frac"] >= 0.8
        assert m["gopher_repetition.dup_10gram_char_frac"] <= 0.10


def test_line_corrections_barely_touch_clean_news(news) -> None:
    docs, _ = news
    fracs = [d.metrics["line_corrections.removed_word_frac"] for d in docs]
    assert sum(fracs) / len(fracs) < 0.01
    assert sum(f == 0.0 for f in fracs) / len(fracs) >= 0.95


def test_noisy_crawl_is_filtered_much_more_than_news(cc, news) -> None:
    _, cc_reasons = cc
    _, news_reasons = news

    def removed_by_any(reasons: dict[str, list[str | None]]) -> float:
        per_doc = zip(*reasons.values(), strict=True)
        rows = [any(r is not None for r in row) for row in per_doc]
        return sum(rows) / len(rows)

    cc_removed = removed_by_any(cc_reasons)
    assert cc_removed >= 0.5
    assert cc_removed - removed_by_any(news_reasons) >= 0.4
    # Each filter does real work on the crawl.
    for name in REASONS:
        assert 1 - kept_frac(cc_reasons[name]) >= 0.10, name


def test_crawl_rejections_spread_over_many_rules(cc) -> None:
    _, reasons = cc
    repetition = Counter(r for r in reasons["gopher_repetition"] if r)
    quality = Counter(r for r in reasons["gopher_quality"] if r)
    assert len(repetition) >= 5
    assert len(quality) >= 4
    # The crawl is multilingual: the English stop-word rule rejects many documents.
    assert quality["stop_words"] >= 50


def test_every_reason_is_documented(cc, news) -> None:
    for docs_reasons in (cc, news):
        _, reasons = docs_reasons
        for name, got in reasons.items():
            assert {r for r in got if r is not None} <= REASONS[name], name


def test_metrics_are_recorded_and_in_range(cc, news) -> None:
    expected_keys = (
        {f"gopher_repetition.{c}" for c in CHECKS}
        | {f"gopher_quality.{k}" for k in ("alpha_word_frac", "bullet_line_frac")}
        | {"gopher_quality.ellipsis_line_frac", "line_corrections.removed_word_frac"}
        | COUNT_METRICS
        | UNBOUNDED_METRICS
    )
    for docs, _ in (cc, news):
        for d in docs:
            assert set(d.metrics) == expected_keys
            for key, value in d.metrics.items():
                assert value >= 0, key
                if key in COUNT_METRICS:
                    assert value == int(value), key
                elif key not in UNBOUNDED_METRICS:
                    assert value <= 1, key
            assert d.metrics["gopher_quality.n_words"] == len(d.text.split())


def test_line_corrections_on_the_crawl(cc_texts: list[str]) -> None:
    f = LineCorrectionFilter()
    junk = {"skip to main content", "skip to content", "read more", "log in", "sign in"}

    def junk_lines(text: str) -> int:
        return sum(line.strip(" \t»›.").lower() in junk for line in text.split("\n"))

    raw_junk = 0
    for text in cc_texts:
        new, removed, counts = f.correct_lines(text)
        raw_junk += junk_lines(text)
        assert junk_lines(new) == 0
        # The words of removed lines disappear (edited lines count whole but keep some words),
        # and correcting again changes nothing.
        gone = len(text.split()) - len(new.split())
        assert gone == removed if not counts["edited"] else gone < removed
        assert f.correct_lines(new)[1:] == (0, dict.fromkeys((*RULES, "edited"), 0))
        if removed == 0 and counts["edited"] == 0:
            assert new is text
    assert raw_junk >= 10


def test_ngram_paths_agree_on_the_crawl(cc_texts: list[str]) -> None:
    for text in cc_texts:
        words = text.split()
        assert _ngram_chars_np(words) == _ngram_chars_py(words)
