"""C4's heuristic filters (Raffel et al. 2020, arXiv:1910.10683, section 2.2), as FineWeb applies
them (Penedo et al. 2024, arXiv:2406.17557; datatrove's ``C4QualityFilter``).

The text is taken line by line (``str.splitlines``; blank lines are not lines here and are kept as
paragraph breaks). Each line, whitespace-stripped, goes through these rules in order; the first
that matches removes it (line rules) or drops the whole document (document rules):

1. ``too_long_word`` (line): a word longer than `max_word_length` characters.
2. Citation markers (``[1]``, ``[edit]``, ``[citation needed]``) are cut from the line
   (`remove_citations`; not a removal).
3. ``no_terminal_punct`` (line, `filter_no_terminal_punct`): the line does not end in one of
   ``. ? ! " '``, or ends in ``...``. FineWeb switched this rule off (by far the most
   destructive in their ablations); the ``fineweb`` stage's ``line_punct_ratio`` replaces it.
4. ``too_few_words`` (line): fewer than `min_words_per_line` words.
5. ``lorem_ipsum`` (document, `filter_lorem_ipsum`): "lorem ipsum" in the line (any case).
6. ``javascript`` (line, `filter_javascript`): "javascript" in the line (any case).
7. ``curly_bracket`` (document, `filter_curly_bracket`): a ``{`` in the line.
8. ``policy`` (line, `filter_policy`): one of `policy_substrings` in the line (any case): "terms of
   use", "privacy policy", cookie notices.

The document rules look only at the lines that survived rules 1-4 (as in datatrove), and the first
one met ends the scan. A document that survives is dropped as ``too_few_sentences`` when its kept
lines hold fewer than `min_num_sentences` sentences. Otherwise, when a line was removed or a
citation cut, its text becomes the kept lines (stripped; runs of blank lines collapse to one).

Sentences are counted without a trained tokenizer (datatrove uses NLTK's Punkt): each kept line is
one sentence plus one per internal boundary, a run of ``.``, ``!``, ``?`` or ``…`` (with closing
quotes or brackets) followed by a space and a word not starting with a lowercase ASCII letter,
unless the ``.`` ends a single letter ("J. Smith", "e.g. Paris") or a common abbreviation ("Mr.").

Deviation from datatrove: a line is stripped again after its citations are cut, so "done. [1]"
ends in punctuation.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from refine.document import Document, Threshold, first_failure
from refine.stages import C4

STAGE = C4.name

LINE_RULES = ("too_long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")
DOC_RULES = ("lorem_ipsum", "curly_bracket")  # reasons, as is too_few_sentences
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
DEFAULT_POLICY_SUBSTRINGS = (
    "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
    "use cookies",
)  # fmt: skip
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")

# Abbreviations whose "." does not end a sentence (lowercase, without the dot).
ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "inc", "ltd", "co",
    "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "fig", "figs", "vol", "approx", "dept", "est", "gen", "gov", "sen", "rep", "rev", "capt",
    "lt", "col", "sgt",
))  # fmt: skip
# A sentence boundary inside a line: end punctuation (the last of a run), closing quotes or
# brackets, spaces (no newline), then what may start a sentence: not a lowercase ASCII letter.
_BOUNDARY = re.compile(r"[.!?…][\"'”’»)\]]*[^\S\n]+(?=[^\W_a-z]|[\"'“‘«(\[])")
_LAST_WORD = re.compile(r"\w*\Z")
_END = frozenset(".!?…")


def count_sentences(text: str) -> int:
    """Sentences in `text`: one per non-blank line plus one per boundary inside a line."""
    n = sum(1 for line in text.split("\n") if line.strip())
    for m in _BOUNDARY.finditer(text):
        start = m.start()
        if text[start] == "." and (start == 0 or text[start - 1] not in _END):
            # a lone "." after a single letter ("J. Smith") or an abbreviation: no boundary
            word = _LAST_WORD.search(text, max(0, start - 8), start).group()
            if len(word) == 1 or word.lower() in ABBREVIATIONS:
                continue
        n += 1
    return n


class C4Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False  # off in the refinedweb preset; configs/fineweb.yaml turns it on
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True  # C4's rule; FineWeb sets it false
    min_words_per_line: int = Field(3, ge=0)  # 0: no line is too short
    max_word_length: int | None = Field(1000, ge=1)  # null: no word is too long
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    policy_substrings: list[str] = Field(default_factory=lambda: list(DEFAULT_POLICY_SUBSTRINGS))
    min_num_sentences: int = Field(5, ge=0)  # 0 disables the check

    @field_validator("policy_substrings")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        out = [s.lower() for s in v]
        if not all(s.strip() for s in out):
            raise ValueError("policy substrings must be non-empty")
        return out


# The one thresholded document check (`C4Filter.apply`; the report's what-if moves it).
THRESHOLDS = (
    Threshold(f"{C4.prefix}sentences", "min_num_sentences", "min", "too_few_sentences",
              integer=True),
)


class C4Filter:
    """C4's line removals and document drops; rewrites ``doc.text`` when it removes a line.

    Metrics (``c4.`` + ): lines (non-blank lines read), lines_removed, removed_words (words of the
    removed lines), ``<rule>_lines`` for each of `LINE_RULES`, citations_removed, sentences (in
    the kept lines). For a document dropped by lorem_ipsum or curly_bracket the counts cover the
    lines up to the one that dropped it. Reasons: lorem_ipsum, curly_bracket, too_few_sentences.
    """

    name = C4.metrics

    def __init__(self, config: C4Config | None = None) -> None:
        c = self.config = config or C4Config()
        self._policy = (re.compile("|".join(map(re.escape, c.policy_substrings))).search
                        if c.filter_policy and c.policy_substrings else None)
        self._keys = {k: f"{self.name}.{k}" for k in (
            "lines", "lines_removed", "removed_words", "citations_removed", "sentences",
            *(f"{r}_lines" for r in LINE_RULES))}

    def scan(self, text: str) -> tuple[list[tuple[int, str, str | None]], dict[str, int],
                                        str | None]:
        """The rules over `text`: ([(line index, cleaned line, rule or None)] for its lines up to
        where the scan ended (blank lines as "" with no rule), counts, document reason or None).
        The rule of a line is one of `LINE_RULES`, or of `DOC_RULES` for the line that dropped
        the document. counts: lines removed per rule, "lines" (non-blank lines scanned),
        "removed_words", "citations_removed"."""
        c = self.config
        # Whole-text tests first: most documents hold no "javascript", "{", "[" at all. (On the
        # text without citations, as the lines are tested: "java[1]script" is "javascript".)
        max_len = c.max_word_length if c.max_word_length is not None else -1
        cite = c.remove_citations and "[" in text
        lower = (CITATION.sub("", text) if cite else text).lower()
        lorem = c.filter_lorem_ipsum and "lorem ipsum" in lower
        js = c.filter_javascript and "javascript" in lower
        curly = c.filter_curly_bracket and "{" in text
        policy = self._policy if self._policy is not None and self._policy(lower) else None
        end_punct = c.filter_no_terminal_punct
        min_words = c.min_words_per_line
        counts = dict.fromkeys(("lines", "citations_removed", "removed_words", *LINE_RULES), 0)
        out: list[tuple[int, str, str | None]] = []
        for index, raw in enumerate(text.splitlines()):
            line = raw.strip()
            if not line:
                out.append((index, "", None))
                continue
            counts["lines"] += 1
            rule = None
            if max_len >= 0 and len(line) > max_len and any(len(w) > max_len
                                                            for w in line.split()):
                rule = "too_long_word"
            else:
                if cite:
                    line, cut = CITATION.subn("", line)
                    if cut:
                        counts["citations_removed"] += cut
                        line = line.strip()
                if end_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                    rule = "no_terminal_punct"
                elif min_words and len(raw.split(None, min_words - 1)) < min_words:
                    rule = "too_few_words"  # words before the citations were cut, as datatrove
                elif lorem or js or curly or policy:
                    low = line.lower()
                    if lorem and "lorem ipsum" in low:
                        out.append((index, line, "lorem_ipsum"))
                        return out, counts, "lorem_ipsum"
                    if js and "javascript" in low:
                        rule = "javascript"
                    elif curly and "{" in line:
                        out.append((index, line, "curly_bracket"))
                        return out, counts, "curly_bracket"
                    elif policy is not None and policy(low):
                        rule = "policy"
            if rule is not None:
                counts[rule] += 1
                counts["removed_words"] += len(raw.split())
            out.append((index, line, rule))
        return out, counts, None

    def line_flags(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, rule) character spans of the lines of `text` that `scan` removes, and of
        the line that drops the document, for the report's highlights."""
        starts, pos = [], 0
        for raw in text.splitlines(keepends=True):
            starts.append((pos, pos + len(raw.rstrip("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))))
            pos += len(raw)
        lines, _, _ = self.scan(text)
        return [(*starts[i], rule) for i, _, rule in lines if rule is not None]

    def apply(self, doc: Document) -> str | None:
        c = self.config
        if not c.enabled:
            return None
        lines, counts, reason = self.scan(doc.text)
        kept = [line for _, line, rule in lines if rule is None]
        removed = sum(counts[r] for r in LINE_RULES)
        sentences = count_sentences("\n".join(kept))
        k, m = self._keys, doc.metrics
        m[k["lines"]] = float(counts["lines"])
        m[k["lines_removed"]] = float(removed)
        m[k["removed_words"]] = float(counts["removed_words"])
        for rule in LINE_RULES:
            m[k[f"{rule}_lines"]] = float(counts[rule])
        m[k["citations_removed"]] = float(counts["citations_removed"])
        m[k["sentences"]] = float(sentences)
        if reason is not None:
            return reason
        reason = first_failure(THRESHOLDS, m, self.config)
        if reason is not None:
            return reason
        if removed or counts["citations_removed"]:
            doc.text = _join(kept)
        return None


def _join(kept: list[str]) -> str:
    """The kept lines (blank ones included): runs of blank lines collapse to one, none at the
    ends, so a paragraph break survives and a removed line leaves no gap."""
    out: list[str] = []
    blank = False
    for line in kept:
        if not line:
            blank = bool(out)
        else:
            if blank:
                out.append("")
                blank = False
            out.append(line)
    return "\n".join(out)


__all__ = ["DOC_RULES", "LINE_RULES", "STAGE", "THRESHOLDS", "C4Config", "C4Filter",
           "count_sentences"]
