"""Stage 8, fuzzy dedup, in three steps that move only keys and ids, never texts.

1. `sign_shard` (one task per kept shard): MinHash band keys of each document, scattered by
   key into buckets on disk, plus a small table of the shard's documents (id, length, hashes).
2. `bucket_edges` (one task per bucket): documents sharing a band key become duplicate edges.
3. `choose_survivors` (driver): edges chained into clusters (connected components); in each
   cluster one survivor, chosen by content: the longest text, then the smallest id hash.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from refine.dedup.components import connected_components
from refine.dedup.config import FuzzyDedupConfig
from refine.dedup.minhash import MinHasher, band_key_array
from refine.rundir import RunDir
from refine.urlnorm import split_url

KEY_DTYPE = np.dtype([("key", "<u8"), ("doc", "<u8")])
BATCH_DOCS = 512
FLUSH_KEYS = 1 << 22  # write a part file per bucket every ~4M keys (64 MB) to bound memory


def stable_hash64(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def url_key(url: str) -> str:
    """The URL as dedup compares it: scheme dropped, host normalised (lowercase, no www.)."""
    parts = split_url(url) if url else None
    if parts is None:
        return url.strip()
    host, path, query = parts
    return f"{host}{path or '/'}{'?' + query if query else ''}"


@dataclass
class ShardDocs:
    """What the driver keeps per document of one shard (a few dozen bytes each)."""

    shard: str
    ids: pa.StringArray  # one buffer, not a Python str per document
    chars: np.ndarray  # int64 text length
    id_hash: np.ndarray  # uint64
    url_hash: np.ndarray  # uint64, 0 for no URL
    signed: np.ndarray  # bool: had at least one shingle (documents without are not compared)
    cpu_s: float = 0.0

    def __len__(self) -> int:
        return len(self.ids)


def read_shard_docs(run: RunDir, path: str, shard: str) -> tuple[ShardDocs, list[str]]:
    table = run.read_table(path, columns=["id", "url", "text"])
    id_array = table.column("id").combine_chunks().cast(pa.string())
    ids = id_array.to_pylist()
    urls = table.column("url").to_pylist()
    texts = table.column("text").to_pylist()
    docs = ShardDocs(
        shard=shard,
        ids=id_array,
        chars=np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)),
        id_hash=np.fromiter((stable_hash64(i) for i in ids), dtype=np.uint64, count=len(ids)),
        url_hash=np.fromiter((stable_hash64(url_key(u)) if u else 0 for u in urls),
                             dtype=np.uint64, count=len(urls)),
        signed=np.zeros(len(ids), dtype=bool),
    )
    return docs, texts


def sign_shard(run: RunDir, path: str, shard_index: int, bucket_dir: str, num_buckets: int,
               config: FuzzyDedupConfig | None) -> ShardDocs:
    """Read one shard; with `config`, write its band keys to ``bucket_dir/NNNNN/`` files
    (`bucket_dir` relative to the run directory)."""
    started = time.process_time()
    name = posixpath.basename(path)
    docs, texts = read_shard_docs(run, path, name)
    if config is None:
        docs.cpu_s = time.process_time() - started
        return docs
    hasher = MinHasher(config)
    pending: list[np.ndarray] = []
    pending_keys, part = 0, 0
    for first in range(0, len(texts), BATCH_DOCS):
        hashes = hasher.texts_hashes(texts[first : first + BATCH_DOCS])
        rows = np.array([first + i for i, h in enumerate(hashes) if len(h)], dtype=np.uint64)
        if not len(rows):
            continue
        docs.signed[rows.astype(np.int64)] = True
        keys = band_key_array(hasher.hash_signatures([h for h in hashes if len(h)]), config)
        entries = np.empty(keys.size, dtype=KEY_DTYPE)
        entries["key"] = keys.ravel()
        entries["doc"] = np.repeat((np.uint64(shard_index) << np.uint64(32)) | rows,
                                   config.num_bands)
        pending.append(entries)
        pending_keys += len(entries)
        if pending_keys >= FLUSH_KEYS:
            _scatter(np.concatenate(pending), run, bucket_dir, num_buckets, f"{name}-{part}")
            pending, pending_keys, part = [], 0, part + 1
    if pending:
        _scatter(np.concatenate(pending), run, bucket_dir, num_buckets, f"{name}-{part}")
    docs.cpu_s = time.process_time() - started
    return docs


def bucket_sub(bucket_dir: str, bucket: int) -> str:
    return f"{bucket_dir}/{bucket:05d}"


def _scatter(entries: np.ndarray, run: RunDir, bucket_dir: str, num_buckets: int,
             stem: str) -> None:
    bucket = entries["key"] % np.uint64(num_buckets)
    order = np.argsort(bucket, kind="stable")
    entries, bucket = entries[order], bucket[order]
    bounds = np.searchsorted(bucket, np.arange(num_buckets + 1, dtype=np.uint64))
    for k in range(num_buckets):
        if bounds[k] == bounds[k + 1]:
            continue
        with run.writer(run.path(bucket_sub(bucket_dir, k), f"{stem}.npy")) as handle:
            np.save(handle, entries[bounds[k] : bounds[k + 1]])


def _load(run: RunDir, path: str) -> np.ndarray:
    with run.open(path) as handle:
        return np.load(io.BytesIO(handle.read()))


def bucket_edges(run: RunDir, directory: str) -> tuple[np.ndarray, float]:
    """Documents sharing a band key, as (m, 2) uint64 packed document ids, each edge once
    (`directory` relative to the run directory)."""
    started = time.process_time()
    files = run.files(directory, suffix=".npy")
    if not files:
        return np.empty((0, 2), dtype=np.uint64), 0.0
    entries = np.concatenate([_load(run, f) for f in files])
    order = np.lexsort((entries["doc"], entries["key"]))
    key, doc = entries["key"][order], entries["doc"][order]
    same = key[1:] == key[:-1]
    run_start = np.flatnonzero(np.r_[True, ~same])
    first_of_run = np.repeat(doc[run_start], np.diff(np.r_[run_start, len(doc)]))
    member = np.r_[False, same] & (doc != first_of_run)  # doc != first: a key twice in a doc
    edges = np.stack([first_of_run[member], doc[member]], axis=1)
    edges = np.unique(edges, axis=0) if len(edges) else edges.reshape(0, 2)
    return edges, time.process_time() - started


@dataclass
class Survivors:
    """Per document (global index): the survivor of its cluster (itself when not a duplicate)."""

    survivor: np.ndarray  # int64
    clusters: int  # clusters with at least two documents
    cluster_size: np.ndarray  # int64 per document: members of its cluster (1: no duplicate)

    @property
    def removed(self) -> np.ndarray:
        return np.flatnonzero(self.survivor != np.arange(len(self.survivor)))


def preference_order(chars: np.ndarray, id_hash: np.ndarray) -> np.ndarray:
    """Rank of each document when one of several must stay: longest first, then id hash."""
    order = np.lexsort((np.arange(len(chars)), id_hash, -chars))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def choose_survivors(edges: np.ndarray, shard_offsets: np.ndarray, rank: np.ndarray
                     ) -> Survivors:
    """Chain edges (packed shard << 32 | row ids) into clusters; keep the best-ranked member."""
    n = len(rank)
    survivor = np.arange(n, dtype=np.int64)
    if not len(edges):
        return Survivors(survivor, 0, np.ones(n, dtype=np.int64))
    nodes = shard_offsets[(edges >> np.uint64(32)).astype(np.int64)] + (
        edges & np.uint64(0xFFFFFFFF)).astype(np.int64)
    labels = connected_components(n, nodes)
    best = np.full(n, n, dtype=np.int64)  # per label: the best rank among its members
    np.minimum.at(best, labels, rank)
    by_rank = np.argsort(rank)
    survivor = by_rank[best[labels]]
    sizes = np.bincount(labels, minlength=n)
    return Survivors(survivor, int((sizes > 1).sum()), sizes[labels])
