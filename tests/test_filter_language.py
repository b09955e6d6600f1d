"""Language ID with the real fastText lid.176 model: the score threshold on both sides."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from refine.document import Document
from refine.filters.language import LanguageConfig, LanguageFilter

NEWS = Path(__file__).parent / "data" / "text" / "lee-news-background.txt"
GERMAN = ("Die Stadt hat am Dienstag beschlossen, die neue Schule im Norden zu bauen und die "
          "Straßen zu erneuern")


@pytest.fixture(scope="module")
def language_filter() -> LanguageFilter:
    return LanguageFilter(LanguageConfig())


@pytest.fixture(scope="module")
def english_scores(language_filter) -> list[tuple[float, str]]:
    """Real English news sentences with German words appended: English, at scores that spread
    across the default threshold."""
    out = []
    for line in NEWS.read_text().splitlines()[:50]:
        words = line.split()[:30]
        for k in range(15):
            text = " ".join(words[: 30 - k] + GERMAN.split()[:k])
            language, score = language_filter.identify(text)
            if language == "en":
                out.append((score, text))
    return sorted(out)


def apply(language_filter: LanguageFilter, text: str, **config) -> tuple[str | None, Document]:
    language_filter.config = LanguageConfig(**config)
    language_filter.languages = frozenset(language_filter.config.languages)
    doc = Document(id="d", url="u", text=text)
    return language_filter.apply(doc), doc


@pytest.mark.parametrize(("lo", "hi", "reason"), [
    (0.60, 0.65, "low_language_score"),   # just under 0.65: a check against 0.6 would keep it
    (0.65, 0.70, None),
])
def test_default_threshold_on_both_sides(language_filter, english_scores, lo, hi, reason):
    inside = [(s, t) for s, t in english_scores if lo <= s < hi]
    assert inside, f"no real text scored in [{lo}, {hi})"
    for score, text in inside:
        got, doc = apply(language_filter, text)
        assert doc.language == "en" and doc.metrics["language.score"] == score
        assert got == reason, (score, text)


def test_a_score_exactly_at_the_threshold_is_kept(language_filter, english_scores):
    score, text = english_scores[len(english_scores) // 2]
    assert apply(language_filter, text, min_score=score)[0] is None
    above = math.nextafter(score, 1.0)
    assert apply(language_filter, text, min_score=above)[0] == "low_language_score"


def test_language_set_is_checked_before_the_score(language_filter, english_scores):
    score, text = english_scores[0]  # English at a low score
    assert apply(language_filter, text, languages=["de"])[0] == "language_not_selected"
    assert apply(language_filter, text, languages=[], min_score=0.0)[0] is None
    got, doc = apply(language_filter, "Der Rat der Stadt hat am Dienstag die neue Schule "
                     "im Norden beschlossen.", languages=["en", "de"])
    assert got is None and doc.language == "de" and doc.language_score >= 0.65
