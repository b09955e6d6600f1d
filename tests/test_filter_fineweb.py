"""FineWeb's own heuristics (arXiv 2406.17557, section 3.3): each on both sides of its threshold,
equality included (the paper drops at <= 0.12, >= 0.67, >= 0.1).

In a run: tests/test_fineweb_run.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from refine.config import parse_config
from refine.document import Document
from refine.filters.fineweb import (
    CHECKS,
    FineWebQualityConfig,
    FineWebQualityFilter,
    quality_metrics,
)

DATA = Path(__file__).parent / "data" / "text"


def cc_texts() -> list[str]:
    """The 697 Common Crawl documents of the text sample, as extracted."""
    with gzip.open(DATA / "cc-main-2019-30-text-sample.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]

# Real lines: sentences from news text (longer than 30 characters, ending in a full stop) and
# navigation from web pages (longer than 30 characters, no end punctuation).
SENTENCES = [
    "The council met on Tuesday to discuss the new budget for local schools and roads.",
    "Several residents asked why the library would close two days a week.",
    "The mayor said the cuts were needed to balance the accounts this year.",
    "A final vote is expected at the next meeting in March.",
    "Members of the public may attend and speak for three minutes each.",
    "Firefighters spent the night containing the blaze on the edge of the national park.",
    "Police have closed the highway between the two towns until further notice.",
    "The company said its profit for the half year had risen by eight per cent.",
    "Officials expect the new bridge to open to traffic late next year.",
    "Rain is forecast for most of the state over the weekend.",
]
NAVIGATION = [
    "Home | News | Sport | Weather | Business | Contact",
    "Related articles from the same author and category",
    "Posted in Community, Local Government, Transport",
    "Sign up for our weekly newsletter and special offers",
    "Previous article: Schools reopen after the holidays",
    "Next article: Council approves the new parking plan",
    "Share this story on Facebook, Twitter or by email",
    "Photo gallery: the flood in pictures from readers",
]
SHORT = ["Contact us", "Log in", "Sitemap", "Advertise", "Careers", "About", "Terms", "Help"]


def fineweb(**settings) -> FineWebQualityFilter:
    return FineWebQualityFilter(FineWebQualityConfig(enabled=True, **settings))


def judge(lines: list[str], **settings) -> tuple[str | None, Document]:
    doc = Document("id", "https://example.org/", "\n".join(lines))
    return fineweb(**settings).apply(doc), doc


def metric(doc: Document, name: str) -> float:
    return doc.metrics[f"fineweb.{name}"]


def test_prose_is_kept_with_its_metrics():
    reason, doc = judge(SENTENCES)
    assert reason is None
    assert doc.metrics == {"fineweb.lines": 10.0, "fineweb.line_punct_ratio": 1.0,
                           "fineweb.short_line_ratio": 0.0, "fineweb.char_dup_ratio": 0.0}


def test_disabled_does_nothing():
    doc = Document("id", "u", "\n".join(NAVIGATION))
    assert FineWebQualityFilter(FineWebQualityConfig()).apply(doc) is None
    assert doc.metrics == {}


# --- line_punct_ratio: drop when <= 0.12 --------------------------------------------------------


@pytest.mark.parametrize(
    ("punctuated", "other", "reason"),
    [
        (3, 22, "line_punct_ratio"),  # 3 / 25 = 0.12: dropped at equality
        (4, 25, None),  # 4 / 29 = 0.138
        (2, 20, "line_punct_ratio"),  # 2 / 22 = 0.091
        (0, 8, "line_punct_ratio"),
    ],
)
def test_line_punct_ratio(punctuated, other, reason):
    lines = (SENTENCES * 3)[:punctuated] + (NAVIGATION * 4)[:other]
    got, doc = judge(lines, char_duplicates_ratio=1.0)  # repeats are not judged here
    assert metric(doc, "line_punct_ratio") == pytest.approx(punctuated / (punctuated + other))
    assert got == reason


def test_line_punct_threshold_and_stop_chars_are_config():
    lines = SENTENCES[:3] + (NAVIGATION * 4)[:22]  # 0.12
    assert judge(lines, char_duplicates_ratio=1.0, line_punct_thr=0.11)[0] is None
    navigation_only = NAVIGATION[:5]
    assert judge(navigation_only)[0] == "line_punct_ratio"
    with_pipe = [line + " |" for line in navigation_only]
    assert judge(with_pipe, stop_chars=["|"])[0] is None


@pytest.mark.parametrize(
    ("line", "ends"),
    [
        ("The results were published on Monday.", True),
        ("Was it worth the wait for the new station?", True),
        ('She called it "a disaster for the town"', True),
        ("They called it 'the long winter'", True),
        ("What a day it was for everyone involved!", True),
        ("The results were published on Monday:", False),
        ("The results were published on Monday. ", False),  # lines are not stripped
        ("Read the full report here (PDF)", False),
    ],
)
def test_what_ends_in_punctuation(line, ends):
    _, doc = judge([line])
    assert metric(doc, "line_punct_ratio") == float(ends)


# --- short_line_ratio: drop when >= 0.67 (lines of <= 30 characters) ----------------------------


@pytest.mark.parametrize(
    ("short", "long", "reason"),
    [
        (67, 33, "short_line_ratio"),  # 0.67: dropped at equality
        (66, 34, None),
        (2, 1, None),  # 0.667 < 0.67
        (7, 3, "short_line_ratio"),
    ],
)
def test_short_line_ratio(short, long, reason):
    lines = (SHORT * 10)[:short] + (SENTENCES * 4)[:long]
    # every line ends in punctuation so that only the short-line check can drop the page
    lines = [line if line.endswith(".") else line + "." for line in lines]
    got, doc = judge(lines, char_duplicates_ratio=1.0)
    assert metric(doc, "short_line_ratio") == pytest.approx(short / (short + long))
    assert got == reason


@pytest.mark.parametrize(("length", "short"), [(30, True), (31, False)])
def test_short_line_length(length, short):
    line = ("Rain is forecast for most of the state over the weekend " * 2)[: length - 1] + "."
    assert len(line) == length
    _, doc = judge([line])
    assert metric(doc, "short_line_ratio") == float(short)
    _, doc = judge([line], short_line_length=length - 1)
    assert metric(doc, "short_line_ratio") == 0.0


# --- char_dup_ratio: drop when >= 0.1 -----------------------------------------------------------


def test_char_dup_ratio_counts_every_repeat_after_the_first():
    text = "\n".join([SENTENCES[0], SENTENCES[1], SENTENCES[0], SENTENCES[0]])
    _, doc = judge(text.split("\n"), char_duplicates_ratio=1.0)
    chars = len(text) - text.count("\n")
    assert metric(doc, "char_dup_ratio") == pytest.approx(2 * len(SENTENCES[0]) / chars)


def test_char_dup_ratio_on_both_sides_of_the_threshold():
    repeated = "Share this story on Facebook."
    base = SENTENCES + NAVIGATION  # no line twice
    chars = sum(map(len, base))

    def ratio(copies: int) -> float:  # the first copy is not a duplicate
        return (copies - 1) * len(repeated) / (chars + copies * len(repeated))

    copies = next(k for k in range(1, 100) if ratio(k) >= 0.1)
    got, doc = judge(base + [repeated] * (copies - 1))
    assert metric(doc, "char_dup_ratio") == pytest.approx(ratio(copies - 1))
    assert ratio(copies - 1) < 0.1 and got is None
    got, doc = judge(base + [repeated] * copies)
    assert metric(doc, "char_dup_ratio") == pytest.approx(ratio(copies))
    assert got == "char_dup_ratio"


def test_char_dup_ratio_is_dropped_at_equality():
    line = "The bridge will open to traffic soon."  # 37 characters
    other = "x" * 295 + "."  # 296 characters: 37 / (37 + 296 + 37) = 0.1
    _, doc = judge([line, other, line])
    assert metric(doc, "char_dup_ratio") == pytest.approx(0.1)
    assert judge([line, other, line])[0] == "char_dup_ratio"
    assert judge([line, other, line], char_duplicates_ratio=0.11)[0] is None


def test_blank_lines_are_not_lines():
    reason, doc = judge(["", SENTENCES[0], "   ", "", SENTENCES[1], ""])
    assert reason is None and metric(doc, "lines") == 2 and metric(doc, "short_line_ratio") == 0


def test_a_page_without_text_is_empty():
    assert judge(["", "  ", ""])[0] == "empty"


def test_checks_in_order():
    # navigation only: fails all three; the first check names it
    assert judge(SHORT * 3)[0] == "line_punct_ratio"
    assert judge([s + "." for s in SHORT * 3])[0] == "short_line_ratio"


def test_metrics_match_a_reference_computation_on_real_pages():
    cc = cc_texts()
    stop = (".", "'", '"', "!", "?")
    reasons = []
    for text in cc:
        lines = [line for line in text.split("\n") if line.strip() != ""]
        n, got = quality_metrics(text, stop, 30)
        assert n == len(lines)
        if not lines:
            continue
        seen: set[str] = set()
        dup = 0
        for line in lines:  # datatrove's find_duplicates
            if line in seen:
                dup += len(line)
            seen.add(line)
        assert got == pytest.approx({
            "line_punct_ratio": sum(line.endswith(stop) for line in lines) / len(lines),
            "short_line_ratio": sum(len(line) <= 30 for line in lines) / len(lines),
            "char_dup_ratio": dup / len(text.replace("\n", "")),
        })
        reasons.append(fineweb().apply(Document("id", "u", text)))
    assert set(reasons) <= {None, *CHECKS}
    assert 0.3 < reasons.count(None) / len(reasons) < 0.9


def test_config_section_in_a_run_config():
    config = parse_config({"fineweb": {"enabled": True, "line_punct_thr": 0.2}})
    assert config.fineweb.enabled and config.fineweb.line_punct_thr == 0.2
    assert not parse_config({}).fineweb.enabled
    with pytest.raises(Exception, match="line_punct_ratio"):
        parse_config({"fineweb": {"line_punct_ratio": 0.2}})
    with pytest.raises(ValidationError):
        FineWebQualityConfig(short_line_thr=1.5)
    with pytest.raises(ValidationError):
        FineWebQualityConfig(stop_chars=[])
