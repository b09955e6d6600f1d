"""Stages 8-10 over a whole run: reads the filtered shards, writes data/, rejected/, spans/.

Applied in the order fuzzy (8), URL (10), exact substrings (9): URL dedup keeps the longest text
per URL before any cut, so exact dedup only ever cuts a passage in favour of a document that
stays kept (the other order could remove the one kept copy of a passage).

Every step is a set of tasks that exchange records through files under ``RUN/dedup/work``
(`refine.dedup.shuffle`): per shard, per band-key bucket, per graph partition, per URL range,
per window partition. The driver holds only counts, O(shards + partitions): no per-document
state, no edge list. Knows nothing of Ray: the caller passes
`map_tasks(step, fn, argument_tuples) -> results in order`, which `refine.dag` runs on its
workers (tests may pass a plain loop). The stats file ``RUN/stats/dedup.json`` is written last and
marks the stage as done.
"""

from __future__ import annotations

import logging
import math
import posixpath
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from refine.dedup.config import DedupConfig
from refine.dedup.edits import FUZZY, removed_rows, shard_edits
from refine.dedup.fuzzy import (
    BUCKET_COPIES,
    ENTRY,
    SignedShard,
    bucket_edges,
    read_docs,
    sign_shard,
)
from refine.dedup.minhash import MinHasher, band_key_array
from refine.dedup.names import answer_names
from refine.dedup.rewrite import RewriteResult, rewrite_shard
from refine.dedup.stars import connect, star_decisions
from refine.dedup.substrings import shard_windows, window_partition, window_partitions
from refine.dedup.urls import (
    decide_range,
    range_bits,
    scatter_kept_urls,
    scatter_urls,
    write_url_set,
)
from refine.dedup.windows import batch_windows, repeat_marks
from refine.filters.pii import PIIConfig
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
from refine.stages import EXACT_DEDUP, FUZZY_DEDUP, PII, URL_DEDUP

MapTasks = Callable[[str, Callable[..., Any], list[tuple]], list[Any]]  # (step name, fn, args)
MIN_BUCKETS = 8
log = logging.getLogger(__name__)


def prepare_worker(config: DedupConfig) -> None:
    """Load in this process what the dedup steps use, on a few words: numba's cached machine
    code and the character tables. Workers of stages 1-7 with no unit left run it, so that the
    first dedup step starts warm."""
    text = " ".join(["warm"] * 2 * config.exact.min_tokens)
    if config.fuzzy.enabled:
        hasher = MinHasher(config.fuzzy)
        band_key_array(hasher.hash_signatures(hasher.texts_hashes([text])), config.fuzzy)
    if config.exact.enabled:
        repeat_marks(batch_windows([text], np.zeros(1, dtype=np.uint64),
                                   config.exact.min_tokens))


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


def _fuzzy(run_dir: RunDir, config: DedupConfig, shards: list[str], signed: list[SignedShard],
           buckets: int, map_tasks: MapTasks) -> dict[str, Any]:
    """Stage 8 after signing: edges per bucket, components in rounds, decisions per shard."""
    fuzzy = config.fuzzy
    total = sum(s.documents for s in signed)
    stage = _stage(total)
    stage["cpu_s"] = sum(s.cpu_s for s in signed)
    found = map_tasks("dedup: band buckets", bucket_edges,
                      [(run_dir, DEDUP_WORK, k, buckets) for k in range(buckets)])
    stage["cpu_s"] += sum(cpu for _, cpu in found)
    graph, rounds, cpu_s = connect(run_dir, f"{DEDUP_WORK}/cc", buckets, map_tasks)
    stage["cpu_s"] += cpu_s
    decided = map_tasks("dedup: survivors", star_decisions,
                        [(run_dir, DEDUP_WORK, graph, f"{DEDUP_WORK}/{FUZZY}", p, len(shards))
                         for p in range(buckets)])
    stage["cpu_s"] += sum(cpu for _, _, cpu in decided)
    clusters, removed = sum(c for c, _, _ in decided), sum(r for _, r, _ in decided)
    stage.update(clusters=clusters, candidate_pairs=sum(e for e, _ in found), buckets=buckets,
                 rounds=rounds, preset=f"{fuzzy.num_bands}x{fuzzy.rows_per_band}")
    log.info("fuzzy dedup: %d near-duplicates in %d clusters (%d rounds)", removed, clusters,
             rounds)
    return stage


def _scatter_urls(run: RunDir, shard: int, name: str, bits: int) -> int:
    docs = read_docs(run, DEDUP_WORK, name)
    alive = np.ones(len(docs), dtype=bool)
    alive[removed_rows(run, DEDUP_WORK, shard, urls=False)] = False
    scatter_urls(run, DEDUP_WORK, docs, alive, bits, name)
    return int(alive.sum())


def _rewrite(source: str, run: RunDir, shard: int, config: DedupConfig,
             url_bits: int, rejected_text_chars: int, compression: str,
             pii: PIIConfig | None) -> RewriteResult:
    edits = shard_edits(run, DEDUP_WORK, shard, config.fuzzy.enabled, config.urls.enabled,
                        config.exact.enabled)
    edits.min_tokens, edits.min_chars = config.exact.min_tokens, config.exact.min_chars
    edits.pii = pii
    result, kept_rows, kept_ids = rewrite_shard(source, run, edits, rejected_text_chars,
                                                compression)
    if config.urls.enabled:
        url_hash = read_docs(run, DEDUP_WORK, result.shard)["url_hash"][kept_rows]
        scatter_kept_urls(run, DEDUP_WORK, url_hash, kept_ids, url_bits, result.shard)
    return result


