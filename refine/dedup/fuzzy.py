"""Stage 8, fuzzy dedup, in steps that move only keys and document nodes, never texts.

1. `sign_shard` (one task per kept shard): MinHash band keys of each document, scattered by
   key into buckets on disk, plus the shard's document nodes and URL hashes.
2. `bucket_edges` (one task per bucket): documents sharing a band key become duplicate edges.
3. `refine.dedup.stars` (one task per partition, in rounds): edges chained into clusters
   (connected components); in each cluster one survivor, chosen by content: the longest text,
   then the smallest id hash.

`choose_survivors` is the same decision in memory, for tests.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import time
from dataclasses import dataclass

import numpy as np

from refine.dedup.components import connected_components
from refine.dedup.config import FuzzyDedupConfig
from refine.dedup.minhash import MinHasher, band_key_array
from refine.dedup.shuffle import NODE, gather, make_nodes, scatter
from refine.dedup.stars import write_pairs
from refine.rundir import RunDir
from refine.urlnorm import split_url

ENTRY = np.dtype([("key", "<u8"), ("node", NODE)])  # one band key of one document
BANDS = "bands"
CC = "cc"
BATCH_DOCS = 512
FLUSH_KEYS = 1 << 22  # send a shard's keys every ~4M keys (128 MB) to bound memory
# a grouping task holds its keys while read (twice), then the keys, their sort order and the
# sorted copy: measured at up to ~3.1x the keys' bytes at 4M documents
BUCKET_COPIES = 4


def stable_hash64(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def url_key(url: str) -> str:
    """The URL as dedup compares it: scheme dropped, host normalised (lowercase, no www.)."""
    parts = split_url(url) if url else None
    if parts is None:
        return url.strip()
    host, path, query = parts
    return f"{host}{path or '/'}{'?' + query if query else ''}"


DOC = np.dtype([("node", NODE), ("url_hash", "<u8")])  # per row of a shard, in docs/


def docs_path(work: str, name: str) -> str:
    return f"{work}/docs/{name}.npy"


@dataclass
class SignedShard:
    documents: int
    chars: int
    entries: int  # band keys written
    cpu_s: float


def read_docs(run: RunDir, work: str, name: str) -> np.ndarray:
    with run.open(run.path(docs_path(work, name))) as handle:
        return np.load(io.BytesIO(handle.read()))


def sign_shard(run: RunDir, path: str, shard_index: int, work: str, num_buckets: int,
               config: FuzzyDedupConfig | None) -> SignedShard:
    """Read one shard: write its documents' nodes and URL hashes to ``work/docs/``, and with
    `config` their band keys to the buckets of ``work/bands/`` (`work` relative to the run)."""
    started = time.process_time()
    name = posixpath.basename(path)
    table = run.read_table(path, columns=["id", "url", "text"])
    ids = table.column("id").to_pylist()
    urls = table.column("url").to_pylist()
    texts = table.column("text").to_pylist()
    chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    docs = np.empty(len(texts), dtype=DOC)
    docs["node"] = make_nodes(shard_index, chars, np.fromiter(
        (stable_hash64(i) for i in ids), dtype=np.uint64, count=len(ids)))
    docs["url_hash"] = np.fromiter((stable_hash64(url_key(u)) if u else 0 for u in urls),
                                   dtype=np.uint64, count=len(urls))
    with run.writer(run.path(docs_path(work, name))) as handle:
        np.save(handle, docs)
    entries_written = 0
    if config is not None:
        hasher = MinHasher(config)
        pending: list[np.ndarray] = []
        pending_keys, part = 0, 0
        for first in range(0, len(texts), BATCH_DOCS):
            hashes = hasher.texts_hashes(texts[first : first + BATCH_DOCS])
            rows = np.array([first + i for i, h in enumerate(hashes) if len(h)], dtype=np.int64)
            if not len(rows):
                continue
            keys = band_key_array(hasher.hash_signatures([h for h in hashes if len(h)]), config)
            entries = np.empty(keys.size, dtype=ENTRY)
            entries["key"] = keys.ravel()
            entries["node"] = np.repeat(docs["node"][rows], config.num_bands)
            pending.append(entries)
            pending_keys += len(entries)
            if pending_keys >= FLUSH_KEYS:
                batch = np.concatenate(pending)
                scatter(run, f"{work}/{BANDS}", batch, (batch["key"] % np.uint64(num_buckets))
                        .astype(np.int64), num_buckets, f"{name}-{part}")
                entries_written += len(batch)
                pending, pending_keys, part = [], 0, part + 1
        if pending:
            batch = np.concatenate(pending)
            scatter(run, f"{work}/{BANDS}", batch, (batch["key"] % np.uint64(num_buckets))
                    .astype(np.int64), num_buckets, f"{name}-{part}")
            entries_written += len(batch)
    return SignedShard(len(texts), int(chars.sum()), entries_written,
                       time.process_time() - started)


def bucket_edges(run: RunDir, work: str, bucket: int, partitions: int) -> tuple[int, float]:
    """Documents sharing a band key in one bucket: an edge from the key's best-ranked document
    to each other one, written as graph pairs to ``work/cc/0`` (see `refine.dedup.stars`).
    Returns (edges, CPU seconds)."""
    started = time.process_time()
    entries = gather(run, f"{work}/{BANDS}", bucket, ENTRY)
    if not len(entries):
        return 0, time.process_time() - started
    node = entries["node"]
    order = np.lexsort((node["doc"], node["id_hash"], node["neg_chars"], entries["key"]))
    key, node = entries["key"][order], node[order]
    same = key[1:] == key[:-1]
    run_start = np.flatnonzero(np.r_[True, ~same])
    first_of_run = np.repeat(run_start, np.diff(np.r_[run_start, len(key)]))
    # node != first: a key twice in one document is no edge
    member = np.r_[False, same] & (node["doc"] != node["doc"][first_of_run])
    u, v = node[first_of_run[member]], node[member]
    if len(u):  # one edge per pair of documents, however many bands they share
        order = np.lexsort((v["doc"], u["doc"]))
        u, v = u[order], v[order]
        distinct = np.r_[True, (u["doc"][1:] != u["doc"][:-1])
                         | (v["doc"][1:] != v["doc"][:-1])]
        u, v = u[distinct], v[distinct]
    edges = write_pairs(run, f"{work}/{CC}/0", u, v, partitions, f"{bucket:05d}")
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
