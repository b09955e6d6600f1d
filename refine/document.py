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

    `apply` records what it measured in `doc.metrics` (keys prefixed with its stage's metric
    namespace, `refine.stages`: e.g. ``"gopher_quality.mean_word_len"``), may rewrite `doc.text`
    (line corrections), and
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

    def fails(self, value: float, threshold: float) -> bool:
        """Whether a document whose metric is `value` fails the check at `threshold`."""
        direction = self.direction
        if direction == "min":
            return value < threshold
        if direction == "max":
            return value > threshold
        if direction == "above":
            return value <= threshold
        assert direction == "below", direction
        return value >= threshold


def first_failure(checks: tuple[Threshold, ...], metrics: dict[str, float],
                  config: object) -> str | None:
    """The reason of the first of `checks` that `metrics` fails at its threshold in `config`
    (a filter's config section), or None."""
    for check in checks:
        if check.fails(metrics[check.metric], getattr(config, check.config_key)):
            return check.reason
    return None
