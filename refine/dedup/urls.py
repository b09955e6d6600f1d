"""Stage 10, URL dedup: a normalised URL is kept once per run, and not again in later runs.

A run's kept URLs are written to ``RUN/dedup/urls.parquet`` (url key, its 64-bit hash, the
document id); a later run lists earlier runs in ``dedup.urls.previous_runs`` and rejects
documents whose URL one of them kept, naming the earlier document in ``duplicate_of``.
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa

from refine import arrowfile
from refine.dedup.config import url_set_path
from refine.rundir import URL_SET, RunDir
from refine.shards import URL_SET_SCHEMA


@dataclass
class URLDecision:
    duplicate_of: np.ndarray  # int64 per candidate document: the kept one, or -1
    earlier_run_id: dict[int, str]  # document index -> id kept by an earlier run


def read_url_sets(runs: list[str]) -> tuple[np.ndarray, list[str]]:
    """Earlier runs' kept URL hashes (sorted, unique) and the id that kept each."""
    hashes: list[np.ndarray] = []
    ids: list[str] = []
    for run in runs:
        fs, path = fsspec.core.url_to_fs(url_set_path(run))
        table = arrowfile.read_table(fs, path)
        hashes.append(table.column("url_hash").to_numpy())
        ids += table.column("id").to_pylist()
    if not hashes:
        return np.empty(0, dtype=np.uint64), []
    joined = np.concatenate(hashes)
    unique, first = np.unique(joined, return_index=True)  # the earliest listed run wins
    return unique, [ids[i] for i in first]


def decide(url_hash: np.ndarray, alive: np.ndarray, rank: np.ndarray,
           earlier: tuple[np.ndarray, list[str]]) -> URLDecision:
    """Among `alive` documents with a URL (hash != 0), keep the best-ranked per URL."""
    n = len(url_hash)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    candidates = np.flatnonzero(alive & (url_hash != 0))
    earlier_hashes, earlier_ids = earlier
    earlier_run_id: dict[int, str] = {}
    if len(earlier_hashes) and len(candidates):
        pos = np.searchsorted(earlier_hashes, url_hash[candidates])
        pos = np.minimum(pos, len(earlier_hashes) - 1)
        seen = earlier_hashes[pos] == url_hash[candidates]
        for doc, p in zip(candidates[seen].tolist(), pos[seen].tolist(), strict=True):
            earlier_run_id[doc] = earlier_ids[p]
        candidates = candidates[~seen]
    if len(candidates):
        order = candidates[np.lexsort((rank[candidates], url_hash[candidates]))]
        hashes = url_hash[order]
        first = np.r_[True, hashes[1:] != hashes[:-1]]
        keeper = order[np.flatnonzero(first)[np.cumsum(first) - 1]]
        duplicate_of[order[~first]] = keeper[~first]
    return URLDecision(duplicate_of, earlier_run_id)


def write_url_set(run_dir: RunDir, url_hash: np.ndarray, ids: pa.ChunkedArray,
                  kept: np.ndarray) -> None:
    rows = np.flatnonzero(kept & (url_hash != 0))
    rows = rows[np.argsort(url_hash[rows], kind="stable")]
    table = pa.table({"url_hash": pa.array(url_hash[rows], pa.uint64()),
                      "id": ids.take(pa.array(rows, pa.int64()))},
                     schema=URL_SET_SCHEMA)
    run_dir.write_table(table, run_dir.path(URL_SET), "zstd")
