"""Gopher quality filter: every rule on both sides of its threshold."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from refine.document import Document
from refine.filters.quality import BULLETS, QualityConfig, QualityFilter

# Ten 5-letter content words (no stop words) and the two stop words every text gets.
CONTENT = ["river", "stone", "green", "house", "field", "cloud", "light", "north", "water", "plant"]


def words(n: int) -> list[str]:
    """`n` words: two stop words ("the", "and") then content words (mean length near 5)."""
    assert n >= 2
    return ["the", "and", *(CONTENT[i % len(CONTENT)] for i in range(n - 2))]


def lines_of(ws: list[str], per_line: int = 10) -> str:
    return "\n".join(" ".join(ws[i : i + per_line]) for i in range(0, len(ws), per_line))


def run(text: str, config: QualityConfig | None = None) -> tuple[str | None, Document]:
    doc = Document(id="d", url="u", text=text)
    return QualityFilter(config or QualityConfig()).apply(doc), doc


def metric(doc: Document, key: str) -> float:
    return doc.metrics[f"gopher_quality.{key}"]


def test_plain_prose_is_kept_with_all_metrics() -> None:
    reason, doc = run(lines_of(words(200)))
    assert reason is None
    assert metric(doc, "n_words") == 200
    assert metric(doc, "mean_word_len") == pytest.approx((3 + 3 + 198 * 5) / 200)
    assert metric(doc, "stop_words") == 2
    assert metric(doc, "alpha_word_frac") == 1.0
    assert metric(doc, "hash_word_ratio") == 0.0
    assert metric(doc, "ellipsis_word_ratio") == 0.0
    assert metric(doc, "bullet_line_frac") == 0.0
    assert metric(doc, "ellipsis_line_frac") == 0.0


@pytest.mark.parametrize(("n", "reason"), [(49, "too_few_words"), (50, None), (51, None)])
def test_min_words(n: int, reason: str | None) -> None:
    got, doc = run(lines_of(words(n)))
    assert metric(doc, "n_words") == n
    assert got == reason


@pytest.mark.parametrize(
    ("n", "reason"), [(99_999, None), (100_000, None), (100_001, "too_many_words")]
)
def test_max_words(n: int, reason: str | None) -> None:
    got, _ = run(lines_of(words(n), per_line=100))
    assert got == reason


def sized_words(lengths: list[int]) -> str:
    """Words of the given lengths (made of letters, no stop words) plus "the and"."""
    ws = ["the", "and"] + ["q" * k for k in lengths]
    return lines_of(ws)


@pytest.mark.parametrize(
    ("lengths", "expected", "reason"),
    [
        # "the and" + 98 words: mean (6 + sum) / 100
        ([3] * 88 + [2] * 10, 2.90, "mean_word_len"),
        ([3] * 97 + [2], 2.99, "mean_word_len"),
        ([3] * 98, 3.00, None),  # exactly the minimum is kept
        ([3] * 88 + [4] * 10, 3.10, None),
        ([10] * 88 + [9] * 9 + [23], 9.90, None),
        ([10] * 97 + [24], 10.00, None),  # exactly the maximum is kept
        ([10] * 97 + [25], 10.01, "mean_word_len"),
        ([10] * 88 + [11] * 9 + [25], 10.10, "mean_word_len"),
    ],
)
def test_mean_word_length(lengths: list[int], expected: float, reason: str | None) -> None:
    got, doc = run(sized_words(lengths))
    assert metric(doc, "mean_word_len") == pytest.approx(expected)
    assert got == reason


def test_mean_word_length_strips_punctuation_and_ignores_symbol_tokens() -> None:
    base = words(60)
    plain = run(lines_of(base))[1]
    noisy = run(lines_of([f'"{w},' for w in base] + ["|", "--", "•", "..."]))[1]
    assert metric(noisy, "mean_word_len") == pytest.approx(metric(plain, "mean_word_len"))
    assert metric(noisy, "n_words") == 64  # the word count keeps every token


@pytest.mark.parametrize(
    ("n_hash", "n_ellipsis", "reason"),
    [
        (9, 0, None),
        (10, 0, None),  # exactly 0.1 is kept
        (11, 0, "hash_word_ratio"),
        (0, 10, None),
        (0, 11, "ellipsis_word_ratio"),
        (10, 10, None),  # two checks, not one summed ratio (0.2 summed)
        (6, 6, None),
        (11, 11, "hash_word_ratio"),  # both fail: the '#' check comes first
    ],
)
def test_hash_and_ellipsis_to_word_ratios(n_hash: int, n_ellipsis: int, reason: str | None) -> None:
    ws = words(100)
    for i in range(n_hash):
        ws[10 + i] = "#" + ws[10 + i]
    for i in range(n_ellipsis):  # mid-line, alternating "..." and "…"
        ws[40 + 2 * i] += "..." if i % 2 else "…"
    got, doc = run(lines_of(ws))
    assert metric(doc, "hash_word_ratio") == pytest.approx(n_hash / 100)
    assert metric(doc, "ellipsis_word_ratio") == pytest.approx(n_ellipsis / 100)
    assert metric(doc, "ellipsis_line_frac") == 0.0
    assert got == reason


@pytest.mark.parametrize(
    ("n_bullets", "reason"), [(89, None), (90, None), (91, "bullet_line_frac")]
)
def test_bullet_lines(n_bullets: int, reason: str | None) -> None:
    ws = words(900)
    lines = [" ".join(ws[i * 9 : i * 9 + 9]) for i in range(100)]
    for i in range(n_bullets):
        lines[i] = f"  {BULLETS[i % len(BULLETS)]} {lines[i]}"
    got, doc = run("\n".join(lines))
    assert metric(doc, "bullet_line_frac") == pytest.approx(n_bullets / 100)
    assert got == reason


@pytest.mark.parametrize("bullet", BULLETS)
def test_every_bullet_character_counts(bullet: str) -> None:
    text = "\n".join(f"{bullet}{' '.join(words(12))}" for _ in range(10))
    assert metric(run(text)[1], "bullet_line_frac") == 1.0


def test_blank_lines_do_not_count_as_lines() -> None:
    ws = words(100)
    text = "\n\n\n".join(" ".join(ws[i * 10 : i * 10 + 10]) + "..." for i in range(2))
    assert metric(run(text)[1], "ellipsis_line_frac") == 1.0


@pytest.mark.parametrize(
    ("n_ellipsis", "reason"), [(29, None), (30, None), (31, "ellipsis_line_frac")]
)
def test_ellipsis_lines(n_ellipsis: int, reason: str | None) -> None:
    ws = words(500)
    lines = [" ".join(ws[i * 5 : i * 5 + 5]) for i in range(100)]
    for i in range(n_ellipsis):
        lines[i * 3] += "..." if i % 2 else " …"
    got, doc = run("\n".join(lines))
    assert metric(doc, "ellipsis_line_frac") == pytest.approx(n_ellipsis / 100)
    assert got == reason


@pytest.mark.parametrize(
    ("n_numbers", "reason"), [(19, None), (20, None), (21, "alpha_word_frac")]
)
def test_alphabetic_word_fraction(n_numbers: int, reason: str | None) -> None:
    ws = words(100)
    for i in range(n_numbers):
        ws[5 + i] = f"{1000 + i}"  # 4 chars: mean length stays in range
    ws[50] = "4x4"  # one letter is enough
    got, doc = run(lines_of(ws))
    assert metric(doc, "alpha_word_frac") == pytest.approx((100 - n_numbers) / 100)
    assert got == reason


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        ([], "stop_words"),
        (["the"], "stop_words"),
        (["the", "the"], "stop_words"),  # two of the words, not twice one word
        (["the", "THE,", "the."], "stop_words"),
        (["the", "with"], None),
        (["The,", "AND"], None),
        (["the", "the", "of"], None),
    ],
)
def test_stop_words(stop: list[str], reason: str | None) -> None:
    ws = stop + [CONTENT[i % len(CONTENT)] for i in range(100)]
    got, doc = run(lines_of(ws))
    assert metric(doc, "stop_words") == len({w.strip(",.").lower() for w in stop})
    assert got == reason


def test_stop_words_are_configurable_and_can_be_disabled() -> None:
    text = lines_of([CONTENT[i % len(CONTENT)] for i in range(100)])
    assert run(text)[0] == "stop_words"
    assert run(text, QualityConfig(min_stop_words=0))[0] is None
    custom = QualityConfig(stop_words=["River", "stone", "absent"], min_stop_words=2)
    got, doc = run(text, custom)
    assert metric(doc, "stop_words") == 2
    assert got is None
    assert run(text, custom.model_copy(update={"min_stop_words": 3}))[0] == "stop_words"


def _failing(rules: set[str]) -> str:
    """Prose of 100 words (40 for too_few_words) failing exactly `rules`."""
    n = 40 if "too_few_words" in rules else 100
    ws = words(n)

    def part(lo: int, hi: int) -> slice:  # percent of the words
        return slice(n * lo // 100, n * hi // 100)

    if "mean_word_len" in rules:
        ws[2:] = ["quite" * 3] * (n - 2)  # mean above 14
    if "hash_word_ratio" in rules:
        ws[part(10, 25)] = ["#" + w for w in ws[part(10, 25)]]
    if "ellipsis_word_ratio" in rules:
        ws[part(30, 45)] = [w + "..." for w in ws[part(30, 45)]]
    if "alpha_word_frac" in rules:
        ws[part(50, 80)] = [str(1000 + i) for i in range(len(ws[part(50, 80)]))]
    if "stop_words" in rules:
        ws[:2] = ["river", "stone"]
    text = lines_of(ws)
    if "bullet_line_frac" in rules:
        text = "\n".join("- " + line for line in text.split("\n"))
    if "ellipsis_line_frac" in rules:
        text = "\n".join(line + " …" for line in text.split("\n"))
    return text


ORDER = ("too_few_words", "mean_word_len", "hash_word_ratio", "ellipsis_word_ratio",
         "bullet_line_frac", "ellipsis_line_frac", "alpha_word_frac", "stop_words")


@pytest.mark.parametrize("rule", ORDER)
def test_each_rule_alone(rule: str) -> None:
    assert run(_failing({rule}))[0] == rule


@pytest.mark.parametrize(
    "pair", [(a, b) for i, a in enumerate(ORDER) for b in ORDER[i + 1 :]
             if {a, b} != {"ellipsis_word_ratio", "ellipsis_line_frac"}],
)
def test_two_failing_rules_report_the_first_in_documented_order(pair: tuple[str, str]) -> None:
    # Lines ending in " …" add ellipses per word too, so that pair cannot fail alone.
    assert run(_failing(set(pair)))[0] == pair[0]
    assert run("river stone")[0] == "too_few_words"


def test_disabled_filter_keeps_and_records_nothing() -> None:
    reason, doc = run("x", QualityConfig(enabled=False))
    assert reason is None
    assert doc.metrics == {}


def test_empty_text() -> None:
    reason, doc = run("")
    assert reason == "too_few_words"
    assert metric(doc, "n_words") == 0


def test_defaults_are_gopher_values() -> None:
    c = QualityConfig()
    assert (c.min_words, c.max_words) == (50, 100_000)
    assert (c.min_mean_word_len, c.max_mean_word_len) == (3, 10)
    assert (c.max_hash_word_ratio, c.max_ellipsis_word_ratio) == (0.1, 0.1)
    assert (c.max_bullet_line_frac, c.max_ellipsis_line_frac) == (0.9, 0.3)
    assert c.min_alpha_word_frac == 0.8
    assert c.stop_words == ["the", "be", "to", "of", "and", "that", "have", "with"]
    assert c.min_stop_words == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"min_words": -1},
        {"min_words": 200, "max_words": 100},
        {"min_mean_word_len": 11},  # above the max of 10
        {"max_hash_word_ratio": -0.1},
        {"max_ellipsis_word_ratio": -0.1},
        {"max_symbol_word_ratio": 0.1},  # the summed ratio is gone: two checks now
        {"max_bullet_line_frac": 1.1},
        {"max_ellipsis_line_frac": -0.5},
        {"min_alpha_word_frac": 2},
        {"min_stop_words": -1},
        {"stop_words": ["the", ""]},
        {"stop_words": ["of the"]},
        {"stop_words": [], "min_stop_words": 1},
        {"max_word": 10},  # unknown field
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        QualityConfig(**bad)
