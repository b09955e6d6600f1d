"""Read a run directory into the numbers the report shows. Reads only the run directory:
manifest.json, stats.json (or the per-unit stats files it is merged from), data/, rejected/,
spans/; Parquet columns are streamed in batches, never whole texts of the kept documents."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refine import accounting, stages
from refine.filters.quality import N_WORDS
from refine.languages import config_dict_for
from refine.report import whatif
from refine.report.columns import metric_arrays, word_counts
from refine.report.examples import Reservoir, highlights
from refine.rundir import (
    DATA,
    DEDUP_STATS,
    MANIFEST,
    REJECTED,
    SPANS,
    STATS,
    RunDir,
    as_run_dir,
)
from refine.shards import metrics_dict
from refine.stats import ORDER, load_parts, merge

log = logging.getLogger("refine.report")
BATCH_ROWS = 65_536
TEXT_STAGES_FROM = stages.EXTRACT.name  # words are counted from extraction on (before it: HTML)
EXAMPLE_CHARS = 2000  # text shown per example
# an example shows the metrics of the stage that dropped it
STAGE_METRIC_PREFIX = {stage.name: stage.prefix for stage in stages.STAGES if stage.metrics}


class ReportError(Exception):
    pass


class _Progress:
    def __init__(self, what: str) -> None:
        self.what, self.rows, self.started, self.last = what, 0, time.monotonic(), 0.0

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self.last > 5:
            log.info("%s: %d rows read (%.0f s)", self.what, self.rows, now - self.started)
            self.last = now

    def done(self) -> None:
        log.info("%s: %d rows in %.1f s", self.what, self.rows, time.monotonic() - self.started)


def _batches(run: RunDir, sub: str, columns: list[str]):
    """(file, first row of the batch, batch) over the Parquet files of `sub`, in name order."""
    for path in run.files(sub):
        with run.parquet(path) as pf:
            names = set(pf.schema_arrow.names)
            row = 0
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[c for c in columns
                                                                          if c in names]):
                yield path, row, batch
                row += batch.num_rows


def _codes(array: pa.Array) -> tuple[np.ndarray, list[str]]:
    encoded = pc.fill_null(array, "").dictionary_encode()
    return (encoded.indices.to_numpy(zero_copy_only=False),
            [str(v) for v in encoded.dictionary.to_pylist()])


def _count(counter: Counter[str], codes: np.ndarray, names: list[str],
           weights: np.ndarray | None = None) -> None:
    sums = np.bincount(codes, weights=weights, minlength=len(names))
    for name, value in zip(names, sums.tolist(), strict=True):
        if value:
            counter[name] += round(value)


def _ordered(stats: dict[str, Any]) -> dict[str, Any]:
    """Stages in run order (stats.json stores them sorted by name)."""
    order = {name: i for i, name in enumerate(ORDER)}
    stats["stages"] = dict(sorted(stats["stages"].items(),
                                  key=lambda item: order.get(item[0], len(order))))
    return stats


def load_stats(run: RunDir, manifest: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    stats, notes = _load_stats(run, manifest)
    return _ordered(stats), notes


def _load_stats(run: RunDir, manifest: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """stats.json, checked against a fresh merge of the per-unit files (the merge wins when they
    disagree, e.g. a resumed launch that has not finished: it covers every finished unit)."""
    notes: list[str] = []
    parts = load_parts(run)
    units = {entry["path"]: entry.get("units", 0) for entry in manifest.get("inputs", [])}
    dedup = run.read_json(DEDUP_STATS) if run.exists(DEDUP_STATS) else None
    merged = merge(parts, units, dedup) if parts else None
    saved = run.read_json(STATS) if run.exists(STATS) else None
    if saved is None and merged is None:
        raise ReportError(f"{run} has neither stats.json nor stats/units/*.json")
    if saved is None:
        notes.append(f"stats.json is missing (an unfinished run?): merged from {len(parts)} unit "
                     "files")
        return merged, notes
    if merged is not None:
        same = (merged["documents"] == saved["documents"]
                and {k: v["read"] for k, v in merged["inputs"].items()}
                == {k: v["read"] for k, v in saved["inputs"].items()})
        if not same:
            notes.append(f"stats.json ({saved['documents']}) disagrees with the {len(parts)} unit "
                         f"files ({merged['documents']}): showing the unit files' merge")
            merged["last_launch"] = saved.get("last_launch")
            return merged, notes
    return saved, notes


def _scan_rejected(run: RunDir, config: dict[str, Any], keys: dict[str, list[str]],
                   samples: int, seed: int) -> dict[str, Any]:
    reservoir = Reservoir(samples, seed)
    stage_rows: dict[str, whatif.StageRows] = defaultdict(whatif.StageRows)
    by_file: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    words_by_reason: Counter[str] = Counter()
    language_rejected: Counter[str] = Counter()
    clusters: Counter[str] = Counter()
    all_keys = sorted({k for ks in keys.values() for k in ks} | {N_WORDS})
    columns = ["id", "url", "file_path", "stage", "reason", "duplicate_of", "language", "metrics",
               "text", "text_chars"]
    progress = _Progress("rejected/")
    for _, _, batch in _batches(run, REJECTED, columns):
        progress.add(batch.num_rows)
        stage = pc.fill_null(batch.column("stage"), "")
        reason = pc.fill_null(batch.column("reason"), "")
        group, groups = _codes(pc.binary_join_element_wise(stage, reason, "."))
        metrics = metric_arrays(batch.column("metrics"), all_keys)
        text = batch.column("text")
        counted = word_counts(text)
        shown = pc.utf8_length(pc.fill_null(text, "")).to_numpy(zero_copy_only=False)
        full = pc.fill_null(batch.column("text_chars"), 0).to_numpy(zero_copy_only=False)
        # words: exact when the stored text is whole, else the quality filter's count, else
        # the stored prefix's count scaled to the full length
        scaled = np.where(shown > 0, counted * (full / np.maximum(shown, 1)), 0.0)
        estimate = np.where(np.isnan(metrics[N_WORDS]), np.rint(scaled), metrics[N_WORDS])
        words = np.where(shown >= full, counted, estimate).astype(np.int64)
        _count(by_reason, group, groups)
        _count(words_by_reason, group, groups, words)
        file_codes, files = _codes(batch.column("file_path"))
        _count(by_file, file_codes, files)
        stage_values = np.asarray(stage.to_pylist(), dtype=object)
        reason_values = np.asarray(reason.to_pylist(), dtype=object)
        lang_codes, langs = _codes(batch.column("language"))
        language_values = np.asarray(langs or [""], dtype=object)[lang_codes]
        for name, stage_keys in keys.items():
            mask = stage_values == name
            if mask.any():
                stage_rows[name].add(reason_values[mask], words[mask],
                                     {k: metrics[k][mask] for k in stage_keys},
                                     language_values[mask])
        language_mask = stage_values == stages.LANGUAGE.name
        if language_mask.any():
            lang_codes, langs = _codes(batch.column("language").filter(pa.array(language_mask)))
            _count(language_rejected, lang_codes, langs)
        fuzzy = stage_values == stages.FUZZY_DEDUP.name
        if fuzzy.any():
            clusters.update(batch.column("duplicate_of").filter(pa.array(fuzzy)).to_pylist())
        reservoir.offer(batch, group, groups)
    progress.done()
    examples = {}
    for name in reservoir.groups:
        stage_name, _, reason_name = name.partition(".")
        examples[name] = [_example(row, stage_name, reason_name, config)
                          for row in reservoir.rows(name)]
    return {"stage_rows": stage_rows, "by_file": by_file, "by_reason": by_reason,
            "words_by_reason": words_by_reason, "language_rejected": language_rejected,
            "clusters": clusters, "examples": examples}


def _example(row: dict[str, Any], stage: str, reason: str, config: dict[str, Any]) -> dict:
    text = (row.get("text") or "")[:EXAMPLE_CHARS]
    prefix = STAGE_METRIC_PREFIX.get(stage)
    metrics = {k: v for k, v in metrics_dict(row.get("metrics")).items()
               if prefix and k.startswith(prefix)}
    return {"id": row.get("id"), "url": row.get("url"), "language": row.get("language"),
            "duplicate_of": row.get("duplicate_of"), "text": text,
            "text_chars": row.get("text_chars") or len(text), "metrics": metrics,
            "highlights": highlights(stage, reason, text,
                                     config_dict_for(config, row.get("language")))}


def _scan_spans(run: RunDir, samples: int, seed: int) -> dict[str, Any]:
    reservoir = Reservoir(samples, seed + 1)
    tokens: Counter[int] = Counter()
    count = chars = 0
    docs: set[str] = set()
    for _, _, batch in _batches(run, SPANS, ["id", "start", "end", "tokens", "duplicate_of",
                                                "text"]):
        count += batch.num_rows
        starts = batch.column("start").to_numpy(zero_copy_only=False)
        ends = batch.column("end").to_numpy(zero_copy_only=False)
        chars += int((ends - starts).sum())
        tokens.update(batch.column("tokens").to_pylist())
        docs.update(batch.column("id").to_pylist())
        reservoir.offer(batch, np.zeros(batch.num_rows, dtype=np.int64), ["spans"])
    samples = reservoir.rows("spans")
    wanted = pa.array(sorted({s["id"] for s in samples}), type=pa.string())
    cuts: dict[str, list[tuple[int, int]]] = defaultdict(list)
    if len(wanted):
        for _, _, batch in _batches(run, SPANS, ["id", "start", "end"]):
            hits = batch.filter(pc.is_in(batch.column("id"), wanted)).to_pylist()
            for hit in hits:
                cuts[hit["id"]].append((hit["start"], hit["end"]))
    return {"spans": count, "chars": chars, "documents": len(docs), "tokens": tokens,
            "samples": samples, "cuts": cuts}


def _scan_kept(run: RunDir, keys: list[str], samples: int, seed: int,
               wanted: set[str]) -> dict[str, Any]:
    reservoir = Reservoir(samples, seed + 2)
    metric_parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    word_parts: list[np.ndarray] = []
    language_parts: list[np.ndarray] = []
    by_file: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    language_words: Counter[str] = Counter()
    found: dict[str, tuple[str, int]] = {}
    wanted_array = pa.array(sorted(wanted), type=pa.string())
    progress = _Progress("data/")
    for path, first, batch in _batches(run, DATA, ["id", "file_path", "language",
                                                   "token_count", "metrics"]):
        progress.add(batch.num_rows)
        words = pc.fill_null(batch.column("token_count"), 0).to_numpy(zero_copy_only=False)
        word_parts.append(words.astype(np.int64))
        for key, values in metric_arrays(batch.column("metrics"), keys).items():
            metric_parts[key].append(values)
        file_codes, files = _codes(batch.column("file_path"))
        _count(by_file, file_codes, files)
        lang_codes, langs = _codes(batch.column("language"))
        language_parts.append(np.asarray(langs or [""], dtype=object)[lang_codes])
        _count(languages, lang_codes, langs)
        _count(language_words, lang_codes, langs, words.astype(np.float64))
        if len(wanted_array):
            hits = np.flatnonzero(pc.is_in(batch.column("id"), wanted_array).to_numpy(
                zero_copy_only=False))
            for row in hits.tolist():
                found[batch.column("id")[row].as_py()] = (path, first + row)
        where = pa.RecordBatch.from_arrays(
            [pa.array([str(path)] * batch.num_rows), pa.array(np.arange(first, first +
                                                                        batch.num_rows))],
            names=["path", "row"])
        reservoir.offer(where, np.zeros(batch.num_rows, dtype=np.int64), ["kept"])
    progress.done()
    positions = [(r["path"], r["row"]) for r in reservoir.rows("kept")]
    return {
        "metrics": {k: np.concatenate(v) if v else np.zeros(0) for k, v in metric_parts.items()},
        "words": np.concatenate(word_parts) if word_parts else np.zeros(0, dtype=np.int64),
        "language": (np.concatenate(language_parts) if language_parts
                     else np.array([], dtype=object)),  # per document, for the what-if
        "by_file": by_file, "languages": languages, "language_words": language_words,
        "samples": positions, "found": found,
    }


def _fetch_rows(run: RunDir, positions: list[tuple[str, int]],
                columns: list[str]) -> list[dict[str, Any]]:
    """The rows at (file, row) positions, reading only the row groups that hold them."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    by_file: dict[str, list[int]] = defaultdict(list)
    for path, row in positions:
        by_file[path].append(row)
    for path, rows in by_file.items():
        with run.parquet(path) as pf:
            starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows
                                      for i in range(pf.num_row_groups)])
            for group in sorted({int(np.searchsorted(starts, r, side="right") - 1)
                                 for r in rows}):
                table = pf.read_row_group(group, columns=columns)
                for r in rows:
                    if starts[group] <= r < starts[group + 1]:
                        out[(path, r)] = table.slice(r - starts[group], 1).to_pylist()[0]
    return [out[p] for p in positions]


