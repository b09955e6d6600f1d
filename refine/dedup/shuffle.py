"""Records exchanged between dedup tasks through files, and the document order they share.

A *node* names one document everywhere in dedup: ``(neg_chars, id_hash, doc)``, where ``doc`` is
the deterministic integer id ``shard index << 32 | row`` and the field order is the preference
order (longest text first, then the smaller id hash, then the earlier shard and row). The
smallest node of a group is therefore the document that stays, with no global sort.

A shuffle step writes each producing task's records to one file, ``STEP/PRODUCER.shuf``,
grouped by receiving partition behind a table of offsets; a receiving task reads its range of
every producer's file (two range reads each). Files grow with producers, never producers x
partitions: at 4M documents that was ~10^5 small files to create, fsync, list and remove.
File names depend only on the producer, so a retried task rewrites the same file and a run is
the same with any number of workers.
"""

from __future__ import annotations

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


MAGIC = b"RFSHUF01"
_HEADER = np.dtype([("magic", "S8"), ("partitions", "<u8"), ("itemsize", "<u8")])
RECORDS, TABLES = ".shuf", ".arrows"


def _groups(partition: np.ndarray, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """The order grouping records by partition (stable) and each partition's bounds in it."""
    order = np.argsort(partition, kind="stable")
    return order, np.searchsorted(partition[order], np.arange(partitions + 1)).astype("<u8")


def scatter(run: RunDir, step: str, records: np.ndarray, partition: np.ndarray,
            partitions: int, producer: str) -> None:
    """Send `records` to the partitions named by `partition` (one index per record)."""
    order, bounds = _groups(partition, partitions)
    header = np.array([(MAGIC, partitions, records.dtype.itemsize)], dtype=_HEADER)
    with run.writer(run.path(step, producer + RECORDS)) as handle:
        handle.write(header.tobytes())
        handle.write(bounds.tobytes())
        handle.write(np.ascontiguousarray(records[order]).tobytes())


def _read_range(run: RunDir, path: str, start: int, end: int) -> bytes:
    return run.fs.cat_file(path, start=start, end=end) if end > start else b""


def gather(run: RunDir, step: str, partition: int, dtype: np.dtype) -> np.ndarray:
    """Every record sent to one partition, in producer-name order."""
    parts = []
    for path in run.files(step, suffix=RECORDS):
        head = _read_range(run, path, 0, _HEADER.itemsize + (partition + 2) * 8)
        header = np.frombuffer(head[: _HEADER.itemsize], dtype=_HEADER)[0]
        if header["magic"] != MAGIC or header["itemsize"] != dtype.itemsize:
            raise ValueError(f"{path}: not a shuffle file of {dtype.itemsize}-byte records")
        if partition >= header["partitions"]:
            raise ValueError(f"{path}: partition {partition} of {header['partitions']}")
        lo, hi = np.frombuffer(head, dtype="<u8", offset=_HEADER.itemsize)[partition:]
        if hi > lo:
            data = _HEADER.itemsize + (int(header["partitions"]) + 1) * 8
            raw = _read_range(run, path, data + int(lo) * dtype.itemsize,
                              data + int(hi) * dtype.itemsize)
            parts.append(np.frombuffer(bytearray(raw), dtype=dtype))
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
    """`scatter` for rows that hold strings: an Arrow IPC file whose batch k is partition k's."""
    order, bounds = _groups(partition, partitions)
    table = table.take(pa.array(order)).combine_chunks()
    with run.writer(run.path(step, producer + TABLES)) as handle, \
            pa.ipc.new_file(handle, table.schema) as sink:
        for k in range(partitions):
            rows = table.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k]))
            sink.write_batch(pa.RecordBatch.from_arrays(
                [column.combine_chunks() for column in rows.columns], schema=table.schema))


def gather_table(run: RunDir, step: str, partition: int, schema: pa.Schema) -> pa.Table:
    batches = []
    for path in run.files(step, suffix=TABLES):
        with run.open(path) as handle:
            batch = pa.ipc.open_file(handle).get_batch(partition)
        if batch.num_rows:
            batches.append(batch)
    return pa.Table.from_batches(batches, schema) if batches else schema.empty_table()
