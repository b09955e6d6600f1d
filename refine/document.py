"""The document that flows through the per-document stages, and the filter contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class Document:
    id: str
    url: str
    text: str
    date: str = ""
    file_path: str = ""
    offset: int = 0
    language: str = ""
    language_score: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


class Filter(Protocol):
    """A per-document stage. Knows nothing of Ray.

    `apply` records what it measured in `doc.metrics` (keys prefixed with the stage name,
    e.g. ``"gopher_quality.mean_word_len"``), may rewrite `doc.text` (line corrections), and
    returns ``None`` to keep the document or a reason string (e.g. ``"mean_word_len"``) to drop it.
    """

    name: str

    def apply(self, doc: Document) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Threshold:
    """One thresholded check of a filter, for the report's what-if control.

    A document fails the check when ``metrics[metric] < config[config_key]`` (direction "min")
    or ``> config[config_key]`` (direction "max"); the filter then gives `reason` (unless an
    earlier check of the same filter failed first).
    """

    metric: str
    config_key: str
    direction: str  # "min" | "max" (keep at >= / <= t), "above" | "below" (keep at > / < t)
    reason: str
    integer: bool = False  # the metric is a count (bins on whole numbers)
