"""RefinedWeb line-wise corrections: every rule on both sides of its threshold."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from refine.document import Document
from refine.filters.lines import RULES, LineCorrectionConfig, LineCorrectionFilter

PROSE = "The council met on Tuesday to discuss the new budget for local schools and roads."


def correct(line: str, config: LineCorrectionConfig | None = None) -> tuple[str, str | None]:
    """(corrected text, rule that removed the line or None) for a document of one line."""
    new, removed, counts = LineCorrectionFilter(config).correct_lines(line)
    rules = [r for r in RULES if counts[r]]
    assert len(rules) <= 1
    if rules:
        assert new == ""
        assert removed == len(line.split())
    return new, (rules[0] if rules else None)


# --- uppercase ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "dropped"),
    [
        ("A" * 24 + " " + "A" * 25 + " " + "a" * 25 + " " + "a" * 26, False),  # 49 / 100
        ("A" * 25 + " " + "A" * 26 + " " + "a" * 24 + " " + "a" * 25, True),  # 51 / 100
        ("HOME PAGE", True),
        ("NASA launches a new rocket today", False),
        ("ÀÉÎÕÜ àéîõü xy", False),  # non-ASCII path: 5 / 12
        ("ÀÉÎÕÜ Ç àéîõü", True),  # 6 / 11
        ("ЗДРАВСТВУЙТЕ МИР", True),
        ("Здравствуйте мир и все", False),
        ("数据 处理 管道", False),  # no cased letters
    ],
)
def test_uppercase(line: str, dropped: bool) -> None:
    assert correct(line)[1] == ("uppercase" if dropped else None)


def test_uppercase_threshold_is_configurable() -> None:
    line = "ABC DEFG hijk"  # 7 / 11
    assert correct(line)[1] == "uppercase"
    assert correct(line, LineCorrectionConfig(max_uppercase_frac=0.7))[1] is None


# --- numeric --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "dropped"),
    [
        ("2019-03-01 12:30", True),
        ("$ 1,234.56 (+3.2%)", True),
        ("1 2 3 ... 7", True),
        ("* * *", True),
        ("12 apples and 3 pears", False),
        ("Room 101", False),
    ],
)
def test_numeric(line: str, dropped: bool) -> None:
    assert correct(line)[1] == ("numeric" if dropped else None)


# --- counters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "dropped"),
    [
        ("3 likes", True),
        ("12 comments", True),
        ("1,234 views", True),
        ("10 000 views", True),
        ("5 shares", True),
        ("Likes: 10", True),
        ("Comments (3)", True),
        ("1.2k Views", True),
        ("12 Comments · 5 shares", True),
        ("  • 7 replies", True),
        ("3 likes from my friends", False),
        ("I like 3 things", False),
        ("3 lions", False),
    ],
)
def test_counter(line: str, dropped: bool) -> None:
    assert correct(line)[1] == ("counter" if dropped else None)


def test_counter_words_are_configurable() -> None:
    config = LineCorrectionConfig(counter_words=["widgets"])
    assert correct("3 widgets", config)[1] == "counter"
    assert correct("3 likes", config)[1] is None


# --- single word ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "dropped"),
    [
        ("Home", True),
        ("  Categories:  ", True),
        ("Home page", False),
        ("这是一个没有空格的完整中文句子。", False),  # unsegmented script: not one word
    ],
)
def test_single_word(line: str, dropped: bool) -> None:
    assert correct(line)[1] == ("single_word" if dropped else None)


# --- boilerplate phrases on short lines -----------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected", "rule"),
    [
        ("Sign in", "", "boilerplate"),
        ("Skip to content", "", "boilerplate"),
        ("Read more »", "", "boilerplate"),
        ("Sign in | Log in | Subscribe", "", "boilerplate"),
        ("0 items in cart", "", "numeric"),  # "0" is left
        ("Sign in | Register", "", "single_word"),  # "Register" is left
        ("Great story about the council. Read more...", "Great story about the council.", None),
        ("Share this: Facebook Twitter", "Facebook Twitter", None),
        ("Back to top - Local news and weather", "Local news and weather", None),
        ("Please sign in here to see the results", "Please sign in here to see the results", None),
        ("Subscribers get the paper early", "Subscribers get the paper early", None),
        ("Signing in takes a minute", "Signing in takes a minute", None),
        # anywhere in a short line: the paper's third kind of pattern
        ("Your basket: 2 items in cart | Checkout securely today",
         "Your basket: 2 Checkout securely today", None),
        ("Fresh bread daily, add to cart, baked this morning",
         "Fresh bread daily baked this morning", None),
        ("Sign in | 3 items in cart | Local news", "3 Local news", None),
        ("Carts in items lists", "Carts in items lists", None),
    ],
)
def test_boilerplate_phrases(line: str, expected: str, rule: str | None) -> None:
    new, got = correct(line)
    assert new == expected
    assert got == rule


@pytest.mark.parametrize(("n_words", "edited"), [(10, True), (11, False)])
def test_phrases_only_stripped_from_short_lines(n_words: int, edited: bool) -> None:
    line = " ".join(["word"] * (n_words - 2) + ["Read", "more"])
    new, removed, counts = LineCorrectionFilter().correct_lines(line)
    assert counts["edited"] == int(edited)
    assert removed == (n_words if edited else 0)  # every word of a flagged line counts
    assert new == (" ".join(["word"] * (n_words - 2)) if edited else line)


@pytest.mark.parametrize(("n_words", "edited"), [(10, True), (11, False)])
def test_anywhere_phrases_only_removed_from_short_lines(n_words: int, edited: bool) -> None:
    line = " ".join(["word"] * 3 + ["items", "in", "cart"] + ["word"] * (n_words - 6))
    new, removed, counts = LineCorrectionFilter().correct_lines(line)
    assert counts["edited"] == int(edited)
    assert new == (" ".join(["word"] * (n_words - 3)) if edited else line)


@pytest.mark.parametrize(("line_words", "dropped"), [(5, False), (6, True)])
def test_five_percent_rule_counts_every_word_of_an_edited_line(line_words: int,
                                                               dropped: bool) -> None:
    # 100 words; one short line ends in "read more": 2 phrase words, but the whole line counts.
    edited = " ".join(["house"] * (line_words - 2) + ["read", "more"])
    prose = ["house"] * (100 - line_words)
    text = "\n".join([" ".join(prose[i : i + 12]) for i in range(0, len(prose), 12)] + [edited])
    doc = Document(id="d", url="u", text=text)
    reason = LineCorrectionFilter().apply(doc)
    assert doc.metrics["line_corrections.removed_words"] == line_words
    assert doc.metrics["line_corrections.lines_edited"] == 1
    assert reason == ("too_many_words_removed" if dropped else None)


def test_phrases_are_configurable() -> None:
    config = LineCorrectionConfig(boilerplate_phrases=["Buy   Now"])
    assert correct("buy now", config)[1] == "boilerplate"
    assert correct("Sign in", config)[1] is None
    assert correct("Sign in", LineCorrectionConfig(short_line_max_words=0))[1] is None


# --- the document ---------------------------------------------------------------------------


def test_text_is_rewritten_with_kept_lines() -> None:
    text = "\n".join(
        [
            "Skip to content",
            "HOME PAGE",
            PROSE,
            "3 likes",
            "",
            "Menu",
            "",
            PROSE + " Read more",
            "",
            "2019-03-01",
            "Share this: Facebook Twitter",
        ]
    )
    new, removed, counts = LineCorrectionFilter().correct_lines(text)
    assert new == f"{PROSE}\n\n{PROSE} Read more\n\nFacebook Twitter"
    assert counts == {
        "uppercase": 1,
        "numeric": 1,
        "counter": 1,
        "single_word": 1,
        "boilerplate": 1,
        "edited": 1,
    }
    # the words of removed lines, and every word of the edited line ("Facebook Twitter" kept)
    assert removed == len(text.split()) - len(new.split()) + 2


def test_clean_text_is_returned_unchanged() -> None:
    text = f"{PROSE}\n\n\n  {PROSE}  \n"
    new, removed, counts = LineCorrectionFilter().correct_lines(text)
    assert new is text
    assert removed == 0
    assert not any(counts.values())


def doc_with_removed(n_removed: int) -> str:
    """100 words: `n_removed` single-word lines and 100 - n_removed words of prose lines."""
    prose = ["house"] * (100 - n_removed)
    lines = [" ".join(prose[i : i + 12]) for i in range(0, len(prose), 12)]
    return "\n".join(lines + ["Menu"] * n_removed)


@pytest.mark.parametrize(("n_removed", "dropped"), [(4, False), (5, False), (6, True)])
def test_document_dropped_when_too_many_words_removed(n_removed: int, dropped: bool) -> None:
    text = doc_with_removed(n_removed)
    doc = Document(id="d", url="u", text=text)
    reason = LineCorrectionFilter().apply(doc)
    m = doc.metrics
    assert m["line_corrections.removed_word_frac"] == pytest.approx(n_removed / 100)
    assert m["line_corrections.removed_words"] == n_removed
    assert m["line_corrections.lines_removed"] == n_removed
    assert m["line_corrections.single_word_lines"] == n_removed
    assert m["line_corrections.lines_edited"] == 0
    assert {k for k in m if k.endswith("_lines")} >= {f"line_corrections.{r}_lines" for r in RULES}
    if dropped:
        assert reason == "too_many_words_removed"
        assert doc.text == text  # a dropped document keeps its text
    else:
        assert reason is None
        assert "Menu" not in doc.text
        assert len(doc.text.split()) == 100 - n_removed


def test_removed_word_threshold_is_configurable() -> None:
    doc = Document(id="d", url="u", text=doc_with_removed(20))
    assert LineCorrectionFilter(LineCorrectionConfig(max_removed_word_frac=0.25)).apply(doc) is None


def test_empty_document_is_kept() -> None:
    doc = Document(id="d", url="u", text="")
    assert LineCorrectionFilter().apply(doc) is None
    assert doc.metrics["line_corrections.removed_word_frac"] == 0.0


def test_disabled_filter_keeps_and_records_nothing() -> None:
    doc = Document(id="d", url="u", text="Menu\nHOME")
    assert LineCorrectionFilter(LineCorrectionConfig(enabled=False)).apply(doc) is None
    assert doc.text == "Menu\nHOME"
    assert doc.metrics == {}


def test_defaults() -> None:
    c = LineCorrectionConfig()
    assert c.max_uppercase_frac == 0.5
    assert c.short_line_max_words == 10
    assert c.max_removed_word_frac == 0.05
    assert {"likes", "comments", "views", "shares"} <= set(c.counter_words)
    assert {"sign in", "sign-in", "log in", "read more", "skip to content"} <= set(
        c.boilerplate_phrases
    )
    assert "items in cart" in c.boilerplate_anywhere_phrases


@pytest.mark.parametrize(
    "bad",
    [
        {"max_uppercase_frac": -0.1},
        {"max_uppercase_frac": 1.5},
        {"max_removed_word_frac": -0.01},
        {"short_line_max_words": -1},
        {"counter_words": ["likes", ""]},
        {"counter_words": ["page views"]},
        {"boilerplate_phrases": ["  "]},
        {"boilerplate_anywhere_phrases": ["items in cart", ""]},
        {"min_words": 3},  # unknown field
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LineCorrectionConfig(**bad)
