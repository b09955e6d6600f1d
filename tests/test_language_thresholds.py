"""Per-language thresholds (`languages:` in the config, refine.languages): a document is judged by
the filters of the language fastText lid.176 (the real model) gives it; without an override, by
the run's own settings. Each overridden threshold is tested on both sides.

The `language_model` fixture is in conftest; the German and English pages in
tests/language_pages.py.
"""

from __future__ import annotations

import math

import pytest

from refine.config import RunConfig, parse_config
from refine.document import Document
from refine.languages import FILTERS, language_chains
from refine.pipeline import build_text_filters

from .language_pages import BASE, GERMAN, GERMAN_STOP_WORDS, english, with_de


def judge(settings: dict, text: str, language_model) -> tuple[tuple[str, str] | None, Document]:
    """Run the text through the stages as `UnitProcessor._process_batch` does: language ID
    first, then each stage's filter of the document's language. (stage, reason) or None."""
    config = parse_config(settings)
    default = build_text_filters(config)
    default[0][1].model = language_model
    chains = language_chains(config, default)
    doc = Document(id="d", url="", text=text)
    for i, (stage, text_filter) in enumerate(default):
        chosen = chains[doc.language][i][1] if doc.language in chains else text_filter
        reason = chosen.apply(doc)
        if reason is not None:
            return (stage, reason), doc
    return None, doc


# --- the stop words: a German page is judged by German rules, an English one as before --------

def test_german_page_fails_english_stop_words_and_is_kept_with_its_own(language_model):
    verdict, doc = judge(BASE, GERMAN, language_model)
    assert doc.language == "de" and doc.language_score >= 0.65
    assert doc.metrics["gopher_quality.stop_words"] == 0
    assert verdict == ("quality", "stop_words")  # English rules: none of the stop words
    german = with_de({"quality": {"stop_words": GERMAN_STOP_WORDS}})
    verdict, doc = judge(german, GERMAN, language_model)
    assert verdict is None and doc.metrics["gopher_quality.stop_words"] == 6
    # an English page is judged by the top-level (English) list, German's section or not
    for settings in (BASE, german):
        verdict, doc = judge(settings, english(), language_model)
        assert verdict is None and doc.language == "en"
        assert doc.metrics["gopher_quality.stop_words"] >= 2


def test_stop_word_count_on_both_sides_of_the_language_threshold(language_model):
    listed = {"stop_words": GERMAN_STOP_WORDS}
    # 6 different German stop words (der die das und zu mit): kept at min 6, dropped at min 7
    assert judge(with_de({"quality": {**listed, "min_stop_words": 6}}), GERMAN,
                 language_model)[0] is None
    assert judge(with_de({"quality": {**listed, "min_stop_words": 7}}), GERMAN,
                 language_model)[0] == ("quality", "stop_words")
    # the English page is not moved by German's threshold
    assert judge(with_de({"quality": {**listed, "min_stop_words": 7}}), english(),
                 language_model)[0] is None


def test_a_language_without_a_section_keeps_the_run_settings(language_model):
    """A French override does nothing to a German page (nor does a section for German to an
    English page: see above)."""
    settings = {"language": {"languages": ["en", "de", "fr"]},
                "languages": {"fr": {"quality": {"min_stop_words": 0}}}}
    assert judge(settings, GERMAN, language_model)[0] == ("quality", "stop_words")


# --- every overridable section: one threshold on both sides ----------------------------------

# (section, key, metric, direction, reason, top-level settings that enable the section's stage)
# direction: "min" keep at metric >= t, "max" keep at metric <= t, "below" keep at metric < t.
CASES = [
    ("quality", "min_words", "gopher_quality.n_words", "min", "too_few_words", {}),
    ("quality", "max_mean_word_len", "gopher_quality.mean_word_len", "max", "mean_word_len", {}),
    ("repetition", "top_2gram_char_frac", "gopher_repetition.top_2gram_char_frac", "max",
     "top_2gram_char_frac", {}),
    ("c4", "min_num_sentences", "c4.sentences", "min", "too_few_sentences",
     {"c4": {"enabled": True, "filter_policy": False}}),
    ("fineweb", "short_line_thr", "fineweb.short_line_ratio", "below", "short_line_ratio",
     {"fineweb": {"enabled": True}}),
    ("lines", "max_removed_word_frac", "line_corrections.removed_word_frac", "max",
     "too_many_words_removed", {}),
]


def _sides(value: float, direction: str, integer: bool) -> tuple[float, float]:
    """(a threshold that keeps `value`, the nearest one that drops it)."""
    if direction == "min":
        return value, value + 1 if integer else math.nextafter(value, math.inf)
    if direction == "max":
        return value, value - 1 if integer else math.nextafter(value, -math.inf)
    return math.nextafter(value, math.inf), value  # "below": dropped at equality


def _german_page(section: str) -> str:
    if section not in ("lines", "fineweb"):
        return GERMAN
    # navigation lines (the line rules drop them; they are short) so the measure is not 0
    return "Startseite\nANMELDEN ZUM NEWSLETTER HEUTE\n" + GERMAN


@pytest.mark.parametrize(("section", "key", "metric", "direction", "reason", "top"), CASES,
                         ids=[f"{c[0]}.{c[1]}" for c in CASES])
def test_language_threshold_on_both_sides(language_model, section, key, metric, direction,
                                          reason, top):
    page = _german_page(section)
    stage = FILTERS[section][0]
    _, measured = judge(with_de({"quality": {"stop_words": GERMAN_STOP_WORDS}}, top), page,
                        language_model)
    value = measured.metrics[metric]
    assert value > 0, metric
    integer = type(getattr(RunConfig(), section)).model_fields[key].annotation is int
    keep, drop = _sides(value, direction, integer)
    german = {"quality": {"stop_words": GERMAN_STOP_WORDS}}
    german.setdefault(section, {})[key] = keep
    # the top-level threshold is the one that would drop it: the language's wins
    top_drop = {**top, section: {**top.get(section, {}), key: drop}}
    verdict, doc = judge(with_de(german, top_drop), page, language_model)
    assert doc.language == "de" and verdict is None, (value, keep)
    german[section][key] = drop
    top_keep = {**top, section: {**top.get(section, {}), key: keep}}
    assert judge(with_de(german, top_keep), page, language_model)[0] == (stage, reason)
    # without the section the top-level value judges the German page too
    assert judge({**BASE, **top_drop, "languages": {"de": {"quality": {
        "stop_words": GERMAN_STOP_WORDS}}}}, page, language_model)[0] == (stage, reason)
