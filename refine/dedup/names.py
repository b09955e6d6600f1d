"""The ids shown in ``duplicate_of``: each shard is asked once for the ids of its documents that
other shards' rows name (a survivor, a URL's keeper, a passage's source).

Tasks that decide (survivors, URL ranges, repeated windows) send a request ``(doc, requesting
shard)`` to the shard that holds ``doc`` (`request_names`); one task per shard reads its `id`
column once and answers each requesting shard (`answer_names`); a rewrite reads its answers
(`read_names`). Work is proportional to the references, never shards x shards.
"""

from __future__ import annotations

import posixpath

import numpy as np
import pyarrow as pa

from refine.dedup.shuffle import (
    gather,
    gather_table,
    row_of,
    scatter,
    scatter_table,
    shard_of,
)
from refine.rundir import RunDir

REQUEST = np.dtype([("doc", "<u8"), ("requester", "<u8")])
NAME_SCHEMA = pa.schema([("doc", pa.uint64()), ("id", pa.string())])
WANTED, NAMES = "names-wanted", "names"


def request_names(run: RunDir, work: str, named: np.ndarray, by_rows_of: np.ndarray,
                  shards: int, producer: str) -> None:
    """Ask for the ids of the documents `named` (node ids), for the shards of `by_rows_of`."""
    requests = np.empty(len(named), dtype=REQUEST)
    requests["doc"], requests["requester"] = named, shard_of(by_rows_of)
    requests = np.unique(requests)
    scatter(run, f"{work}/{WANTED}", requests, shard_of(requests["doc"]), shards, producer)


def answer_names(run: RunDir, work: str, shard: int, path: str, shards: int) -> int:
    """Answer every request for this shard's documents; returns the ids sent."""
    requests = np.unique(gather(run, f"{work}/{WANTED}", shard, REQUEST))
    if not len(requests):
        return 0
    ids = run.read_table(path, columns=["id"]).column("id").combine_chunks()
    table = pa.table({"doc": pa.array(requests["doc"], pa.uint64()),
                      "id": ids.take(pa.array(row_of(requests["doc"])))}, schema=NAME_SCHEMA)
    scatter_table(run, f"{work}/{NAMES}", table, requests["requester"].astype(np.int64), shards,
                  posixpath.basename(path))
    return len(table)


def read_names(run: RunDir, work: str, shard: int) -> dict[int, str]:
    table = gather_table(run, f"{work}/{NAMES}", shard, NAME_SCHEMA)
    return dict(zip(table.column("doc").to_pylist(), table.column("id").to_pylist(),
                    strict=True))
