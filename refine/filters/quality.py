"""Gopher quality filters (Rae et al. 2021, MassiveText appendix A.1.1), as used by RefinedWeb.

Words are the whitespace-separated tokens of the text; lines its non-blank lines. For the mean word
length and the stop-word count, tokens are stripped of surrounding `PUNCTUATION` (ASCII and common
Unicode punctuation and symbols) and tokens made only of it are ignored.
"""

from __future__ import annotations

import re
import string
from itertools import repeat

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from refine.document import Document, Threshold, first_failure
from refine.stages import QUALITY

BULLETS = ("•", "-", "*", "‣", "⁃", "◦", "▪", "●", "·")
ELLIPSES = ("...", "…")
# Stripped from both ends of a token before measuring its length.
PUNCTUATION = (
    string.punctuation + "“”‘’«»‹›„‚–—―…•‣⁃◦▪●·¡¿′″¦§¶†‡©®™°→←↑↓、。，．！？：；（）【】「」『』"
)
DEFAULT_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")

_has_alpha = re.compile(r"[^\W\d_]").search


class QualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_words: int = Field(50, ge=0)
    max_words: int = Field(100_000, ge=1)
    min_mean_word_len: float = Field(3.0, ge=0.0)
    max_mean_word_len: float = Field(10.0, gt=0.0)
    max_hash_word_ratio: float = Field(0.1, ge=0.0)
    max_ellipsis_word_ratio: float = Field(0.1, ge=0.0)
    max_bullet_line_frac: float = Field(0.9, ge=0.0, le=1.0)
    max_ellipsis_line_frac: float = Field(0.3, ge=0.0, le=1.0)
    min_alpha_word_frac: float = Field(0.8, ge=0.0, le=1.0)
    stop_words: list[str] = Field(default_factory=lambda: list(DEFAULT_STOP_WORDS))
    min_stop_words: int = Field(2, ge=0)  # different stop words; 0 disables the check

    @field_validator("stop_words")
    @classmethod
    def _stop_words_lower(cls, v: list[str]) -> list[str]:
        out = [w.strip().lower() for w in v]
        if any(not w or any(c.isspace() for c in w) for w in out):
            raise ValueError("stop words must be single non-empty words")
        return out

    @model_validator(mode="after")
    def _ranges(self) -> QualityConfig:
        if self.min_words > self.max_words:
            raise ValueError("min_words must be <= max_words")
        if self.min_mean_word_len > self.max_mean_word_len:
            raise ValueError("min_mean_word_len must be <= max_mean_word_len")
        if self.min_stop_words > 0 and not self.stop_words:
            raise ValueError("min_stop_words > 0 needs a non-empty stop_words list")
        return self


_Q = QUALITY.prefix
N_WORDS = _Q + "n_words"
# The checks of `QualityFilter.apply`, in the order it checks them (and the report's what-if).
THRESHOLDS = (
    Threshold(N_WORDS, "min_words", "min", "too_few_words", integer=True),
    Threshold(N_WORDS, "max_words", "max", "too_many_words", integer=True),
    Threshold(_Q + "mean_word_len", "min_mean_word_len", "min", "mean_word_len"),
    Threshold(_Q + "mean_word_len", "max_mean_word_len", "max", "mean_word_len"),
    Threshold(_Q + "hash_word_ratio", "max_hash_word_ratio", "max", "hash_word_ratio"),
    Threshold(_Q + "ellipsis_word_ratio", "max_ellipsis_word_ratio", "max", "ellipsis_word_ratio"),
    Threshold(_Q + "bullet_line_frac", "max_bullet_line_frac", "max", "bullet_line_frac"),
    Threshold(_Q + "ellipsis_line_frac", "max_ellipsis_line_frac", "max", "ellipsis_line_frac"),
    Threshold(_Q + "alpha_word_frac", "min_alpha_word_frac", "min", "alpha_word_frac"),
    Threshold(_Q + "stop_words", "min_stop_words", "min", "stop_words", integer=True),
)


class QualityFilter:
    """Gopher quality heuristics.

    Metrics (``gopher_quality.`` + ): n_words, mean_word_len, hash_word_ratio,
    ellipsis_word_ratio, bullet_line_frac, ellipsis_line_frac, alpha_word_frac, stop_words (the
    number of *different* stop words present: Gopher asks for "at least two of" them). Reasons,
    checked in this order: too_few_words, too_many_words, mean_word_len, hash_word_ratio,
    ellipsis_word_ratio, bullet_line_frac, ellipsis_line_frac, alpha_word_frac, stop_words.
    The '#' and ellipsis ratios are two checks, as the paper states ("greater than 0.1 for
    either the hash symbol or the ellipsis"), not one summed ratio.
    """

    name = QUALITY.metrics

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        self._stop = frozenset(self.config.stop_words)
        self._k = {
            k: f"{self.name}.{k}"
            for k in (
                "n_words",
                "mean_word_len",
                "hash_word_ratio",
                "ellipsis_word_ratio",
                "bullet_line_frac",
                "ellipsis_line_frac",
                "alpha_word_frac",
                "stop_words",
            )
        }

    def apply(self, doc: Document) -> str | None:
        c = self.config
        if not c.enabled:
            return None
        text = doc.text
        words = text.split()
        n_words = len(words)
        stripped = list(filter(None, map(str.strip, words, repeat(PUNCTUATION))))
        mean_len = sum(map(len, stripped)) / len(stripped) if stripped else 0.0
        lines = list(filter(None, map(str.strip, text.split("\n"))))
        n_lines = len(lines) or 1
        bullet = sum(map(str.startswith, lines, repeat(BULLETS))) / n_lines
        ellipsis = sum(map(str.endswith, lines, repeat(ELLIPSES))) / n_lines
        if n_words:
            hashes = text.count("#") / n_words
            ellipses = (text.count("...") + text.count("…")) / n_words
            alpha = sum(map(bool, map(_has_alpha, words))) / n_words
        else:
            hashes, ellipses, alpha = 0.0, 0.0, 0.0
        n_stop = len(self._stop.intersection(map(str.lower, stripped)))

        k = self._k
        values = {
            k["n_words"]: float(n_words),
            k["mean_word_len"]: mean_len,
            k["hash_word_ratio"]: hashes,
            k["ellipsis_word_ratio"]: ellipses,
            k["bullet_line_frac"]: bullet,
            k["ellipsis_line_frac"]: ellipsis,
            k["alpha_word_frac"]: alpha,
            k["stop_words"]: float(n_stop),
        }
        doc.metrics.update(values)
        return first_failure(THRESHOLDS, values, self.config)
