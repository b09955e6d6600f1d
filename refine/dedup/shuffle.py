"""Records exchanged between dedup tasks through files, and the document order they share.

A *node* names one document everywhere in dedup: ``(neg_chars, id_hash, doc)``, where ``doc`` is
the deterministic integer id ``shard index << 32 | row`` and the field order is the preference
order (longest text first, then the smaller id hash, then the earlier shard and row). The
smallest node of a group is therefore the document that stays, with no global sort.

A shuffle step writes each task's records to ``STEP/PPPPP/PRODUCER.npy`` (P: the receiving
partition); the receiving task reads its folder whole. File names depend only on the producer,
so a retried task rewrites the same files and a run is the same with any number of workers.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from refine.rundir import RunDir

NODE = np.dtype([("neg_chars", "<u8"), ("id_hash", "<u8"), ("doc", "<u8")])
ROW_BITS = np.uint64(32)
ROW_MASK = np.uint64(0xFFFFFFFF)
_NEG = np.uint64((1 << 63) - 1)


def make_nodes(shard: int, chars: np.ndarray, id_hash: np.ndarray) -> np.ndarray:
    nodes = np.empty(len(chars), dtype=NODE)
    nodes["neg_chars"] = _NEG - chars.astype(np.uint64)
    nodes["id_hash"] = id_hash
    nodes["doc"] = (np.uint64(shard) << ROW_BITS) | np.arange(len(chars), dtype=np.uint64)
    return nodes


def shard_of(doc: np.ndarray) -> np.ndarray:
    return (doc >> ROW_BITS).astype(np.int64)


def row_of(doc: np.ndarray) -> np.ndarray:
    return (doc & ROW_MASK).astype(np.int64)


def hash_partition(values: np.ndarray, partitions: int) -> np.ndarray:
    """A well-mixed partition index of 64-bit values (document ids, hashes)."""
    mixed = np.asarray(values, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    mixed ^= mixed >> np.uint64(29)
    return (mixed % np.uint64(partitions)).astype(np.int64)


def partition_dir(step: str, partition: int) -> str:
    return f"{step}/{partition:05d}"


def scatter(run: RunDir, step: str, records: np.ndarray, partition: np.ndarray,
            partitions: int, producer: str) -> None:
    """Write `records` to the partitions named by `partition` (one index per record)."""
    order = np.argsort(partition, kind="stable")
    records, partition = records[order], partition[order]
    bounds = np.searchsorted(partition, np.arange(partitions + 1))
    for k in range(partitions):
        if bounds[k] < bounds[k + 1]:
            with run.writer(run.path(partition_dir(step, k), f"{producer}.npy")) as handle:
                np.save(handle, records[bounds[k] : bounds[k + 1]])


def gather(run: RunDir, step: str, partition: int, dtype: np.dtype) -> np.ndarray:
    """Every record sent to one partition, in producer-name order."""
    parts = []
    for path in run.files(partition_dir(step, partition), suffix=".npy"):
        with run.open(path) as handle:
            parts.append(np.load(io.BytesIO(handle.read())))
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def node_order(nodes: np.ndarray) -> np.ndarray:
    """Indices sorting `nodes` by preference (a lexsort of plain integer arrays: faster than
    sorting the structured records)."""
    return np.lexsort((nodes["doc"], nodes["id_hash"], nodes["neg_chars"]))


def node_codes(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct nodes in preference order and, per input node, its index among them."""
    order = node_order(nodes)
    docs = nodes["doc"][order]
    first = np.r_[True, docs[1:] != docs[:-1]] if len(docs) else np.empty(0, dtype=bool)
    codes = np.empty(len(nodes), dtype=np.int64)
    codes[order] = np.cumsum(first) - 1
    return nodes[order][first], codes


def scatter_table(run: RunDir, step: str, table: pa.Table, partition: np.ndarray,
                  partitions: int, producer: str) -> None:
    """`scatter` for rows that hold strings: one Parquet file per receiving partition."""
    order = np.argsort(partition, kind="stable")
    table, partition = table.take(pa.array(order)), partition[order]
    bounds = np.searchsorted(partition, np.arange(partitions + 1))
    for k in range(partitions):
        if bounds[k] < bounds[k + 1]:
            run.write_table(table.slice(bounds[k], bounds[k + 1] - bounds[k]),
                            run.path(partition_dir(step, k), f"{producer}.parquet"), None)


def gather_table(run: RunDir, step: str, partition: int, schema: pa.Schema) -> pa.Table:
    tables = [run.read_table(p) for p in run.files(partition_dir(step, partition))]
    return pa.concat_tables(tables) if tables else schema.empty_table()
