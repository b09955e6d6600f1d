"""Records exchanged between dedup tasks through files, and the document order they share.

A *node* names one document everywhere in dedup: ``(neg_chars, id_hash, doc)``, where ``doc`` is
the deterministic integer id ``shard index << 32 | row`` and the field order is the preference
order (longest text first, then the smaller id hash, then the earlier shard and row). The
smallest node of a group is therefore the document that stays, with no global sort.

A shuffle step writes each producing task's records to one file, ``STEP/PRODUCER.shuf``,
grouped by receiving partition behind a table of byte offsets (rows that hold strings: one
serialized Arrow record batch per partition, ``STEP/PRODUCER.arrows``); a receiving task reads
its range of every producer's file in two batched reads (all heads, then all ranges: concurrent
on an object store). Files grow with producers, never producers x
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


MAGIC = b"RFSHUF02"
_HEADER = np.dtype([("magic", "S8"), ("partitions", "<u8"), ("itemsize", "<u8")])
RECORDS, TABLES = ".shuf", ".arrows"
TABLE_ITEMSIZE = 0  # in the header of a file of Arrow record batches


def _groups(partition: np.ndarray, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """The order grouping records by partition (stable) and each partition's bounds in it."""
    order = np.argsort(partition, kind="stable")
    return order, np.searchsorted(partition[order], np.arange(partitions + 1)).astype("<u8")


def _write(run: RunDir, path: str, itemsize: int, offsets: np.ndarray,
           chunks: list[bytes]) -> None:
    """A shuffle file: header, each partition's byte offset in the payload, the payload. A
    scratch file (dedup starts over after a crash): no fsync."""
    header = np.array([(MAGIC, len(offsets) - 1, itemsize)], dtype=_HEADER)
    with run.writer(path, durable=False) as handle:
        handle.write(header.tobytes())
        handle.write(offsets.astype("<u8").tobytes())
        for chunk in chunks:
            handle.write(chunk)


def _read(run: RunDir, step: str, suffix: str, partition: int, itemsize: int) -> list[bytes]:
    """One partition's payload from every producer's file of `step`, in producer-name order:
    two batched reads (the heads, then the payloads), whatever the number of producers."""
    paths = run.files(step, suffix=suffix)
    heads = run.read_ranges(paths, [0] * len(paths),
                            [_HEADER.itemsize + (partition + 2) * 8] * len(paths))
    starts, ends = [], []
    for path, head in zip(paths, heads, strict=True):
        header = np.frombuffer(head[: _HEADER.itemsize], dtype=_HEADER)[0]
        if header["magic"] != MAGIC or header["itemsize"] != itemsize:
            raise ValueError(f"{path}: not a shuffle file of {itemsize}-byte records")
        if partition >= header["partitions"]:
            raise ValueError(f"{path}: partition {partition} of {header['partitions']}")
        lo, hi = np.frombuffer(head, dtype="<u8", offset=_HEADER.itemsize)[partition:]
        payload = _HEADER.itemsize + (int(header["partitions"]) + 1) * 8
        starts.append(payload + int(lo))
        ends.append(payload + int(hi))
    found = run.read_ranges(paths, starts, ends)
    for path, data, start, end in zip(paths, found, starts, ends, strict=True):
        if len(data) != end - start:
            raise ValueError(f"{path}: truncated ({len(data)} of {end - start} bytes)")
    return [data for data in found if data]


def scatter(run: RunDir, step: str, records: np.ndarray, partition: np.ndarray,
            partitions: int, producer: str) -> None:
    """Send `records` to the partitions named by `partition` (one index per record)."""
    order, bounds = _groups(partition, partitions)
    _write(run, run.path(step, producer + RECORDS), records.dtype.itemsize,
           bounds * np.uint64(records.dtype.itemsize),
           [np.ascontiguousarray(records[order]).tobytes()])


def gather(run: RunDir, step: str, partition: int, dtype: np.dtype) -> np.ndarray:
    """Every record sent to one partition, in producer-name order."""
    parts = [np.frombuffer(bytearray(data), dtype=dtype)
             for data in _read(run, step, RECORDS, partition, dtype.itemsize)]
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
    """`scatter` for rows that hold strings: each partition's rows as one serialized Arrow
    record batch (nothing for an empty partition)."""
    order, bounds = _groups(partition, partitions)
    table = table.take(pa.array(order)).combine_chunks()
    rows = table.to_batches()[0] if table.num_rows else None
    chunks = [rows.slice(int(lo), int(hi - lo)).serialize().to_pybytes() if hi > lo else b""
              for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    offsets = np.cumsum([0] + [len(chunk) for chunk in chunks], dtype=np.uint64)
    _write(run, run.path(step, producer + TABLES), TABLE_ITEMSIZE, offsets, chunks)


def gather_table(run: RunDir, step: str, partition: int, schema: pa.Schema) -> pa.Table:
    batches = [pa.ipc.read_record_batch(pa.py_buffer(data), schema)
               for data in _read(run, step, TABLES, partition, TABLE_ITEMSIZE)]
    return pa.Table.from_batches(batches, schema) if batches else schema.empty_table()
