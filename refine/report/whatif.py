"""What-if thresholds: how many documents and words a different threshold would keep.

For the check on metric m of stage S with a new threshold t, the documents counted are those
that reached S, pass every other check of S at the run's thresholds and were not dropped by a
later stage; kept(t) counts those whose m passes t. Documents dropped at S are assumed to pass
the stages after S (they never ran there). At the run's threshold, kept(t) is the run's kept
count. Everything is computed from the metrics stored in data/ and rejected/, binned per check:
bin edges include the run's threshold, and the control moves over the edges, so the counts are
exact at every value it offers.

With per-language settings (`languages` in the config, refine.languages) every document is
judged by its own language's thresholds. A check then has one control for the top-level
threshold (the documents of languages that do not override it) and one per language that does;
each control moves its group's threshold and holds the other documents at their own
(`fixed_docs` / `fixed_words`: those of them that pass), so at the run's settings every control
shows the run's kept count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refine import stages
from refine.document import Threshold

# Stages with thresholded checks, in run order (the URL filter's soft-word count is followed by
# a check that stores no metric, so its what-if could not be exact: it has no table).
STAGE_THRESHOLDS: dict[str, tuple[Threshold, ...]] = {
    stage.name: stage.thresholds for stage in stages.STAGES if stage.thresholds}
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
    languages: list[np.ndarray] = field(default_factory=list)

    def add(self, reasons: np.ndarray, words: np.ndarray, metrics: dict[str, np.ndarray],
            languages: np.ndarray | None = None) -> None:
        self.reasons.append(reasons)
        self.words.append(words)
        self.languages.append(np.full(len(reasons), "", dtype=object) if languages is None
                              else languages)
        for key, values in metrics.items():
            self.metrics.setdefault(key, []).append(values)

    def arrays(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        reasons = np.concatenate(self.reasons) if self.reasons else np.array([], dtype=object)
        words = np.concatenate(self.words) if self.words else np.zeros(0, dtype=np.int64)
        metrics = {k: np.concatenate(self.metrics[k]) if self.metrics.get(k) else
                   np.full(len(reasons), np.nan) for k in keys}
        return reasons, words, metrics

    def language_array(self) -> np.ndarray:
        return np.concatenate(self.languages) if self.languages else np.array([], dtype=object)


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


def overrides(config: dict[str, Any], stage: str, key: str) -> dict[str, float]:
    """Languages that set `stage.key` themselves: lang -> their threshold (a control of its own,
    even at the run's value: moving the top-level threshold would not move theirs)."""
    out = {}
    for lang, sections in (config.get("languages") or {}).items():
        value = (sections.get(stage) or {}).get(key)
        if value is not None:
            out[lang] = float(value)
    return out


def thresholds(config: dict[str, Any], stage: str, key: str, languages: np.ndarray) -> np.ndarray:
    """Each document's threshold for `stage.key`: its language's, else the run's."""
    out = np.full(len(languages), float(config[stage][key]))
    for lang, value in overrides(config, stage, key).items():
        out[languages == lang] = value
    return out


def build(config: dict[str, Any], kept_metrics: dict[str, np.ndarray], kept_words: np.ndarray,
          rejected: dict[str, StageRows],
          kept_languages: np.ndarray | None = None) -> list[dict[str, Any]]:
    if kept_languages is None:
        kept_languages = np.full(len(kept_words), "", dtype=object)
    out = []
    for stage, keys in metric_keys(config).items():
        checks = STAGE_THRESHOLDS[stage]
        rows = rejected.get(stage, StageRows())
        reasons, words, metrics = rows.arrays(keys)
        languages = rows.language_array()
        stage_reasons = np.isin(reasons, [c.reason for c in checks])
        # every check at each document's own (its language's) threshold
        limits = [thresholds(config, stage, c.config_key, languages) for c in checks]
        ok = [passes(c, metrics[c.metric], t) for c, t in zip(checks, limits, strict=True)]
        every = np.logical_and.reduce(ok) if ok else np.ones(len(reasons), dtype=bool)
        inconsistent = int((stage_reasons & every).sum())  # dropped, yet metrics pass all checks
        for i, check in enumerate(checks):
            others = np.logical_and.reduce([ok[j] for j in range(len(checks)) if j != i]) \
                if len(checks) > 1 else np.ones(len(reasons), dtype=bool)
            chosen = stage_reasons & others
            all_values = np.concatenate([kept_metrics[check.metric], metrics[check.metric][chosen]])
            all_words = np.concatenate([kept_words, words[chosen]])
            all_languages = np.concatenate([kept_languages, languages[chosen]])
            own = thresholds(config, stage, check.config_key, all_languages)
            unknown = int((stage_reasons & ~others).sum())  # fail another check of the stage
            special = overrides(config, stage, check.config_key)
            groups: list[tuple[str | None, float, np.ndarray]] = [
                (None, float(config[stage][check.config_key]),
                 ~np.isin(all_languages, list(special)))]
            groups += [(lang, value, all_languages == lang)
                       for lang, value in sorted(special.items())]
            for lang, current, member in groups:
                # the other groups' documents, held at their own thresholds: those that pass
                held = ~member & passes(check, all_values, own)
                fixed_docs, fixed_words = int(held.sum()), int(all_words[held].sum())
                values, doc_words = all_values[member], all_words[member]
                missing = np.isnan(values)
                values, doc_words = values[~missing], doc_words[~missing]
                edges = bin_edges(values, current, check.integer)
                docs, word_bins = histogram(check, values, doc_words, edges)
                edge = int(np.searchsorted(edges, current))
                out.append({
                    "stage": stage, "metric": check.metric, "config_key": check.config_key,
                    "language": lang, "direction": check.direction,
                    "upper": UPPER[check.direction], "reason": check.reason,
                    "threshold": current, "threshold_index": edge, "edges": edges.tolist(),
                    "docs": docs.tolist(), "words": word_bins.tolist(),
                    "eligible": int(len(values)), "missing": int(missing.sum()),
                    "other_checks_failed": unknown, "inconsistent": inconsistent,
                    "fixed_docs": fixed_docs, "fixed_words": fixed_words,
                    "kept_now": kept_at(check, docs, edge) + fixed_docs,
                    "kept_words_now": fixed_words + int(
                        word_bins[: edge + 1].sum() if UPPER[check.direction]
                        else word_bins[edge + 1 :].sum()),
                })
    return out
