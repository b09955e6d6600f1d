"""What-if thresholds: how many documents and words a different threshold would keep.

For the check on metric m of stage S with a new threshold t, the documents counted are those
that reached S, pass every other check of S at the run's thresholds and were not dropped by a
later stage; kept(t) counts those whose m passes t. Documents dropped at S are assumed to pass
the stages after S (they never ran there). At the run's threshold, kept(t) is the run's kept
count. Everything is computed from the metrics stored in data/ and rejected/, binned per check:
bin edges include the run's threshold, and the control moves over the edges, so the counts are
exact at every value it offers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refine.document import Threshold
from refine.filters import c4, classifier, fineweb, language, lines, quality, repetition

# Stages with thresholded checks, in run order (the URL filter's soft-word count is followed by
# a check that stores no metric, so its what-if could not be exact: not offered).
STAGE_THRESHOLDS: dict[str, tuple[Threshold, ...]] = {
    "language": language.THRESHOLDS,
    "repetition": repetition.THRESHOLDS,
    "quality": quality.THRESHOLDS,
    c4.STAGE: c4.THRESHOLDS,
    fineweb.STAGE: fineweb.THRESHOLDS,
    "lines": lines.THRESHOLDS,
    classifier.STAGE: classifier.THRESHOLDS,
}
# Threshold.direction: what a document needs to be kept. "min": metric >= t, "max": metric <= t,
# "above": metric > t, "below": metric < t (FineWeb's checks drop at equality).
UPPER = {"min": False, "max": True, "above": False, "below": True}  # kept under the threshold
STRICT = {"min": False, "max": False, "above": True, "below": True}
BINS = 120
TAIL = 0.002  # values beyond these quantiles fall in the first and last bin


@dataclass
class StageRows:
    """Rows rejected at one stage: their reasons, words and the stage's metrics."""

    reasons: list[np.ndarray] = field(default_factory=list)
    words: list[np.ndarray] = field(default_factory=list)
    metrics: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, reasons: np.ndarray, words: np.ndarray, metrics: dict[str, np.ndarray]) -> None:
        self.reasons.append(reasons)
        self.words.append(words)
        for key, values in metrics.items():
            self.metrics.setdefault(key, []).append(values)

    def arrays(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        reasons = np.concatenate(self.reasons) if self.reasons else np.array([], dtype=object)
        words = np.concatenate(self.words) if self.words else np.zeros(0, dtype=np.int64)
        metrics = {k: np.concatenate(self.metrics[k]) if self.metrics.get(k) else
                   np.full(len(reasons), np.nan) for k in keys}
        return reasons, words, metrics


def metric_keys(config: dict[str, Any]) -> dict[str, list[str]]:
    """Metric keys of the enabled stages with thresholds: stage -> keys."""
    return {stage: sorted({t.metric for t in checks})
            for stage, checks in STAGE_THRESHOLDS.items()
            if config.get(stage, {}).get("enabled", False)}


def passes(check: Threshold, values: np.ndarray, threshold: float) -> np.ndarray:
    """Whether each value passes the check (NaN, a missing metric, never passes)."""
    if STRICT[check.direction]:
        return values < threshold if UPPER[check.direction] else values > threshold
    return values <= threshold if UPPER[check.direction] else values >= threshold


def bin_edges(values: np.ndarray, threshold: float, integer: bool, bins: int = BINS) -> np.ndarray:
    if len(values):
        lo, hi = (float(q) for q in np.quantile(values, [TAIL, 1 - TAIL]))
        lo, hi = min(lo, threshold), max(hi, threshold)
    else:
        lo = hi = threshold
    if integer:
        lo, hi = float(np.floor(lo)), float(np.ceil(hi))
        if hi - lo <= bins:
            edges = np.arange(lo, hi + 1)
        elif lo >= 0:
            edges = np.concatenate([[lo], np.unique(np.round(np.geomspace(max(lo, 1), hi, bins)))])
        else:
            edges = np.round(np.linspace(lo, hi, bins + 1))
    else:
        edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo])
    return np.unique(np.append(edges, threshold))


def histogram(check: Threshold, values: np.ndarray, words: np.ndarray,
              edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Documents and words per bin; bin i lies between edges i-1 and i (bin 0 and the last bin
    are open-ended). Bins are closed on the side that keeps a threshold at an edge exact:
    (e[i-1], e[i]] for "max" and "above" checks, [e[i-1], e[i]) for "min" and "below" checks."""
    side = "left" if UPPER[check.direction] != STRICT[check.direction] else "right"
    index = np.searchsorted(edges, values, side=side)
    size = len(edges) + 1
    docs = np.bincount(index, minlength=size)
    word_sums = np.bincount(index, weights=words.astype(np.float64), minlength=size)
    return docs, np.rint(word_sums).astype(np.int64)


def kept_at(check: Threshold, docs: np.ndarray, edge: int) -> int:
    """Documents kept with the threshold at edges[edge] (the JS does the same sum)."""
    return int(docs[: edge + 1].sum() if UPPER[check.direction] else docs[edge + 1 :].sum())


def build(config: dict[str, Any], kept_metrics: dict[str, np.ndarray], kept_words: np.ndarray,
          rejected: dict[str, StageRows]) -> list[dict[str, Any]]:
    out = []
    for stage, keys in metric_keys(config).items():
        checks = STAGE_THRESHOLDS[stage]
        current = [float(config[stage][c.config_key]) for c in checks]
        reasons, words, metrics = rejected.get(stage, StageRows()).arrays(keys)
        stage_reasons = np.isin(reasons, [c.reason for c in checks])
        ok = [passes(c, metrics[c.metric], t) for c, t in zip(checks, current, strict=True)]
        every = np.logical_and.reduce(ok) if ok else np.ones(len(reasons), dtype=bool)
        inconsistent = int((stage_reasons & every).sum())  # dropped, yet metrics pass all checks
        for i, check in enumerate(checks):
            others = np.logical_and.reduce([ok[j] for j in range(len(checks)) if j != i]) \
                if len(checks) > 1 else np.ones(len(reasons), dtype=bool)
            chosen = stage_reasons & others
            values = np.concatenate([kept_metrics[check.metric], metrics[check.metric][chosen]])
            doc_words = np.concatenate([kept_words, words[chosen]])
            missing = np.isnan(values)
            values, doc_words = values[~missing], doc_words[~missing]
            unknown = int((stage_reasons & ~others).sum())  # fail another check of the stage
            edges = bin_edges(values, current[i], check.integer)
            docs, word_bins = histogram(check, values, doc_words, edges)
            edge = int(np.searchsorted(edges, current[i]))
            out.append({
                "stage": stage, "metric": check.metric, "config_key": check.config_key,
                "direction": check.direction, "upper": UPPER[check.direction],
                "reason": check.reason, "threshold": current[i],
                "threshold_index": edge, "edges": edges.tolist(), "docs": docs.tolist(),
                "words": word_bins.tolist(), "eligible": int(len(values)),
                "missing": int(missing.sum()), "other_checks_failed": unknown,
                "inconsistent": inconsistent, "kept_now": kept_at(check, docs, edge),
                "kept_words_now": int(word_bins[: edge + 1].sum() if UPPER[check.direction]
                                      else word_bins[edge + 1 :].sum()),
            })
    return out
