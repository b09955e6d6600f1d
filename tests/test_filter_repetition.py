"""Gopher repetition filter: every rule on both sides of its threshold."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from refine.document import Document
from refine.filters.repetition import (
    CHECKS,
    DUP_NGRAM_SIZES,
    RepetitionConfig,
    RepetitionFilter,
    _ngram_chars_np,
    _ngram_chars_py,
    repetition_metrics,
)

DEFAULTS = RepetitionConfig()


def only(check: str) -> RepetitionFilter:
    """A filter where only `check` is active (at its default threshold)."""
    off = {c: 1.0 for c in CHECKS if c != check}
    return RepetitionFilter(RepetitionConfig(**off))


def run(f: RepetitionFilter, text: str) -> tuple[str | None, Document]:
    doc = Document(id="d", url="u", text=text)
    return f.apply(doc), doc


def uniq(i: int) -> str:
    """A 5-character word that no other helper produces."""
    return f"u{i:04d}"


# --- lines and paragraphs -------------------------------------------------------------------


def items(n_total: int, n_dup: int) -> list[str]:
    """`n_total` 10-char items of which `n_dup` repeat earlier ones (items 0..n_dup-1 once each)."""
    base = [f"line{i:06d}" for i in range(n_total - n_dup)]
    return base + base[:n_dup]


@pytest.mark.parametrize(
    ("sep", "check"),
    [("\n", "dup_line_frac"), ("\n\n", "dup_para_frac")],
)
@pytest.mark.parametrize(("n_dup", "dropped"), [(29, False), (31, True)])
def test_duplicate_item_fraction(sep: str, check: str, n_dup: int, dropped: bool) -> None:
    text = sep.join(items(100, n_dup))
    reason, doc = run(only(check), text)
    assert doc.metrics[f"gopher_repetition.{check}"] == pytest.approx(n_dup / 100)
    assert reason == (check if dropped else None)


@pytest.mark.parametrize(
    ("sep", "check"),
    [("\n", "dup_line_char_frac"), ("\n\n", "dup_para_char_frac")],
)
@pytest.mark.parametrize(("n_dup", "dropped"), [(19, False), (21, True)])
def test_duplicate_item_char_fraction(sep: str, check: str, n_dup: int, dropped: bool) -> None:
    text = sep.join(items(100, n_dup))
    reason, doc = run(only(check), text)
    assert doc.metrics[f"gopher_repetition.{check}"] == pytest.approx(n_dup / 100)
    assert reason == (check if dropped else None)


def test_char_fraction_weights_by_length() -> None:
    # One long line repeated once among short unique lines: few duplicate lines, many chars.
    long = "x" * 100
    lines = [long, *(f"s{i:03d}" for i in range(8)), long]  # 10 lines, 1 duplicate
    m = repetition_metrics("\n".join(lines))
    assert m["dup_line_frac"] == pytest.approx(0.1)
    assert m["dup_line_char_frac"] == pytest.approx(100 / (200 + 8 * 4))
    reason, _ = run(RepetitionFilter(), "\n".join(lines))
    assert reason == "dup_line_char_frac"


def test_lines_are_stripped_and_empty_lines_ignored() -> None:
    m = repetition_metrics("alpha beta\n\n   \n  alpha beta  \ngamma delta\n")
    # lines: "alpha beta", "alpha beta", "gamma delta"
    assert m["dup_line_frac"] == pytest.approx(1 / 3)
    assert m["dup_line_char_frac"] == pytest.approx(10 / 31)


def test_paragraphs_split_on_blank_lines_with_whitespace() -> None:
    text = "one two\nthree\n \t\none two\nthree\n\n\n\nfour"
    m = repetition_metrics(text)
    assert m["dup_para_frac"] == pytest.approx(1 / 3)  # "one two\nthree" twice, "four"
    assert m["dup_line_frac"] == pytest.approx(2 / 5)


# --- top n-grams ----------------------------------------------------------------------------


def top_ngram_text(n: int, count: int, n_words: int) -> str:
    """`n_words` 5-char words: the n-gram r0..r{n-1} `count` times, separated by unique words."""
    gram = [f"r{j:04d}" for j in range(n)]
    words: list[str] = []
    for i in range(count):
        words += [*gram, uniq(i)]
    words += [uniq(9_999 - i) for i in range(n_words - len(words))]
    assert len(words) == n_words
    return " ".join(words)


@pytest.mark.parametrize(
    ("n", "n_words", "below", "above"),
    [(2, 200, 19, 21), (3, 300, 17, 19), (4, 400, 15, 17)],
)
def test_top_ngram_char_fraction(n: int, n_words: int, below: int, above: int) -> None:
    check = f"top_{n}gram_char_frac"
    limit = getattr(DEFAULTS, check)
    for count, dropped in ((below, False), (above, True)):
        reason, doc = run(RepetitionFilter(), top_ngram_text(n, count, n_words))
        frac = doc.metrics[f"gopher_repetition.{check}"]
        assert frac == pytest.approx(5 * n * count / (5 * n_words))
        assert (frac > limit) is dropped
        # Default thresholds throughout: the repeated n-gram trips no other rule.
        assert reason == (check if dropped else None)


def test_top_ngram_needs_a_repeat_and_breaks_ties_by_length() -> None:
    m = repetition_metrics(" ".join(uniq(i) for i in range(50)))
    assert m["top_2gram_char_frac"] == 0.0
    # "aa bb" and "ccccc ddddd" both occur twice: the longer one counts.
    m = repetition_metrics("aa bb x ccccc ddddd y aa bb z ccccc ddddd")
    total = 2 + 2 + 1 + 5 + 5 + 1 + 2 + 2 + 1 + 5 + 5
    assert m["top_2gram_char_frac"] == pytest.approx(2 * 10 / total)


def test_top_ngram_overlap_is_capped_at_one() -> None:
    m = repetition_metrics("spam " * 20)
    assert m["top_2gram_char_frac"] == 1.0
    assert m["dup_5gram_char_frac"] == 1.0


# --- duplicated n-grams ---------------------------------------------------------------------


def dup_ngram_text(n: int, n_words: int) -> str:
    """The n-gram r0..r{n-1} twice among unique 5-char words: 2n of `n_words` words covered."""
    gram = [f"r{j:04d}" for j in range(n)]
    words = [*gram, uniq(0), *gram]
    words += [uniq(i) for i in range(1, n_words - len(words) + 1)]
    return " ".join(words)


@pytest.mark.parametrize("n", DUP_NGRAM_SIZES)
def test_dup_ngram_char_fraction(n: int) -> None:
    check = f"dup_{n}gram_char_frac"
    limit = getattr(DEFAULTS, check)
    # Aim half a point either side of the limit (limits are 0.01 apart, so no smaller n trips).
    for target, dropped in ((limit - 0.005, False), (limit + 0.005, True)):
        n_words = round(2 * n / target)
        reason, doc = run(RepetitionFilter(), dup_ngram_text(n, n_words))
        frac = doc.metrics[f"gopher_repetition.{check}"]
        assert frac == pytest.approx(2 * n / n_words)
        assert abs(frac - limit) < 0.01
        assert (frac > limit) is dropped
        assert reason == (check if dropped else None)
        # Only n-grams up to n repeat.
        for k in DUP_NGRAM_SIZES:
            got = doc.metrics[f"gopher_repetition.dup_{k}gram_char_frac"]
            assert got == pytest.approx(frac if k <= n else 0.0)


def test_dup_ngram_counts_every_covered_word_once() -> None:
    # "a b c d e" occurs twice: both occurrences are covered (Gopher: chars in duplicate n-grams).
    m = repetition_metrics("a b c d e X a b c d e YY")
    assert m["dup_5gram_char_frac"] == pytest.approx(10 / 13)
    # Overlapping repeated 5-grams: each of the 7 words counted once.
    m = repetition_metrics("z z z z z z z")
    assert m["dup_5gram_char_frac"] == 1.0
    assert m["dup_7gram_char_frac"] == 0.0  # the 7-gram occurs once


def test_numpy_and_python_ngram_paths_agree() -> None:
    texts = [
        dup_ngram_text(7, 300),
        top_ngram_text(3, 19, 300),
        "a b c d e f " * 60 + " ".join(uniq(i) for i in range(300)),
        "z " * 400,
        "one",
        "",
    ]
    for text in texts:
        words = text.split()
        assert _ngram_chars_np(words) == _ngram_chars_py(words)


# --- filter plumbing ------------------------------------------------------------------------


def test_clean_text_is_kept_and_all_metrics_recorded() -> None:
    reason, doc = run(RepetitionFilter(), " ".join(uniq(i) for i in range(300)))
    assert reason is None
    assert set(doc.metrics) == {f"gopher_repetition.{c}" for c in CHECKS}
    assert all(v == 0.0 for v in doc.metrics.values())


def test_empty_text_is_kept() -> None:
    reason, doc = run(RepetitionFilter(), "")
    assert reason is None
    assert all(v == 0.0 for v in doc.metrics.values())


def test_disabled_filter_keeps_and_records_nothing() -> None:
    reason, doc = run(RepetitionFilter(RepetitionConfig(enabled=False)), "spam\n" * 100)
    assert reason is None
    assert doc.metrics == {}


def test_defaults_are_gopher_values() -> None:
    c = RepetitionConfig()
    assert (c.dup_line_frac, c.dup_para_frac) == (0.30, 0.30)
    assert (c.dup_line_char_frac, c.dup_para_char_frac) == (0.20, 0.20)
    assert (c.top_2gram_char_frac, c.top_3gram_char_frac, c.top_4gram_char_frac) == (
        0.20,
        0.18,
        0.16,
    )
    assert [getattr(c, f"dup_{n}gram_char_frac") for n in DUP_NGRAM_SIZES] == [
        0.15,
        0.14,
        0.13,
        0.12,
        0.11,
        0.10,
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"dup_line_frac": -0.1},
        {"dup_para_char_frac": 1.5},
        {"top_2gram_char_frac": -1},
        {"dup_10gram_char_frac": 2},
        {"dup_11gram_char_frac": 0.1},  # unknown field
        {"dup_line_frac": "lots"},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RepetitionConfig(**bad)


def test_every_check_keeps_a_value_exactly_at_its_threshold() -> None:
    # One text where every check measures something: a 12-word paragraph appears twice.
    repeated = " ".join(f"r{j:04d}" for j in range(12))
    text = "\n\n".join([repeated, " ".join(uniq(i) for i in range(40)), repeated,
                        " ".join(uniq(100 + i) for i in range(30))])
    measured = repetition_metrics(text)
    for check in CHECKS:
        value = measured[check]
        assert value > 0, check
        off = {c: 1.0 for c in CHECKS}
        at = RepetitionFilter(RepetitionConfig(**{**off, check: value}))
        assert run(at, text)[0] is None, f"{check}: a value equal to the threshold is kept"
        below = RepetitionFilter(RepetitionConfig(**{**off, check: math.nextafter(value, 0)}))
        assert run(below, text)[0] == check


@pytest.mark.parametrize(("n", "count", "n_words"), [(2, 20, 200), (3, 18, 300), (4, 16, 400)])
def test_top_ngram_exactly_at_the_default_threshold_is_kept(n: int, count: int,
                                                            n_words: int) -> None:
    reason, doc = run(RepetitionFilter(), top_ngram_text(n, count, n_words))
    check = f"top_{n}gram_char_frac"
    assert doc.metrics[f"gopher_repetition.{check}"] == pytest.approx(getattr(DEFAULTS, check))
    assert reason is None


@pytest.mark.parametrize(("sep", "check", "n_dup"), [
    ("\n", "dup_line_frac", 30), ("\n\n", "dup_para_frac", 30),
    ("\n", "dup_line_char_frac", 20), ("\n\n", "dup_para_char_frac", 20),
])
def test_duplicate_items_exactly_at_the_default_threshold_are_kept(sep: str, check: str,
                                                                   n_dup: int) -> None:
    reason, doc = run(only(check), sep.join(items(100, n_dup)))
    assert doc.metrics[f"gopher_repetition.{check}"] == getattr(DEFAULTS, check)
    assert reason is None


def test_two_failing_checks_report_the_first_in_documented_order() -> None:
    # duplicate lines (40%) also make duplicate-line chars (40%) and n-grams fail: the first
    # check in CHECKS is the reason, and every later one is over its threshold too
    text = "\n".join(items(100, 40))
    reason, doc = run(RepetitionFilter(), text)
    over = [c for c in CHECKS if doc.metrics[f"gopher_repetition.{c}"] > getattr(DEFAULTS, c)]
    assert len(over) >= 2
    assert reason == over[0] == "dup_line_frac"
    later = RepetitionFilter(RepetitionConfig(dup_line_frac=1.0))
    assert run(later, text)[0] == over[1]
