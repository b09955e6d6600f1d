"""Sampled example documents and what to highlight in them."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from refine.filters import c4, fineweb
from refine.filters.lines import LineCorrectionConfig, LineCorrectionFilter
from refine.filters.quality import BULLETS, ELLIPSES
from refine.stages import C4, FINEWEB, LINES, QUALITY, REPETITION

Highlight = tuple[int, int, str]  # start, end (characters of the shown text), label
_WORDS = re.compile(r"\S+")
_NGRAM_REASON = re.compile(r"(top|dup)_(\d+)gram_char_frac")


class Reservoir:
    """Per group, the `size` rows with the smallest seeded random keys: a uniform sample that
    does not depend on how the rows were batched, only on their order and the seed."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.groups: dict[str, list[tuple[float, dict[str, Any]]]] = {}

    def offer(self, batch: pa.RecordBatch, codes: np.ndarray, names: list[str]) -> None:
        keys = self.rng.random(len(codes))
        if self.size <= 0:
            return
        for code in np.unique(codes):
            name = names[code]
            held = self.groups.setdefault(name, [])
            rows = np.flatnonzero(codes == code)
            if len(held) == self.size:
                rows = rows[keys[rows] < held[-1][0]]
            if len(rows) > self.size:
                rows = rows[np.argpartition(keys[rows], self.size)[: self.size]]
            if not len(rows):
                continue
            taken = batch.take(pa.array(rows)).to_pylist()
            held.extend(zip(keys[rows].tolist(), taken, strict=True))
            held.sort(key=lambda item: item[0])
            del held[self.size :]

    def rows(self, name: str) -> list[dict[str, Any]]:
        return [row for _, row in self.groups.get(name, [])]


def _line_spans(text: str) -> list[tuple[int, int, str]]:
    spans, start = [], 0
    for line in text.split("\n"):
        spans.append((start, start + len(line), line.strip()))
        start += len(line) + 1
    return spans


def _duplicate_lines(text: str) -> list[Highlight]:
    seen: set[str] = set()
    out = []
    for start, end, line in _line_spans(text):
        if line and line in seen:
            out.append((start, end, "duplicate line"))
        seen.add(line)
    return out


def _repeated_ngrams(text: str, n: int, top_only: bool) -> list[Highlight]:
    words = [(m.start(), m.end(), m.group()) for m in _WORDS.finditer(text)]
    grams = [tuple(w for _, _, w in words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    if not counts:
        return []
    if top_only:
        top = max(counts.values())
        wanted = {g for g, c in counts.items() if c == top and c > 1}
    else:
        wanted = {g for g, c in counts.items() if c > 1}
    covered = np.zeros(len(words) + 1, dtype=np.int64)
    for i, gram in enumerate(grams):
        if gram in wanted:
            covered[i] += 1
            covered[i + n] -= 1
    mask = np.cumsum(covered[:-1]) > 0
    out: list[Highlight] = []
    label = f"repeated {n}-gram"
    for i, (start, end, _) in enumerate(words):
        if mask[i]:
            if out and i and mask[i - 1]:
                out[-1] = (out[-1][0], end, label)
            else:
                out.append((start, end, label))
    return out


def highlights(stage: str, reason: str, text: str, config: dict[str, Any]) -> list[Highlight]:
    """What made `stage` drop the document, recomputed on the stored (possibly cut) text."""
    if stage == LINES.name and config.get(LINES.config_key):
        line_filter = LineCorrectionFilter(LineCorrectionConfig(**config[LINES.config_key]))
        return line_filter.line_flags(text)
    if stage == C4.name and config.get(C4.config_key):
        return c4.C4Filter(c4.C4Config(**config[C4.config_key])).line_flags(text)
    if stage == FINEWEB.name and config.get(FINEWEB.config_key):
        quality_filter = fineweb.FineWebQualityFilter(
            fineweb.FineWebQualityConfig(**config[FINEWEB.config_key]))
        return quality_filter.line_flags(text, reason)
    if stage == REPETITION.name:
        match = _NGRAM_REASON.fullmatch(reason)
        if match:
            return _repeated_ngrams(text, int(match.group(2)), match.group(1) == "top")
        return _duplicate_lines(text)
    if stage == QUALITY.name and reason == "bullet_line_frac":
        return [(s, e, "bullet line") for s, e, line in _line_spans(text)
                if line.startswith(BULLETS)]
    if stage == QUALITY.name and reason == "ellipsis_line_frac":
        return [(s, e, "ellipsis line") for s, e, line in _line_spans(text)
                if line.endswith(ELLIPSES)]
    return []