def _span_examples(run: RunDir, spans: dict[str, Any], kept: dict[str, Any],
                   context: int = 300) -> list[dict]:
    """Each sampled span in its document: the kept text around where it was cut."""
    samples = [s for s in spans["samples"] if s["id"] in kept["found"]]
    rows = _fetch_rows(run, [kept["found"][s["id"]] for s in samples], ["id", "text"])
    out = []
    for span, row in zip(samples, rows, strict=True):
        text = row["text"] or ""
        # start counts characters of the text before the cuts: less the earlier cuts' lengths
        earlier = sum(end - start for start, end in spans["cuts"].get(span["id"], [])
                      if end <= span["start"])
        at = min(span["start"] - earlier, len(text))
        before, after = text[max(0, at - context) : at], text[at : at + context]
        shown = before + span["text"] + after
        out.append({"id": span["id"], "duplicate_of": span["duplicate_of"],
                    "tokens": span["tokens"], "start": span["start"], "end": span["end"],
                    "text": shown, "text_chars": len(shown),  # a window: no "more" note
                    "metrics": {}, "highlights": [(len(before), len(before) + len(span["text"]),
                                                   "cut span")]})
    return out


def _funnel(stats: dict[str, Any], words_by_reason: Counter[str], kept_words: int) -> list[dict]:
    read = stats["documents"]["read"]
    stages = list(stats["stages"].items())
    words_rejected = Counter()
    for key, words in words_by_reason.items():
        words_rejected[key.partition(".")[0]] += words
    order = [name for name, _ in stages]
    text_from = order.index(TEXT_STAGES_FROM) if TEXT_STAGES_FROM in order else 0
    rows, remaining = [], read
    words_base = None
    for i, (name, stage) in enumerate(stages):
        remaining -= sum(stage["rejected"].values())
        words = None
        if i >= text_from:
            words = kept_words + sum(words_rejected[n] for n in order[i + 1 :])
            words_base = words_base if words_base is not None else words
        rows.append({"stage": name, "docs": remaining,
                     "docs_pct": 100.0 * remaining / read if read else 0.0,
                     "dropped": sum(stage["rejected"].values()), "words": words,
                     "words_pct": (100.0 * words / words_base if words is not None and words_base
                                   else None)})
    return rows


