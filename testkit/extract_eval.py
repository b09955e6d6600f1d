"""Extraction quality against a gold set laid out like the ScrapingHub article-extraction-benchmark.

Layout: ``<pages_dir>/<key>.html.gz`` and ``ground-truth.json`` = ``{key: {"articleBody": ...}}``.
Metric as in that benchmark's ``evaluate.py``: per page, multiset overlap of 4-token shingles
(tokens = ``\\w+``, case kept) gives TP/FP/FN; precision is averaged over pages with a non-empty
prediction, recall over pages with a non-empty gold text, and F1 is the harmonic mean of the two
averages. ``f1_page_mean`` (mean of per-page F1, an empty prediction scoring 0) is reported too.
"""

from __future__ import annotations

import gzip
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from charset_normalizer import from_bytes

from refine.extract import ExtractConfig, extract_text

_TOKEN_RE = re.compile(r"\w+")
_META_CHARSET_RE = re.compile(rb"<meta[^>]+charset=[\"']?\s*([A-Za-z0-9_.:-]+)", re.I)


def _shingles(text: str, n: int) -> Counter[tuple[str, ...]]:
    toks = _TOKEN_RE.findall(text or "")
    return Counter(tuple(toks[i : i + n]) for i in range(max(1, len(toks) - n + 1)) if toks)


def tp_fp_fn(pred: str, gold: str, n: int = 4) -> tuple[int, int, int]:
    """Multiset shingle overlap counts between a prediction and the gold text."""
    p, g = _shingles(pred, n), _shingles(gold, n)
    tp = sum((p & g).values())
    return tp, sum(p.values()) - tp, sum(g.values()) - tp


def token_prf(pred: str, gold: str, n: int = 4) -> tuple[float, float, float]:
    """Per-page (precision, recall, F1) over ``n``-token shingles (n=1: bag of word tokens)."""
    tp, fp, fn = tp_fp_fn(pred, gold, n)
    if fp == fn == 0:
        return 1.0, 1.0, 1.0
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def decode_html(raw: bytes) -> str:
    """UTF-8 if valid, else the declared <meta> charset, else charset-normalizer's guess."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    m = _META_CHARSET_RE.search(raw[:4096])
    if m:
        try:
            return raw.decode(m.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            pass
    best = from_bytes(raw).best()
    return str(best) if best is not None else raw.decode("utf-8", "replace")


def load_gold(pages_dir: Path | str, ground_truth_json: Path | str) -> list[tuple[str, bytes, str]]:
    """(key, raw html bytes, gold text) for every page, sorted by key."""
    gold = json.loads(Path(ground_truth_json).read_text(encoding="utf-8"))
    out = []
    for path in sorted(Path(pages_dir).glob("*.html.gz")):
        key = path.name.removesuffix(".html.gz")
        out.append((key, gzip.decompress(path.read_bytes()), gold[key].get("articleBody") or ""))
    return out


def evaluate(
    pages_dir: Path | str,
    ground_truth_json: Path | str,
    config: ExtractConfig,
    repeat: int = 1,
) -> dict[str, Any]:
    """Quality and speed of ``extract_text`` (decoding included) on a gold set.

    Each page is timed ``repeat`` times (after one warm-up page); its time is the median.
    """
    return evaluate_side_by_side(pages_dir, ground_truth_json, {"": config}, repeat)[""]


def evaluate_side_by_side(
    pages_dir: Path | str,
    ground_truth_json: Path | str,
    configs: dict[str, ExtractConfig],
    repeat: int = 1,
) -> dict[str, dict[str, Any]]:
    """``evaluate`` for several configs (an engine each, or option sets) in one pass: each page
    goes through every config in turn, so a slower moment of a shared machine costs them alike."""
    pages = load_gold(pages_dir, ground_truth_json)
    if not pages:
        raise ValueError(f"no *.html.gz pages in {pages_dir}")
    scores = {name: _Scores() for name in configs}
    for config in configs.values():  # warm-up: lazy imports, regex compilation
        extract_text(decode_html(pages[0][1]), config)
    for key, raw, gold in pages:
        for name, config in configs.items():
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                pred = extract_text(decode_html(raw), config)
                runs.append((time.perf_counter() - t0) * 1e3)
            scores[name].add(key, pred, gold, statistics.median(runs))
    return {name: score.summary() for name, score in scores.items()}


class _Scores:
    """Per-page precision, recall, F1 and time of one config, summed up as the benchmark does."""

    def __init__(self) -> None:
        self.precs: list[float] = []
        self.recs: list[float] = []
        self.f1s: list[float] = []
        self.times_ms: list[tuple[float, str]] = []
        self.empty = 0

    def add(self, key: str, pred: str, gold: str, ms: float) -> None:
        tp, fp, fn = tp_fp_fn(pred, gold)
        p, r, f = token_prf(pred, gold)
        self.empty += not pred
        if tp + fp > 0:
            self.precs.append(p)
        if tp + fn > 0:
            self.recs.append(r)
        self.f1s.append(f)
        self.times_ms.append((ms, key))

    def summary(self) -> dict[str, Any]:
        prec, rec = statistics.fmean(self.precs or [0.0]), statistics.fmean(self.recs or [0.0])
        times = sorted(ms for ms, _ in self.times_ms)
        return {
            "pages": len(self.f1s),
            "precision": round(prec, 4),
            "recall": round(rec, 4),
            "f1": round(2 * prec * rec / (prec + rec) if prec + rec else 0.0, 4),
            "f1_page_mean": round(statistics.fmean(self.f1s), 4),
            "empty_pages": self.empty,
            "ms_per_page": round(statistics.fmean(times), 2),
            "ms_p50": round(times[len(times) // 2], 2),
            "ms_p99": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2),
            "ms_max": round(times[-1], 2),
            "slowest": [[k, round(t, 1)] for t, k in sorted(self.times_ms, reverse=True)[:3]],
        }
