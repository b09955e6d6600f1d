"""Gopher repetition removal (Rae et al. 2021, MassiveText appendix A.1.1), as used by RefinedWeb.

Lines are the non-empty (whitespace-stripped) lines of the text; paragraphs the non-empty chunks
between runs of two or more newlines; words the whitespace-separated tokens. A line or paragraph is
a duplicate when it occurred earlier in the document (the first occurrence is not counted); char
fractions are over the chars of all lines (paragraphs). n-gram character counts follow Gopher: the
characters of the words in the n-gram (sum of word lengths) over the characters of all words.

- top n-gram (n = 2..4): chars of the most frequent n-gram (ties: the longest) times its count,
  when it occurs more than once; capped at 1 (overlapping occurrences of "a a a").
- duplicate n-grams (n = 5..10): chars of every word covered by an occurrence, first included, of
  any n-gram occurring more than once, each word counted once.

Every fraction is recorded; the first one over its threshold (strictly greater) is the reason.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import accumulate, compress, count

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from refine.document import Document, Threshold, first_failure
from refine.stages import REPETITION

_PARAGRAPH_SPLIT = re.compile(r"\n[^\S\n]*\n\s*")
_RUNS = re.compile(rb"\x01+").finditer

TOP_NGRAM_SIZES = (2, 3, 4)
DUP_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)
MAX_N = DUP_NGRAM_SIZES[-1]
NUMPY_MIN_WORDS = 200  # below this the pure-Python n-gram path is faster (crossover ~150-250)


class RepetitionConfig(BaseModel):
    """Drop a document when any measured fraction is strictly greater than its threshold."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    dup_line_frac: float = Field(0.30, ge=0.0, le=1.0)
    dup_para_frac: float = Field(0.30, ge=0.0, le=1.0)
    dup_line_char_frac: float = Field(0.20, ge=0.0, le=1.0)
    dup_para_char_frac: float = Field(0.20, ge=0.0, le=1.0)
    top_2gram_char_frac: float = Field(0.20, ge=0.0, le=1.0)
    top_3gram_char_frac: float = Field(0.18, ge=0.0, le=1.0)
    top_4gram_char_frac: float = Field(0.16, ge=0.0, le=1.0)
    dup_5gram_char_frac: float = Field(0.15, ge=0.0, le=1.0)
    dup_6gram_char_frac: float = Field(0.14, ge=0.0, le=1.0)
    dup_7gram_char_frac: float = Field(0.13, ge=0.0, le=1.0)
    dup_8gram_char_frac: float = Field(0.12, ge=0.0, le=1.0)
    dup_9gram_char_frac: float = Field(0.11, ge=0.0, le=1.0)
    dup_10gram_char_frac: float = Field(0.10, ge=0.0, le=1.0)


# Metric (and reason) names, in the order they are checked.
CHECKS: tuple[str, ...] = (
    "dup_line_frac",
    "dup_para_frac",
    "dup_line_char_frac",
    "dup_para_char_frac",
    *(f"top_{n}gram_char_frac" for n in TOP_NGRAM_SIZES),
    *(f"dup_{n}gram_char_frac" for n in DUP_NGRAM_SIZES),
)

# Every check fails when its fraction is over the threshold; `RepetitionFilter.apply` checks them
# in this order (and the report's what-if moves them).
THRESHOLDS = tuple(Threshold(f"{REPETITION.prefix}{c}", c, "max", c) for c in CHECKS)


def _dup_fracs(items: list[str]) -> tuple[float, float]:
    """(duplicate items / items, chars in duplicate items / chars in all items)."""
    if not items:
        return 0.0, 0.0
    unique = set(items)
    total_chars = sum(map(len, items))
    dup_chars = total_chars - sum(map(len, unique))
    n_dup = len(items) - len(unique)
    return n_dup / len(items), (dup_chars / total_chars if total_chars else 0.0)


def _next_ids(prev: list[int], word_ids: list[int], n: int) -> list[int]:
    """Ids of the n-grams starting at each position, from the ids of the (n-1)-grams there.

    Equal n-grams get equal ids, different ones different ids (ids need not be dense)."""
    table: dict[tuple[int, int], int] = {}
    return list(map(table.setdefault, zip(prev, word_ids[n - 1 :], strict=False), count()))


