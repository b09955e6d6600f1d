"""FineWeb's own quality heuristics (Penedo et al. 2024, arXiv:2406.17557, section 3.3; datatrove's
``FineWebQualityFilter``).

Lines are the non-blank lines of the text split on ``\\n`` (kept as they are, not stripped). In
this order, a document is dropped when:

``line_punct_ratio``
    the fraction of its lines ending in one of `stop_chars` is <= `line_punct_thr` (0.12);
``short_line_ratio``
    the fraction of its lines of at most `short_line_length` (30) characters is >=
    `short_line_thr` (0.67);
``char_dup_ratio``
    the characters of its duplicated lines (every occurrence of a line after the first) over its
    characters without newlines is >= `char_duplicates_ratio` (0.1);
``empty``
    it has no non-blank line (checked first).

The comparisons are the paper's (<= and >=), as in datatrove at FineWeb's release; datatrove
made them strict in December 2024 (FineWeb-2). `stop_chars` defaults to the five FineWeb used
(``. ' " ! ?``); datatrove now defaults to a multilingual set. datatrove's default for
`char_duplicates_ratio` is 0.01; the paper states 0.1, which is ours. datatrove's later
``list_ratio`` check (newlines per word, not in the paper) is not implemented.
"""

from __future__ import annotations

from itertools import repeat

from pydantic import BaseModel, ConfigDict, Field, field_validator

from refine.document import Document, Threshold, first_failure
from refine.stages import FINEWEB

STAGE = FINEWEB.name
CHECKS = ("line_punct_ratio", "short_line_ratio", "char_dup_ratio")  # metric and reason names
DEFAULT_STOP_CHARS = (".", "'", '"', "!", "?")


class FineWebQualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False  # off in the refinedweb preset; configs/fineweb.yaml turns it on
    line_punct_thr: float = Field(0.12, ge=0.0, le=1.0)  # drop when the ratio is <= this
    stop_chars: list[str] = Field(default_factory=lambda: list(DEFAULT_STOP_CHARS))
    short_line_length: int = Field(30, ge=0)  # a line of at most this many characters is short
    short_line_thr: float = Field(0.67, ge=0.0, le=1.0)  # drop when the ratio is >= this
    char_duplicates_ratio: float = Field(0.1, ge=0.0, le=1.0)  # drop when the ratio is >= this

    @field_validator("stop_chars")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v or not all(v):
            raise ValueError("stop_chars must be a non-empty list of non-empty strings")
        return v


# The checks of `FineWebQualityFilter.apply`, in its order, after "empty" (and the report's
# what-if): "above": kept when the metric is > the threshold; "below": <.
_F = FINEWEB.prefix
THRESHOLDS = (
    Threshold(f"{_F}line_punct_ratio", "line_punct_thr", "above", "line_punct_ratio"),
    Threshold(f"{_F}short_line_ratio", "short_line_thr", "below", "short_line_ratio"),
    Threshold(f"{_F}char_dup_ratio", "char_duplicates_ratio", "below", "char_dup_ratio"),
)


def quality_metrics(text: str, stop_chars: tuple[str, ...],
                    short_line_length: int) -> tuple[int, dict[str, float]]:
    """(non-blank lines, {check: ratio}) of `text`; ratios are 0 without lines."""
    lines = [line for line in text.split("\n") if line and not line.isspace()]
    n = len(lines)
    if not n:
        return 0, dict.fromkeys(CHECKS, 0.0)
    punct = sum(map(str.endswith, lines, repeat(stop_chars)))
    lengths = list(map(len, lines))
    short = sum(map(short_line_length.__ge__, lengths))
    dup_chars = sum(lengths) - sum(map(len, set(lines)))  # every occurrence after the first
    chars = len(text) - text.count("\n")
    return n, {"line_punct_ratio": punct / n, "short_line_ratio": short / n,
               "char_dup_ratio": dup_chars / chars if chars else 0.0}


class FineWebQualityFilter:
    """FineWeb's three line heuristics. Metrics (``fineweb.`` + ): lines, and each of
    `CHECKS`. Reasons: empty, then `CHECKS` in order."""

    name = FINEWEB.metrics

    def __init__(self, config: FineWebQualityConfig | None = None) -> None:
        self.config = c = config or FineWebQualityConfig()
        self._stop = tuple(c.stop_chars)
        self._keys = {k: f"{self.name}.{k}" for k in ("lines", *CHECKS)}

    def line_flags(self, text: str, reason: str) -> list[tuple[int, int, str]]:
        """(start, end, label) spans of the lines behind `reason`, for the report's highlights:
        the lines not ending in punctuation, the short lines, or the repeated lines."""
        c = self.config
        out, seen, start = [], set(), 0
        for line in text.split("\n"):
            end = start + len(line)
            if line and not line.isspace():
                if reason == "line_punct_ratio" and not line.endswith(self._stop):
                    out.append((start, end, "no end punctuation"))
                elif reason == "short_line_ratio" and len(line) <= c.short_line_length:
                    out.append((start, end, "short line"))
                elif reason == "char_dup_ratio" and line in seen:
                    out.append((start, end, "duplicate line"))
                seen.add(line)
            start = end + 1
        return out

    def apply(self, doc: Document) -> str | None:
        c = self.config
        if not c.enabled:
            return None
        n, m = quality_metrics(doc.text, self._stop, c.short_line_length)
        k = self._keys
        doc.metrics[k["lines"]] = float(n)
        for check in CHECKS:
            doc.metrics[k[check]] = m[check]
        if not n:
            return "empty"
        return first_failure(THRESHOLDS, doc.metrics, self.config)


__all__ = ["CHECKS", "STAGE", "THRESHOLDS", "FineWebQualityConfig", "FineWebQualityFilter",
           "quality_metrics"]