def run_dedup(run_dir: RunDir | str | Path, config: DedupConfig, rejected_text_chars: int,
              compression: str, map_tasks: MapTasks, pii: PIIConfig | None = None
              ) -> dict[str, Any]:
    """`pii`: anonymise the text written (refine.filters.pii), counted as a stage of its own."""
    started = time.monotonic()
    run_dir = as_run_dir(run_dir)
    _clear_outputs(run_dir)
    shards = run_dir.files(FILTERED)
    total = sum(run_dir.num_rows(p) for p in shards)
    fuzzy = config.fuzzy if config.fuzzy.enabled else None
    buckets = 1
    if fuzzy is not None:
        key_bytes = total * fuzzy.num_bands * ENTRY.itemsize
        # at least MIN_BUCKETS, so that every worker shares the grouping even on small runs
        buckets = max(MIN_BUCKETS, math.ceil(key_bytes * BUCKET_COPIES / fuzzy.bucket_bytes))
    log.info("dedup: %d documents in %d shards", total, len(shards))
    signed: list[SignedShard] = map_tasks(
        "dedup: signatures", sign_shard,
        [(run_dir, p, i, DEDUP_WORK, buckets, fuzzy) for i, p in enumerate(shards)])
    stages: dict[str, dict[str, Any]] = {}
    if fuzzy is not None:
        stages[FUZZY_DEDUP.name] = _fuzzy(run_dir, config, shards, signed, buckets, map_tasks)

    # URL dedup (stage 10) is decided before exact substrings (stage 9), on the texts before any
    # cut: a passage is then only ever cut in favour of a document that stays kept.
    names = [posixpath.basename(p) for p in shards]
    url_bits = range_bits(total, config.urls.task_bytes)
    if config.urls.enabled:
        started_urls = time.monotonic()
        alive = map_tasks("dedup: URLs", _scatter_urls,
                          [(run_dir, i, name, url_bits) for i, name in enumerate(names)])
        stage = stages[URL_DEDUP.name] = _stage(sum(alive))
        decided = map_tasks("dedup: URL ranges", decide_range, [
            (run_dir, DEDUP_WORK, part, url_bits, len(shards), config.urls.previous_runs)
            for part in range(1 << url_bits)])
        stage.update(ranges=1 << url_bits)
        stage["cpu_s"] = time.monotonic() - started_urls  # wall: the steps are I/O
        log.info("URL dedup: %d duplicates, %d kept by earlier runs",
                 sum(d for d, _ in decided), sum(e for _, e in decided))

    if config.exact.enabled:
        partitions = window_partitions(sum(s.chars for s in signed), config.exact.task_bytes)
        hashed = map_tasks("dedup: token windows", shard_windows, [
            (run_dir, DEDUP_WORK, path, i, config.exact.min_tokens, config.urls.enabled,
             partitions) for i, path in enumerate(shards)])
        stage = stages[EXACT_DEDUP.name] = _stage(sum(h[0] for h in hashed))
        found = map_tasks("dedup: repeated windows", window_partition,
                          [(run_dir, DEDUP_WORK, p, len(shards)) for p in range(partitions)])
        stage["cpu_s"] = sum(h[2] for h in hashed) + sum(cpu for _, cpu in found)
        stage.update(partitions=partitions, windows=sum(h[1] for h in hashed),
                     repeated_windows=sum(m for m, _ in found))

    map_tasks("dedup: ids of survivors and sources", answer_names,
              [(run_dir, DEDUP_WORK, i, path, len(shards)) for i, path in enumerate(shards)])
    rewritten: list[RewriteResult] = map_tasks("dedup: rewrite shards", _rewrite, [
        (path, run_dir, i, config, url_bits, rejected_text_chars, compression, pii)
        for i, path in enumerate(shards)])
    if config.exact.enabled:
        stage = stages[EXACT_DEDUP.name]
        stage.update(spans_cut=sum(r.spans for r in rewritten),
                     documents_cut=sum(r.documents_cut for r in rewritten),
                     chars_cut=sum(r.chars_cut for r in rewritten))
        log.info("exact substring dedup: %d spans cut from %d documents", stage["spans_cut"],
                 stage["documents_cut"])
    if pii is not None:
        stage = stages[PII.name] = _stage(0)  # counted by the rewrites
        for result in rewritten:
            for key, value in result.pii.items():
                stage[key] = stage.get(key, 0) + value
    if config.urls.enabled:
        map_tasks("dedup: URL set", write_url_set, [(run_dir, DEDUP_WORK, url_bits)])

    by_input: dict[str, Counter[str]] = {}
    by_stage: dict[str, Counter[str]] = {}
    for result in rewritten:
        for key, count in result.rejected.items():
            path, reason = key.split("\t")
            by_input.setdefault(path, Counter())[reason] += count
            stage_name, why = reason.split(".", 1)
            by_stage.setdefault(stage_name, Counter())[why] += count
    for name, stage in stages.items():
        stage["rejected"] = dict(sorted(by_stage.get(name, Counter()).items()))
        stage["out"] = stage["in"] - sum(stage["rejected"].values())
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
