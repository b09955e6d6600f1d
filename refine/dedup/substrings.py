"""Stage 9's tasks: window hashes per shard, then repeats found per hash partition.

`shard_windows` (one task per shard) hashes every `min_tokens` window of the shard's surviving
documents and sends each to the partition of its hash; `window_partition` (one task per
partition) marks every occurrence of a window but the first in stream order and sends the marks
to the document's shard, where the rewrite turns them into cuts (`refine.dedup.windows`).
A partition holds about `task_bytes` of windows, so a task's memory is bounded by the config.
"""

from __future__ import annotations

import posixpath
import time

import numpy as np
import pyarrow as pa

from refine.dedup.edits import MARKS, WINDOWS, removed_rows
from refine.dedup.fuzzy import read_docs
from refine.dedup.names import request_names
from refine.dedup.shuffle import gather, hash_partition, scatter, shard_of
from refine.dedup.windows import WINDOW, batch_windows, repeat_marks
from refine.rundir import RunDir

CHARS_PER_TOKEN = 4  # to size partitions before tokenising: English web text has ~5.5
SORT_COPIES = 3  # a partition task holds its windows, their sort order and the sorted copy
BATCH_DOCS = 2_000  # documents tokenised together (~70 MB of windows at 4 KB each)
FLUSH_WINDOWS = 1 << 21  # windows of a shard sent at once (~90 MB): files = partitions x flushes


def window_partitions(chars: int, task_bytes: int) -> int:
    """Partitions for `chars` of text, each task within `task_bytes` (at least 8 partitions,
    so that every worker shares the work)."""
    held = chars // CHARS_PER_TOKEN * WINDOW.itemsize * SORT_COPIES
    return max(8, -(-held // task_bytes))


def shard_windows(run: RunDir, work: str, path: str, shard: int, min_tokens: int,
                  urls: bool, partitions: int) -> tuple[int, int, float]:
    """Returns (documents hashed, windows sent, CPU seconds)."""
    started = time.process_time()
    name = posixpath.basename(path)
    nodes = read_docs(run, work, name)["node"]
    alive = np.ones(len(nodes), dtype=bool)
    alive[removed_rows(run, work, shard, urls)] = False
    texts = run.read_table(path, columns=["text"]).column("text")
    rows = np.flatnonzero(alive)
    pending: list[np.ndarray] = []
    sent = part = pending_windows = 0
    for first in range(0, len(rows), BATCH_DOCS):
        batch = rows[first : first + BATCH_DOCS]
        pending.append(batch_windows(texts.take(pa.array(batch)).to_pylist(), nodes[batch],
                                     min_tokens))
        pending_windows += len(pending[-1])
        last = first + BATCH_DOCS >= len(rows)
        if pending_windows >= FLUSH_WINDOWS or last:  # few files: one per partition and flush
            windows = np.concatenate(pending)
            scatter(run, f"{work}/{WINDOWS}", windows,
                    hash_partition(windows["h1"], partitions), partitions, f"{name}-{part}")
            sent, part, pending, pending_windows = sent + len(windows), part + 1, [], 0
    return int(alive.sum()), sent, time.process_time() - started


def window_partition(run: RunDir, work: str, partition: int, shards: int
                     ) -> tuple[int, float]:
    """Returns (marks sent, CPU seconds)."""
    started = time.process_time()
    marks = repeat_marks(gather(run, f"{work}/{WINDOWS}", partition, WINDOW))
    scatter(run, f"{work}/{MARKS}", marks, shard_of(marks["doc"]), shards, f"{partition:05d}")
    request_names(run, work, marks["source"], marks["doc"], shards, f"marks-{partition:05d}")
    return len(marks), time.process_time() - started

