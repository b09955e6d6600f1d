"""Stage 10, URL dedup: a normalised URL is kept once per run, and not again in later runs.

A run's kept URLs are written to ``RUN/dedup/urls.parquet`` (their 64-bit hash and the document
id, sorted by hash); a later run lists earlier runs in ``dedup.urls.previous_runs`` and rejects
documents whose URL one of them kept, naming the earlier document in ``duplicate_of``.

Over a run, URL hashes are shuffled into ranges of their top bits (`url_range`): one task per
range decides its URLs (`decide_range`), and the kept URLs of all ranges, written in range
order, are the sorted URL set (`write_url_set`).
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refine import arrowfile
from refine.dedup.config import url_set_path
from refine.dedup.names import request_names
from refine.dedup.shuffle import (
    NODE,
    gather,
    gather_table,
    node_order,
    scatter,
    scatter_table,
    shard_of,
)
from refine.rundir import URL_SET, RunDir
from refine.shards import URL_SET_SCHEMA

URL_ENTRY = np.dtype([("url_hash", "<u8"), ("node", NODE)])
DUPLICATE = np.dtype([("doc", "<u8"), ("keeper", "<u8")])
EARLIER_SCHEMA = pa.schema([("doc", pa.uint64()), ("id", pa.string())])
URLS, DUPLICATES, EARLIER, KEPT = "urls", "url-duplicates", "url-earlier", "url-kept"


@dataclass
class URLDecision:
    duplicate_of: np.ndarray  # int64 per candidate document: the kept one, or -1
    earlier_run_id: dict[int, str]  # document index -> id kept by an earlier run


def range_bits(documents: int, bytes_per_task: int) -> int:
    """Bits of URL hash that name a range: ranges of about `bytes_per_task` of entries."""
    ranges = max(1, -(-documents * URL_ENTRY.itemsize // bytes_per_task))
    return max(3, (ranges - 1).bit_length())  # at least 8 ranges: every worker shares the work


def url_range(url_hash: np.ndarray, bits: int) -> np.ndarray:
    return (np.asarray(url_hash, dtype=np.uint64) >> np.uint64(64 - bits)).astype(np.int64)


def read_url_sets(runs: list[str], bits: int = 0, part: int = 0
                  ) -> tuple[np.ndarray, list[str]]:
    """Earlier runs' kept URL hashes (sorted, unique) and the id that kept each; with `bits`,
    only those in range `part`."""
    hashes: list[np.ndarray] = []
    ids: list[str] = []
    for run in runs:
        fs, path = fsspec.core.url_to_fs(url_set_path(run))
        with arrowfile.parquet_file(fs, path) as parquet:
            for batch in parquet.iter_batches():
                found = batch.column("url_hash").to_numpy()
                mine = url_range(found, bits) == part if bits else np.ones(len(found), bool)
                hashes.append(found[mine])
                ids += batch.column("id").filter(pa.array(mine)).to_pylist()
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


def scatter_urls(run: RunDir, work: str, docs: np.ndarray, alive: np.ndarray, bits: int,
                 producer: str) -> None:
    """Send one shard's surviving documents with a URL to the task of their URL's range."""
    rows = np.flatnonzero(alive & (docs["url_hash"] != 0))
    entries = np.empty(len(rows), dtype=URL_ENTRY)
    entries["url_hash"], entries["node"] = docs["url_hash"][rows], docs["node"][rows]
    scatter(run, f"{work}/{URLS}", entries, url_range(entries["url_hash"], bits), 1 << bits,
            producer)


def decide_range(run: RunDir, work: str, part: int, bits: int, shards: int,
                 previous_runs: list[str]) -> tuple[int, int]:
    """Decide one range of URLs; the documents removed go to their shard's folders (keeper
    document, or the earlier run's id). Returns (duplicates, seen in earlier runs)."""
    entries = gather(run, f"{work}/{URLS}", part, URL_ENTRY)
    rank = np.empty(len(entries), dtype=np.int64)
    rank[node_order(entries["node"])] = np.arange(len(entries))
    decision = decide(entries["url_hash"], np.ones(len(entries), dtype=bool), rank,
                      read_url_sets(previous_runs, bits, part))
    docs = entries["node"]["doc"]
    duplicates = np.flatnonzero(decision.duplicate_of >= 0)
    found = np.empty(len(duplicates), dtype=DUPLICATE)
    found["doc"], found["keeper"] = docs[duplicates], docs[decision.duplicate_of[duplicates]]
    producer = f"{part:05d}"
    scatter(run, f"{work}/{DUPLICATES}", found, shard_of(found["doc"]), shards, producer)
    request_names(run, work, found["keeper"], found["doc"], shards, f"urls-{producer}")
    earlier_rows = np.array(sorted(decision.earlier_run_id), dtype=np.int64)
    earlier = pa.table({"doc": pa.array(docs[earlier_rows], pa.uint64()),
                        "id": [decision.earlier_run_id[i] for i in earlier_rows.tolist()]},
                       schema=EARLIER_SCHEMA)
    scatter_table(run, f"{work}/{EARLIER}", earlier, shard_of(docs[earlier_rows]), shards,
                  producer)
    return len(found), len(earlier_rows)


def scatter_kept_urls(run: RunDir, work: str, url_hash: np.ndarray, ids: pa.Array, bits: int,
                      producer: str) -> None:
    """One shard's kept documents with a URL, for the run's URL set."""
    rows = np.flatnonzero(url_hash != 0)
    table = pa.table({"url_hash": pa.array(url_hash[rows], pa.uint64()),
                      "id": ids.take(pa.array(rows, pa.int64()))}, schema=URL_SET_SCHEMA)
    scatter_table(run, f"{work}/{KEPT}", table, url_range(url_hash[rows], bits), 1 << bits,
                  producer)


def write_url_set(run: RunDir, work: str, bits: int) -> int:
    """The run's URL set from the kept URLs of every range, in range order (so sorted), one
    range in memory at a time. Returns the URLs written."""
    written = 0
    with run.writer(run.path(URL_SET)) as handle, \
            pq.ParquetWriter(handle, URL_SET_SCHEMA, compression="zstd") as writer:
        for part in range(1 << bits):
            table = gather_table(run, f"{work}/{KEPT}", part, URL_SET_SCHEMA)
            if len(table):
                writer.write_table(table.sort_by("url_hash"))
                written += len(table)
        if not written:
            writer.write_table(URL_SET_SCHEMA.empty_table())
    return written
