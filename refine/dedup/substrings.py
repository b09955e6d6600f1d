"""Stage 9 over one partition: exact substring dedup of a contiguous range of documents.

The partition's surviving documents are laid out best-ranked first (the ranking that picks
fuzzy-dedup survivors: longest, then id hash), so the copy of a shared span that stays is in
the document that would have survived anyway; every later copy of a span of `min_tokens`
tokens or more is cut (`refine.dedup.exact`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from refine.dedup.config import ExactDedupConfig
from refine.dedup.exact import DuplicateSpan, cut_spans, find_duplicate_spans
from refine.rundir import RunDir


@dataclass
class PartitionSpans:
    doc: np.ndarray  # int64 global index of the document cut
    spans: list[DuplicateSpan]  # span.source: global index of the document keeping the span
    dropped: dict[int, int]  # global index -> global index it duplicates: left too short
    chars_after: dict[int, int]  # global index -> text length after the cuts
    documents: int
    cpu_s: float


def partition_ranges(chars: np.ndarray, alive: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges of global indices holding at most `limit` characters of
    surviving text each (a single larger document gets a range of its own)."""
    ranges: list[tuple[int, int]] = []
    lo, size = 0, 0
    for index, length in enumerate(np.where(alive, chars, 0).tolist()):
        if size and size + length > limit:
            ranges.append((lo, index))
            lo, size = index, 0
        size += length
    if lo < len(chars):
        ranges.append((lo, len(chars)))
    return ranges


def dedup_partition(run: RunDir, shards: list[tuple[str, int]], lo: int, hi: int,
                    alive: np.ndarray, rank: np.ndarray,
                    config: ExactDedupConfig) -> PartitionSpans:
    """`shards`: (path, global index of its first row) of every shard overlapping [lo, hi);
    `alive` and `rank` are the slices [lo, hi) of the run-wide arrays."""
    started = time.process_time()
    texts: dict[int, str] = {}
    for path, first in shards:
        column = run.read_table(path, columns=["text"]).column("text")
        start, stop = max(lo, first), min(hi, first + len(column))
        for offset, text in enumerate(column.slice(start - first, stop - start).to_pylist()):
            if alive[start + offset - lo]:
                texts[start + offset] = text
    order = sorted(texts, key=lambda g: rank[g - lo])
    found = find_duplicate_spans([texts[g] for g in order], config.min_tokens)
    docs: list[int] = []
    spans: list[DuplicateSpan] = []
    dropped: dict[int, int] = {}
    chars_after: dict[int, int] = {}
    for position, doc_spans in enumerate(found):
        if not doc_spans:
            continue
        doc = order[position]
        global_spans = [DuplicateSpan(s.start, s.end, order[s.source], s.tokens)
                        for s in doc_spans]
        remaining = cut_spans(texts[doc], doc_spans)
        if len(remaining.strip()) < config.min_chars:
            largest = max(global_spans, key=lambda s: s.end - s.start)
            dropped[doc] = largest.source
            continue
        chars_after[doc] = len(remaining)
        docs += [doc] * len(global_spans)
        spans += global_spans
    return PartitionSpans(np.array(docs, dtype=np.int64), spans, dropped, chars_after,
                          len(order), time.process_time() - started)
