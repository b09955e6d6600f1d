"""C4's filters as FineWeb applies them: every rule on both sides of its threshold or switch.

The lines are real: from the Common Crawl text sample in tests/data/text and pages like it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from refine.config import parse_config
from refine.document import Document
from refine.filters.c4 import LINE_RULES, C4Config, C4Filter, count_sentences

DATA = Path(__file__).parent / "data" / "text"


def cc_texts() -> list[str]:
    """The 697 Common Crawl documents of the text sample, as extracted."""
    with gzip.open(DATA / "cc-main-2019-30-text-sample.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]

# Five sentences on five lines, each ending in punctuation, with three words or more.
PROSE = [
    "The council met on Tuesday to discuss the new budget for local schools and roads.",
    "Several residents asked why the library would close two days a week.",
    "The mayor said the cuts were needed to balance the accounts this year.",
    "A final vote is expected at the next meeting in March.",
    "Members of the public may attend and speak for three minutes each.",
]


def c4(**settings) -> C4Filter:
    return C4Filter(C4Config(enabled=True, **settings))


def run(text: str, **settings) -> tuple[str | None, Document]:
    doc = Document("id", "https://example.org/", text)
    return c4(**settings).apply(doc), doc


def with_line(line: str, **settings) -> tuple[str | None, Document]:
    """The prose with `line` in the middle."""
    return run("\n".join([*PROSE[:2], line, *PROSE[2:]]), **settings)


def removed(doc: Document, rule: str) -> float:
    return doc.metrics[f"c4.{rule}_lines"]


def test_clean_prose_is_kept_unchanged_with_its_metrics():
    text = "\n".join(PROSE)
    reason, doc = run(text)
    assert reason is None
    assert doc.text is text
    assert doc.metrics == {
        "c4.lines": 5.0, "c4.lines_removed": 0.0, "c4.removed_words": 0.0,
        "c4.citations_removed": 0.0, "c4.sentences": 5.0,
        **{f"c4.{r}_lines": 0.0 for r in LINE_RULES},
    }


def test_disabled_does_nothing():
    doc = Document("id", "u", "Lorem ipsum dolor sit amet.")
    assert C4Filter(C4Config()).apply(doc) is None
    assert doc.metrics == {}


# --- line removals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("This slideshow requires JavaScript.", "javascript"),
        ("// Convert the JavaScript object to a JSON string.", "javascript"),
        ("By clicking “Post Your Answer”, you agree to our terms of service, privacy policy and "
         "cookie policy.", "policy"),
        ("We use cookies for various purposes including analytics.", "policy"),
        ("By continuing to use Pastebin, you agree to our use of cookies.", "policy"),
        ("Please read our Terms of Use before posting.", "policy"),
        ('"Don\'t Explain"', "too_few_words"),
        ("The Hanukkah Cookie Roundup is back.", None),  # "cookie" alone is no policy phrase
        ("The script is written in Java and runs on a server.", None),
    ],
)
def test_line_rules(line, rule):
    reason, doc = with_line(line)
    assert reason is None
    assert doc.metrics["c4.lines_removed"] == (rule is not None)
    if rule is None:
        assert line in doc.text.split("\n")
    else:
        assert removed(doc, rule) == 1
        assert doc.text == "\n".join(PROSE)
        assert doc.metrics["c4.removed_words"] == len(line.split())


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        ("filter_javascript", "This slideshow requires JavaScript."),
        ("filter_policy", "We use cookies for various purposes including analytics."),
    ],
)
def test_line_switches_off_keep_the_line(setting, line):
    reason, doc = with_line(line, **{setting: False})
    assert reason is None
    assert line in doc.text.split("\n")
    assert doc.metrics["c4.lines_removed"] == 0


def test_policy_substrings_are_configurable():
    line = "Read the house rules before you post a reply."
    assert with_line(line)[1].metrics["c4.policy_lines"] == 0
    reason, doc = with_line(line, policy_substrings=["House Rules"])
    assert reason is None and doc.metrics["c4.policy_lines"] == 1


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("Edit | Files | Tags | Source | Print", "no_terminal_punct"),
        ("More information about controlling these cookies can be found at The Bodleian "
         "Libraries and Cookies page", "no_terminal_punct"),
        ("The results were, as you might expect...", "no_terminal_punct"),  # an ellipsis
        ("He said it would be fine.", None),
        ("Was it worth the wait?", None),
        ("What a day it was!", None),
        ('She called it "a disaster for the town."', None),
        ("They called it 'the long winter.'", None),
        ("It was released on 18th February 2008 [4].", None),  # the citation is cut first
    ],
)
def test_terminal_punctuation(line, rule):
    reason, doc = with_line(line)
    assert reason is None
    assert removed(doc, "no_terminal_punct") == (rule is not None)
    # FineWeb's setting: the rule is off
    reason, doc = with_line(line, filter_no_terminal_punct=False)
    assert reason is None and doc.metrics["c4.lines_removed"] == 0


@pytest.mark.parametrize(
    ("line", "words", "kept"),
    [
        ("Hatch: I think you summed it up pretty well!", 3, True),
        ("Was it fun?", 3, True),  # three words: kept
        ("Sources below.", 3, False),  # two words: removed
        ("Sources below.", 2, True),
        ("Pequeña.", 0, True),  # 0: no line is too short
    ],
)
def test_min_words_per_line(line, words, kept):
    reason, doc = with_line(line, min_words_per_line=words)
    assert reason is None
    assert (line in doc.text.split("\n")) == kept
    assert removed(doc, "too_few_words") == (not kept)


def test_words_are_counted_before_citations_are_cut():
    # datatrove counts the words of the line as read: "[1]" is one of three
    reason, doc = with_line("Sources checked. [1]")
    assert reason is None and removed(doc, "too_few_words") == 0
    assert "Sources checked." in doc.text.split("\n")
    assert doc.metrics["c4.citations_removed"] == 1


@pytest.mark.parametrize(("length", "kept"), [(1000, True), (1001, False)])
def test_max_word_length(length, kept):
    line = "The hash is " + "f" * length + " in full."
    reason, doc = with_line(line)
    assert reason is None
    assert removed(doc, "too_long_word") == (not kept)
    reason, doc = with_line(line, max_word_length=None)
    assert removed(doc, "too_long_word") == 0


def test_citations_are_cut_from_kept_lines():
    line = ("Ironically, the only episode that did not go over-budget was \"The Return of "
            "Starbuck\".[2] It aired in May.[citation needed] Sources[edit] follow.")
    reason, doc = with_line(line)
    assert reason is None
    assert doc.metrics["c4.citations_removed"] == 3
    assert ("Ironically, the only episode that did not go over-budget was \"The Return of "
            "Starbuck\". It aired in May. Sources follow.") in doc.text.split("\n")
    reason, doc = with_line(line, remove_citations=False)
    assert line in doc.text.split("\n")


def test_paragraph_breaks_survive_and_removed_lines_leave_no_gap():
    text = (f"{PROSE[0]}\nThis slideshow requires JavaScript.\n{PROSE[1]}\n\n\n"
            f"Edit | Files | Tags | Source | Print\n\n{PROSE[2]}\n{PROSE[3]}\n{PROSE[4]}\n")
    reason, doc = run(text)
    assert reason is None
    assert doc.text == f"{PROSE[0]}\n{PROSE[1]}\n\n{PROSE[2]}\n{PROSE[3]}\n{PROSE[4]}"
    assert doc.metrics["c4.lines_removed"] == 2


def test_output_is_a_fixed_point():
    # (with citations cut, a line's words are counted before the cut: not a fixed point then)
    cc = cc_texts()
    f = c4(remove_citations=False)
    for text in cc:
        doc = Document("id", "u", text)
        if f.apply(doc) is None:
            again = Document("id", "u", doc.text)
            assert f.apply(again) is None
            assert again.text == doc.text and again.metrics["c4.lines_removed"] == 0


# --- document drops ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("Lorem ipsum dolor sit amet, consectetur adipiscing elit.", "lorem_ipsum"),
        ("LOREM IPSUM dolor sit amet.", "lorem_ipsum"),
        ("Lorem ipsum.", None),  # two words: the line is removed before the document rules
        ("Lorem, ipsum and dolor are placeholder words.", None),
        ("This template provides internationalization (i18n) support for the {{ElementUsage}} "
         "template, translating key phrases into other languages.", "curly_bracket"),
        ("Creas una plantilla de página, page-{slug}.php con la estructura que desees.",
         "curly_bracket"),
        ("Use {slug}.", None),  # two words: the line is removed first
        ("The value (in brackets) is [not] a problem.", None),
    ],
)
def test_document_rules(line, reason):
    got, doc = with_line(line)
    assert got == reason
    if reason is not None:
        assert doc.text == "\n".join([*PROSE[:2], line, *PROSE[2:]])  # not rewritten
        setting = "filter_lorem_ipsum" if reason == "lorem_ipsum" else "filter_curly_bracket"
        assert with_line(line, **{setting: False})[0] is None


def test_rules_see_lines_without_their_citations():
    assert with_line("Please enable Java[1]Script to view the map.")[1].metrics[
        "c4.javascript_lines"] == 1
    assert with_line("The lorem[2] ipsum text fills the page.")[0] == "lorem_ipsum"
    assert with_line("The lorem[2] ipsum text fills the page.", remove_citations=False)[0] is None


def test_document_rules_only_see_lines_that_survive_the_line_rules():
    # a "{" in a line without terminal punctuation: C4 removes the line, not the page
    line = "int main() { return 0; }"
    assert with_line(line)[0] is None
    assert with_line(line, filter_no_terminal_punct=False)[0] == "curly_bracket"


@pytest.mark.parametrize(("sentences", "minimum", "reason"), [
    (5, 5, None), (4, 5, "too_few_sentences"), (4, 4, None), (0, 0, None),
])
def test_min_num_sentences(sentences, minimum, reason):
    text = "\n".join(PROSE[:sentences])
    got, doc = run(text, min_num_sentences=minimum)
    assert got == reason
    assert doc.metrics["c4.sentences"] == sentences


def test_sentences_are_counted_in_the_kept_lines_only():
    text = "\n".join([*PROSE[:4], "This slideshow requires JavaScript.", "Edit | Files | Tags"])
    got, doc = run(text)
    assert got == "too_few_sentences"
    assert doc.metrics["c4.sentences"] == 4
    assert doc.metrics["c4.lines_removed"] == 2


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("The council met. The mayor spoke! Was it fair? Nobody knew.", 4),
        ("Mr. Smith met Dr. Jones in St. Louis on Jan. 5 this year.", 1),
        ("He met J. R. R. Tolkien once. It was in 1954.", 2),
        ("Cities, e.g. Paris, were listed. Prices rose 2.5 percent.", 2),
        ("It was fine. then it rained.", 1),  # a lowercase start is no new sentence
        ("“It is over.” She left. (He stayed.) They never met again.", 4),
        ("Wait... What?! No. It cannot be.", 4),
        ("First line without a full stop\nSecond line, also without one", 2),
        ("", 0),
    ],
)
def test_count_sentences(text, n):
    assert count_sentences(text) == n


# --- real text and config -----------------------------------------------------------------------


def test_real_text_news_is_kept_and_web_pages_lose_their_boilerplate():
    news = [line.strip() for line in (DATA / "lee-news-background.txt").read_text().split("\n")
            if line.strip()]
    cc = cc_texts()
    f = c4(filter_no_terminal_punct=False, remove_citations=False)
    kept_news = sum(f.apply(Document("id", "u", text)) is None for text in news)
    assert kept_news / len(news) > 0.9  # a news article is prose
    reasons = [f.apply(Document("id", "u", text)) for text in cc]
    assert {r for r in reasons if r} <= {"too_few_sentences", "curly_bracket", "lorem_ipsum"}
    assert 0.5 < reasons.count(None) / len(cc) < 0.95
    for text in cc:
        doc = Document("id", "u", text)
        if f.apply(doc) is None:
            for line in filter(None, map(str.strip, doc.text.splitlines())):
                low = line.lower()
                assert len(line.split()) >= 3 and "javascript" not in low and "{" not in line
                assert "privacy policy" not in low and "use cookies" not in low


def test_config_section_in_a_run_config():
    config = parse_config({"c4": {"enabled": True, "min_num_sentences": 3}})
    assert config.c4.enabled and config.c4.min_num_sentences == 3
    assert not parse_config({}).c4.enabled  # off unless a config turns it on
    with pytest.raises(Exception, match="min_sentences"):
        parse_config({"c4": {"min_sentences": 3}})
    with pytest.raises(ValidationError):
        C4Config(min_num_sentences=-1)