def collect(run: RunDir | str | Path, samples: int = 5, seed: int = 0) -> dict[str, Any]:
    run = as_run_dir(run)
    if not run.exists(MANIFEST):
        raise ReportError(f"{run} is not a run directory: no manifest.json")
    manifest = run.read_json(MANIFEST)
    config = manifest.get("config", {})
    stats, notes = load_stats(run, manifest)
    keys = whatif.metric_keys(config)
    rejected = _scan_rejected(run, config, keys, samples, seed)
    spans = _scan_spans(run, samples, seed)
    wanted = {s["id"] for s in spans["samples"]}
    kept = _scan_kept(run, sorted({k for ks in keys.values() for k in ks}), samples, seed, wanted)
    kept_rows = _fetch_rows(run, kept["samples"], ["id", "url", "language", "text", "token_count",
                                              "metrics"])
    kept_examples = [{"id": r["id"], "url": r["url"], "language": r["language"],
                      "text": (r["text"] or "")[:EXAMPLE_CHARS], "text_chars": len(r["text"] or ""),
                      "metrics": {}, "highlights": []} for r in kept_rows]
    kept_words = int(kept["words"].sum())
    started = time.monotonic()
    whatifs = whatif.build(config, kept["metrics"], kept["words"], rejected["stage_rows"],
                           kept["language"])
    log.info("what-if tables: %d in %.1f s", len(whatifs), time.monotonic() - started)
    sizes = Counter(n + 1 for n in rejected["clusters"].values())
    verdict = accounting.check(stats, kept["by_file"], rejected["by_file"])
    accounting.record(stats, verdict)
    return {
        "run": str(run), "manifest": manifest, "stats": stats, "notes": notes,
        "funnel": _funnel(stats, rejected["words_by_reason"], kept_words),
        "kept_words": kept_words,
        "reasons": dict(rejected["by_reason"]), "reason_words": dict(rejected["words_by_reason"]),
        "examples": rejected["examples"], "kept_examples": kept_examples,
        "whatif": whatifs,
        "languages": {"kept": dict(kept["languages"].most_common()),
                      "kept_words": dict(kept["language_words"]),
                      "rejected": dict(rejected["language_rejected"].most_common())},
        "dedup": {"cluster_sizes": dict(sorted(sizes.items())),
                  "clusters": len(rejected["clusters"]),
                  "spans": {k: spans[k] for k in ("spans", "chars", "documents")},
                  "span_tokens": dict(sorted(spans["tokens"].items())),
                  "span_examples": _span_examples(run, spans, kept)},
        "files": verdict["files"], "accounting": verdict,
    }