def _ngram_chars_py(words: list[str]) -> tuple[int, dict[int, int]]:
    """(chars of all words, {n: top n-gram chars (n <= 4) or duplicate n-gram chars (n >= 5)})."""
    prefix = list(accumulate(map(len, words), initial=0))  # prefix[i]: chars of words[:i]
    vocab: dict[str, int] = {}
    word_ids = list(map(vocab.setdefault, words, count()))
    ids = word_ids
    out: dict[int, int] = {}
    for n in range(2, MAX_N + 1):
        if n > TOP_NGRAM_SIZES[-1] and not out[n - 1]:
            out[n] = 0  # a repeated n-gram implies repeated (n-1)-grams
            continue
        ids = _next_ids(ids, word_ids, n)
        counts = Counter(ids)
        out[n] = 0
        if n in TOP_NGRAM_SIZES:
            top = max(counts.values(), default=0)
            if top > 1:
                tied = compress(range(len(ids)), map(top.__eq__, map(counts.__getitem__, ids)))
                out[n] = top * max(prefix[i + n] - prefix[i] for i in tied)
        elif len(counts) < len(ids):
            # Runs a..b of consecutive starts of repeated n-grams cover the words [a, b + n).
            flags = bytes(map((1).__lt__, map(counts.__getitem__, ids)))
            covered_to = 0  # words [0, covered_to) already counted
            for run in _RUNS(flags):
                end = run.end() - 1 + n
                out[n] += prefix[end] - prefix[max(run.start(), covered_to)]
                covered_to = end
    return prefix[-1], out


def _ngram_chars_np(words: list[str]) -> tuple[int, dict[int, int]]:
    """Same as `_ngram_chars_py`, vectorised: faster from a few hundred words on."""
    n_words = len(words)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
    prefix = np.zeros(n_words + 1, dtype=np.int64)
    np.cumsum(lens, out=prefix[1:])
    vocab: dict[str, int] = {}
    word_ids = np.fromiter(map(vocab.setdefault, words, count()), dtype=np.int64, count=n_words)
    ids = word_ids
    out: dict[int, int] = {}
    for n in range(2, MAX_N + 1):
        out[n] = 0
        if n > n_words or (n > TOP_NGRAM_SIZES[-1] and not out[n - 1]):
            continue
        # ids < n_words and word ids < n_words, so this pairs them without collisions.
        keys = ids[:-1] * n_words + word_ids[n - 1 :]
        _, ids, counts = np.unique(keys, return_inverse=True, return_counts=True)
        occurrences = counts[ids]  # of the n-gram starting at each position
        if n in TOP_NGRAM_SIZES:
            top = int(counts.max())
            if top > 1:
                tied = np.flatnonzero(occurrences == top)
                out[n] = top * int((prefix[tied + n] - prefix[tied]).max())
        else:
            starts = np.flatnonzero(occurrences > 1)
            if len(starts):
                depth = np.zeros(n_words + 1, dtype=np.int64)  # n-grams covering each word
                depth[starts] += 1
                depth[starts + n] -= 1
                out[n] = int(lens[np.cumsum(depth[:-1]) > 0].sum())
    return int(prefix[-1]), out


def repetition_metrics(text: str) -> dict[str, float]:
    """All Gopher repetition fractions of `text`, keyed by the names in `CHECKS`."""
    lines = [s for s in map(str.strip, text.split("\n")) if s]
    paras = [s for s in map(str.strip, _PARAGRAPH_SPLIT.split(text)) if s]
    m: dict[str, float] = {}
    m["dup_line_frac"], m["dup_line_char_frac"] = _dup_fracs(lines)
    m["dup_para_frac"], m["dup_para_char_frac"] = _dup_fracs(paras)
    words = text.split()
    ngram_chars = _ngram_chars_np if len(words) >= NUMPY_MIN_WORDS else _ngram_chars_py
    total, chars = ngram_chars(words)
    for n in TOP_NGRAM_SIZES:
        # Overlapping occurrences ("a a a") can count a word twice: cap at 1.
        m[f"top_{n}gram_char_frac"] = min(1.0, chars[n] / total) if total else 0.0
    for n in DUP_NGRAM_SIZES:
        m[f"dup_{n}gram_char_frac"] = chars[n] / total if total else 0.0
    return m


class RepetitionFilter:
    """Gopher repetition removal. Metrics: ``gopher_repetition.<check>`` for each of `CHECKS`;
    the reason for a drop is the name of the first check over its threshold."""

    name = REPETITION.metrics

    def __init__(self, config: RepetitionConfig | None = None) -> None:
        self.config = config or RepetitionConfig()
        self._keys = {c: f"{self.name}.{c}" for c in CHECKS}

    def apply(self, doc: Document) -> str | None:
        if not self.config.enabled:
            return None
        m = repetition_metrics(doc.text)
        keys = self._keys
        values = {keys[c]: v for c, v in m.items()}
        doc.metrics.update(values)
        return first_failure(THRESHOLDS, values, self.config)


__all__ = ["CHECKS", "THRESHOLDS", "RepetitionConfig", "RepetitionFilter", "repetition_metrics"]
