"""Stages 8-10 over a whole run: reads the filtered shards, writes data/, rejected/, spans/.

Applied in the order fuzzy (8), URL (10), exact substrings (9): URL dedup keeps the longest text
per URL before any cut, so exact dedup only ever cuts a passage in favour of a document that
stays kept (the other order could remove the one kept copy of a passage).

Knows nothing of Ray: the caller passes `map_tasks(step, fn, argument_tuples) -> results in
order`,
which `refine.dag` runs as Ray tasks (tests may pass a plain loop). Only band keys, ids and
per-document numbers travel to the driver; texts are read by the tasks from the shards.
The stats file ``RUN/stats/dedup.json`` is written last and marks the stage as done.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from refine.dedup.config import DedupConfig
from refine.dedup.fuzzy import (
    KEY_DTYPE,
    ShardDocs,
    bucket_edges,
    bucket_sub,
    choose_survivors,
    preference_order,
    sign_shard,
)
from refine.dedup.rewrite import Removal, ShardEdits, rewrite_shard
from refine.dedup.substrings import dedup_partition, partition_ranges
from refine.dedup.urls import decide, read_url_sets, write_url_set
from refine.rundir import (
    DATA,
    DEDUP_STATS,
    DEDUP_WORK,
    FILTERED,
    REJECTED,
    SPANS,
    RunDir,
    as_run_dir,
)

MapTasks = Callable[[str, Callable[..., Any], list[tuple]], list[Any]]  # (step name, fn, args)
MIN_BUCKETS = 8
log = logging.getLogger(__name__)


class IdTable:
    """Every document's id, in the shards' Arrow buffers (~length + 4 bytes each; a list of
    Python str costs ~100 bytes per id more), looked up only for duplicate_of."""

    def __init__(self, arrays: list[pa.StringArray]):
        self.array = pa.chunked_array(arrays, type=pa.string())  # no copy

    def __getitem__(self, index: int) -> str:
        return self.array[index].as_py()


def dedup_done(run_dir: RunDir) -> bool:
    return run_dir.exists(DEDUP_STATS)


def _clear_outputs(run_dir: RunDir) -> None:
    """An interrupted dedup is redone from the filtered shards: remove what it wrote."""
    for sub in (DATA, SPANS, DEDUP_WORK):
        run_dir.remove_tree(sub)
    run_dir.remove_prefixed(REJECTED, "dedup-")
    run_dir.makedirs(DATA)


def _stage(docs_in: int) -> dict[str, Any]:
    return {"in": docs_in, "out": docs_in, "rejected": {}, "cpu_s": 0.0}


def run_dedup(run_dir: RunDir | str | Path, config: DedupConfig, rejected_text_chars: int,
              compression: str, map_tasks: MapTasks) -> dict[str, Any]:
    started = time.monotonic()
    run_dir = as_run_dir(run_dir)
    _clear_outputs(run_dir)
    shards = run_dir.files(FILTERED)
    total = sum(run_dir.num_rows(p) for p in shards)
    fuzzy = config.fuzzy if config.fuzzy.enabled else None
    buckets = 1
    if fuzzy is not None:
        key_bytes = total * fuzzy.num_bands * KEY_DTYPE.itemsize
        # at least MIN_BUCKETS, so that every worker shares the grouping even on small runs
        buckets = max(MIN_BUCKETS, math.ceil(key_bytes / fuzzy.bucket_bytes))
    bucket_dir = f"{DEDUP_WORK}/bands"
    log.info("dedup: %d documents in %d shards", total, len(shards))
    per_shard: list[ShardDocs] = map_tasks(
        "dedup: signatures", sign_shard,
        [(run_dir, p, i, bucket_dir, buckets, fuzzy) for i, p in enumerate(shards)])
    offsets = np.cumsum([0] + [len(d) for d in per_shard]).astype(np.int64)
    ids = IdTable([d.ids for d in per_shard])
    chars = np.concatenate([d.chars for d in per_shard]) if per_shard else np.empty(0, np.int64)
    id_hash = np.concatenate([d.id_hash for d in per_shard]) if per_shard else np.empty(0, "u8")
    url_hash = np.concatenate([d.url_hash for d in per_shard]) if per_shard else np.empty(0, "u8")
    rank = preference_order(chars, id_hash)
    removals: dict[int, Removal] = {}
    stages: dict[str, dict[str, Any]] = {}
    cluster_size: dict[int, int] = {}  # survivors of clusters of two or more: the size

    if fuzzy is not None:
        stage = stages["fuzzy_dedup"] = _stage(total)
        stage["cpu_s"] = sum(d.cpu_s for d in per_shard)
        results = map_tasks("dedup: band buckets", bucket_edges,
                            [(run_dir, bucket_sub(bucket_dir, k)) for k in range(buckets)])
        edges = np.concatenate([e for e, _ in results]) if results else np.empty((0, 2), "u8")
        stage["cpu_s"] += sum(cpu for _, cpu in results)
        survivors = choose_survivors(edges, offsets, rank)
        for doc in survivors.removed.tolist():
            removals[doc] = Removal("fuzzy_dedup", "near_duplicate",
                                    ids[int(survivors.survivor[doc])])
        kept_in_cluster = np.flatnonzero((survivors.cluster_size > 1)
                                         & (survivors.survivor == np.arange(total)))
        cluster_size = dict(zip(kept_in_cluster.tolist(),
                                survivors.cluster_size[kept_in_cluster].tolist(), strict=True))
        stage.update(clusters=survivors.clusters, candidate_pairs=len(edges), buckets=buckets,
                     preset=f"{fuzzy.num_bands}x{fuzzy.rows_per_band}")
        log.info("fuzzy dedup: %d near-duplicates in %d clusters", len(removals),
                 survivors.clusters)

    # URL dedup (stage 10) is decided before exact substrings (stage 9), on the texts before any
    # cut: a passage is then only ever cut in favour of a document that stays kept.
    alive = np.ones(total, dtype=bool)
    alive[list(removals)] = False
    if config.urls.enabled:
        started_urls = time.process_time()
        stage = stages["url_dedup"] = _stage(int(alive.sum()))
        decision = decide(url_hash, alive, rank, read_url_sets(config.urls.previous_runs))
        for doc in np.flatnonzero(decision.duplicate_of >= 0).tolist():
            removals[doc] = Removal("url_dedup", "duplicate_url",
                                    ids[int(decision.duplicate_of[doc])])
        for doc, earlier_id in decision.earlier_run_id.items():
            removals[doc] = Removal("url_dedup", "url_in_earlier_run", earlier_id)
        alive[list(removals)] = False
        stage["cpu_s"] = time.process_time() - started_urls

    spans_by_doc: dict[int, list] = {}
    final_chars = chars.copy()
    if config.exact.enabled:
        stage = stages["exact_dedup"] = _stage(int(alive.sum()))
        ranges = partition_ranges(chars, alive, config.exact.partition_bytes)
        tasks = []
        for lo, hi in ranges:
            overlapping = [(shards[i], int(offsets[i])) for i in range(len(shards))
                           if offsets[i] < hi and offsets[i + 1] > lo]
            tasks.append((run_dir, overlapping, lo, hi, alive[lo:hi], rank[lo:hi],
                          config.exact))
        spans_cut = 0
        for part in map_tasks("dedup: exact substrings", dedup_partition, tasks):
            stage["cpu_s"] += part.cpu_s
            for doc, source in part.dropped.items():
                removals[doc] = Removal("exact_dedup", "too_short_after_cut", ids[source])
            for doc, span in zip(part.doc.tolist(), part.spans, strict=True):
                spans_by_doc.setdefault(doc, []).append((span, ids[span.source]))
                spans_cut += 1
            for doc, length in part.chars_after.items():
                final_chars[doc] = length
        stage.update(partitions=len(ranges), spans_cut=spans_cut,
                     documents_cut=len(spans_by_doc),
                     chars_cut=int((chars - final_chars)[list(spans_by_doc)].sum()))
        log.info("exact substring dedup: %d spans cut from %d documents, %d dropped", spans_cut,
                 len(spans_by_doc), sum(r.stage == "exact_dedup" for r in removals.values()))
        for doc in [d for d in spans_by_doc if d in removals]:
            del spans_by_doc[doc]  # dropped as too short after its cuts: the row keeps its text

    if config.urls.enabled:
        alive[list(removals)] = False
        write_url_set(run_dir, url_hash, ids.array, alive)

    edits = [ShardEdits(fuzzy=fuzzy is not None) for _ in shards]
    shard_of = np.searchsorted(offsets, np.arange(total), side="right") - 1
    for doc, removal in removals.items():
        edits[shard_of[doc]].removals[doc - int(offsets[shard_of[doc]])] = removal
    for doc, spans in spans_by_doc.items():
        edits[shard_of[doc]].spans[doc - int(offsets[shard_of[doc]])] = spans
    for doc, size in cluster_size.items():
        edits[shard_of[doc]].cluster_size[doc - int(offsets[shard_of[doc]])] = size
    rewritten = map_tasks("dedup: rewrite shards", rewrite_shard, [
        (path, run_dir, edit, rejected_text_chars, compression)
        for path, edit in zip(shards, edits, strict=True)])

    by_input: dict[str, Counter[str]] = {}
    for result in rewritten:
        for key, count in result.rejected.items():
            path, reason = key.split("\t")
            by_input.setdefault(path, Counter())[reason] += count
    for removal in removals.values():
        stage = stages[removal.stage]
        stage["rejected"][removal.reason] = stage["rejected"].get(removal.reason, 0) + 1
        stage["out"] -= 1
    for stage in stages.values():
        stage["cpu_s"] = round(stage["cpu_s"], 3)
    summary = {
        "documents_in": total,
        "documents_out": sum(r.kept for r in rewritten),
        "stages": stages,
        "inputs": {path: dict(sorted(c.items())) for path, c in sorted(by_input.items())},
        "wall_s": round(time.monotonic() - started, 3),
    }
    run_dir.remove_tree(DEDUP_WORK)
    run_dir.write_json(summary, DEDUP_STATS)  # last: marks the stage done
    return summary
