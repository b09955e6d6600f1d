"""RefinedWeb line-wise corrections (Penedo et al. 2023, arXiv:2306.01116, section 3.2 / appendix).

Each non-blank line is dropped when it is mostly uppercase, only numeric (no letter at all:
digits, punctuation, symbols and whitespace only), a counter ("3 likes", "Views: 1,234") or a
single word. A short line (at most `short_line_max_words` words) is also edited, with the paper's
three kinds of pattern: `boilerplate_phrases` are removed at its start ("sign in") or end ("read
more"), `boilerplate_anywhere_phrases` wherever they occur ("items in cart"); the rest of it is
checked again by the rules above, and the line is dropped if nothing remains. The document is
dropped when the words of its flagged lines (removed or edited: every word of such a line
counts, as the paper measures "the corrections") exceed `max_removed_word_frac` of its words.
When kept, its text is rewritten with the kept lines (runs of blank lines left by removals
collapse to one blank line).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from refine.document import Document, Threshold, first_failure
from refine.stages import LINES

RULES = ("uppercase", "numeric", "counter", "single_word", "boilerplate")

DEFAULT_COUNTER_WORDS = (
    "like", "likes", "comment", "comments", "view", "views", "share", "shares", "reply",
    "replies", "retweet", "retweets", "tweet", "tweets", "follower", "followers", "following",
    "vote", "votes", "upvote", "upvotes", "point", "points", "review", "reviews", "favorite",
    "favorites", "favourite", "favourites", "download", "downloads", "post", "posts", "answer",
    "answers", "read", "reads", "subscriber", "subscribers", "hit", "hits", "click", "clicks",
    "pin", "pins", "reaction", "reactions", "member", "members", "note", "notes", "visit",
    "visits", "visitor", "visitors", "response", "responses", "repost", "reposts", "reblog",
    "reblogs", "star", "stars", "fork", "forks", "watcher", "watchers", "recommendation",
    "recommendations", "trackback", "trackbacks", "pingback", "pingbacks",
)  # fmt: skip

DEFAULT_BOILERPLATE_PHRASES = (
    "sign in", "sign-in", "sign up", "sign-up", "log in", "log-in", "login", "log out", "logout",
    "create an account", "my account", "forgot your password?", "forgot password",
    "read more", "continue reading", "read full article", "read the full article",
    "skip to content", "skip to main content",
    "skip to navigation", "jump to navigation", "toggle navigation", "share this",
    "share this article", "share this post", "share on facebook", "share on twitter",
    "click here", "back to top", "scroll to top", "subscribe", "subscribe now",
    "subscribe to our newsletter", "follow us", "previous post", "next post", "previous article",
    "next article", "leave a comment", "leave a reply", "post a comment", "print this page",
    "posted in", "cookie policy", "accept cookies", "we use cookies", "privacy policy",
    "terms of use", "terms and conditions", "all rights reserved", "jump to search",
    "login to comment", "log in to comment", "log in to reply",
)  # fmt: skip

# Removed wherever they occur in a short line (the paper's example: "items in cart").
DEFAULT_ANYWHERE_PHRASES = (
    "items in cart", "item in cart", "items in your cart", "view cart", "your cart is empty",
    "add to cart", "add to wishlist", "add to basket",
)  # fmt: skip

_SEPARATORS = "\\s|·•»«>/:–—-"  # chars (regex class body) that join phrases to the line's rest
_LETTER = re.compile(r"[^\W\d_]").search
# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, CJK, kana): a line of
# them is one whitespace token however many words it has, so the single-word rule skips it.
_UNSEGMENTED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
).search
_COUNTER_MAX_WORDS, _COUNTER_MAX_CHARS = 16, 200  # longer lines are never counters
_BLANK_RUNS = re.compile(r"\n(?:[^\S\n]*\n){2,}")
_ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DEL_LETTERS = str.maketrans("", "", _ASCII_LETTERS)
_DEL_UPPER = str.maketrans("", "", _ASCII_LETTERS[26:])


def _alternation(phrases: list[str]) -> str:
    """Regex alternation of `phrases` (longest first; inner whitespace matches any whitespace)."""
    pats = [r"\s+".join(map(re.escape, p.split())) for p in sorted(phrases, key=len, reverse=True)]
    return "|".join(pats)


def _mostly_upper(line: str, max_frac: float) -> bool:
    """Whether uppercase letters are more than `max_frac` of the letters of `line`."""
    if line.isascii():
        n = len(line)
        letters = n - len(line.translate(_DEL_LETTERS))
        upper = n - len(line.translate(_DEL_UPPER))
    elif line.lower() == line:  # no uppercase letter (covers scripts without case)
        return False
    else:
        letters = sum(map(str.isalpha, line))
        upper = sum(map(str.isupper, line))
    return letters > 0 and upper > max_frac * letters


def _word_list(v: list[str]) -> list[str]:
    out = [" ".join(w.lower().split()) for w in v]
    if not all(out):
        raise ValueError("entries must be non-empty")
    return out


class LineCorrectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_uppercase_frac: float = Field(0.5, ge=0.0, le=1.0)
    short_line_max_words: int = Field(10, ge=0)
    max_removed_word_frac: float = Field(0.05, ge=0.0, le=1.0)
    counter_words: list[str] = Field(default_factory=lambda: list(DEFAULT_COUNTER_WORDS))
    boilerplate_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BOILERPLATE_PHRASES)
    )
    boilerplate_anywhere_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ANYWHERE_PHRASES)
    )

    @field_validator("boilerplate_phrases", "boilerplate_anywhere_phrases")
    @classmethod
    def _phrases(cls, v: list[str]) -> list[str]:
        return _word_list(v)

    @field_validator("counter_words")
    @classmethod
    def _counter_words(cls, v: list[str]) -> list[str]:
        out = _word_list(v)
        if any(" " in w for w in out):
            raise ValueError("counter words must be single words")
        return out


# The one document-level check (`LineCorrectionFilter.apply`; the report's what-if moves it).
THRESHOLDS = (
    Threshold(f"{LINES.prefix}removed_word_frac", "max_removed_word_frac", "max",
              "too_many_words_removed"),
)


class LineCorrectionFilter:
    """RefinedWeb line-wise corrections; rewrites ``doc.text`` when the document is kept.

    Metrics (``line_corrections.`` + ): removed_word_frac, removed_words, lines_removed,
    lines_edited, and ``<rule>_lines`` for each rule in `RULES` (lines removed by that rule).
    Reason: ``too_many_words_removed``.
    """

    name = LINES.metrics

    def __init__(self, config: LineCorrectionConfig | None = None) -> None:
        c = self.config = config or LineCorrectionConfig()
        self._max_upper = c.max_uppercase_frac
        self._short = c.short_line_max_words
        # "7", "1,234", "10 000", "1.2k"; atomic: no backtracking into long digit runs.
        num = r"(?>\d+(?:[.,\s]\d{3})*(?:[.,]\d+)?)[kKmM+]?"
        words = _alternation(c.counter_words) or r"(?!)"
        counter = rf"(?:{num}\s*(?:{words})(?![^\W_])|(?:{words})[\s:=(\[]*{num})"
        self._counter = re.compile(rf"[\W_]*{counter}(?:[\W_]+{counter})*[\W_]*", re.I).fullmatch
        phrases = _alternation(c.boilerplate_phrases)
        # Phrases at the end are matched, anchored, on the reversed line with reversed phrases.
        rev = _alternation([p[::-1] for p in c.boilerplate_phrases])
        if phrases:
            self._bp_start = re.compile(
                rf"[\W_]*(?:(?:{phrases})(?![^\W_])[{_SEPARATORS}]*)+", re.I
            ).match
            self._bp_end = re.compile(
                rf"[\W_]*(?:(?<![^\W_])(?:{rev})(?![^\W_])[{_SEPARATORS}]*)+", re.I
            ).match
        else:
            self._bp_start = self._bp_end = None
        anywhere = _alternation(c.boilerplate_anywhere_phrases)
        self._bp_anywhere = re.compile(
            rf"[,;{_SEPARATORS}]*(?<![^\W_])(?:{anywhere})(?![^\W_])[,;{_SEPARATORS}]*", re.I
        ).subn if anywhere else None
        self._keys = {
            **{r: f"{self.name}.{r}_lines" for r in RULES},
            "removed_word_frac": f"{self.name}.removed_word_frac",
            "removed_words": f"{self.name}.removed_words",
            "lines_removed": f"{self.name}.lines_removed",
            "lines_edited": f"{self.name}.lines_edited",
        }

    def _drop_rule(self, line: str, n_words: int) -> str | None:
        if not _LETTER(line):  # only digits, punctuation, symbols and whitespace
            return "numeric"
        if _mostly_upper(line, self._max_upper):
            return "uppercase"
        if (
            n_words <= _COUNTER_MAX_WORDS
            and len(line) <= _COUNTER_MAX_CHARS
            and self._counter(line)
        ):
            return "counter"
        if n_words == 1 and not _UNSEGMENTED(line):
            return "single_word"
        return None

    def _strip_boilerplate(self, line: str) -> str | None:
        """`line` without boilerplate phrases (at its ends, or anywhere for the anywhere
        phrases), or None when it has none."""
        edited = False
        rest = line
        if self._bp_start is not None:
            m = self._bp_start(rest)
            if m:
                rest = rest[m.end() :]
            e = self._bp_end(rest[::-1])
            if e:
                rest = rest[: len(rest) - e.end()]
            edited = bool(m or e)
        if self._bp_anywhere is not None:
            rest, found = self._bp_anywhere(" ", rest)
            edited = edited or found > 0
        return rest if edited else None

    def correct_lines(self, text: str) -> tuple[str, int, dict[str, int]]:
        """Apply the line rules to `text`.

        Returns (corrected text, words of flagged lines, counts) where counts has the lines
        removed per rule in `RULES` and ``"edited"``, the lines kept with a boilerplate phrase
        stripped. Every word of an edited line counts as corrected, as the paper counts.
        The text is returned unchanged (the same object) when no line is removed or edited."""
        counts = dict.fromkeys((*RULES, "edited"), 0)
        out: list[str] = []
        removed = 0
        for line in text.split("\n"):
            n = len(line.split())
            if not n:
                out.append(line)
                continue
            rule = self._drop_rule(line, n)
            if rule is None and n <= self._short:
                rest = self._strip_boilerplate(line)
                if rest is not None:
                    n_rest = len(rest.split())
                    rule = self._drop_rule(rest, n_rest) if n_rest else "boilerplate"
                    if rule is None:
                        counts["edited"] += 1
                        removed += n
                        line = rest.strip()
            if rule is None:
                out.append(line)
            else:
                counts[rule] += 1
                removed += n
        if not removed and not counts["edited"]:
            return text, 0, counts
        return _BLANK_RUNS.sub("\n\n", "\n".join(out)).strip("\n"), removed, counts

    def line_flags(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, rule) character spans of the lines `correct_lines` drops or edits
        ("edited": a boilerplate phrase was stripped), for the report's highlights."""
        flags: list[tuple[int, int, str]] = []
        start = 0
        for line in text.split("\n"):
            end = start + len(line)
            n = len(line.split())
            rule = self._drop_rule(line, n) if n else None
            if n and rule is None and n <= self._short:
                rest = self._strip_boilerplate(line)
                if rest is not None:
                    n_rest = len(rest.split())
                    rule = (self._drop_rule(rest, n_rest) or "edited") if n_rest else "boilerplate"
            if rule is not None:
                flags.append((start, end, rule))
            start = end + 1
        return flags

    def apply(self, doc: Document) -> str | None:
        if not self.config.enabled:
            return None
        total = len(doc.text.split())
        new_text, removed, counts = self.correct_lines(doc.text)
        frac = removed / total if total else 0.0
        k = self._keys
        m = doc.metrics
        m[k["removed_word_frac"]] = frac
        m[k["removed_words"]] = float(removed)
        m[k["lines_removed"]] = float(sum(counts[r] for r in RULES))
        m[k["lines_edited"]] = float(counts["edited"])
        for r in RULES:
            m[k[r]] = float(counts[r])
        reason = first_failure(THRESHOLDS, m, self.config)
        if reason is None:
            doc.text = new_text
        return reason
