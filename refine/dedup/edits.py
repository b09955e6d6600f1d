"""What stages 8-10 decided for one shard, read back from the files their tasks wrote.

Each decision names the other document by its node id (``shard << 32 | row``); the ids shown in
``duplicate_of`` come from that document's shard (`refine.dedup.names`).
"""

from __future__ import annotations

import numpy as np

from refine.dedup.names import read_names
from refine.dedup.rewrite import Removal, ShardEdits
from refine.dedup.shuffle import gather, gather_table, row_of, shard_of
from refine.dedup.stars import DECISION
from refine.dedup.urls import DUPLICATE, DUPLICATES, EARLIER, EARLIER_SCHEMA
from refine.dedup.windows import MARK
from refine.rundir import RunDir
from refine.stages import FUZZY_DEDUP, URL_DEDUP

FUZZY, WINDOWS, MARKS = "fuzzy", "windows", "marks"


def fuzzy_decisions(run: RunDir, work: str, shard: int) -> np.ndarray:
    return gather(run, f"{work}/{FUZZY}", shard, DECISION)


def removed_rows(run: RunDir, work: str, shard: int, urls: bool) -> np.ndarray:
    """Rows of the shard removed by fuzzy dedup (and, with `urls`, by URL dedup)."""
    fuzzy = fuzzy_decisions(run, work, shard)
    removed = [fuzzy["doc"][fuzzy["doc"] != fuzzy["survivor"]]]
    if urls:
        removed.append(gather(run, f"{work}/{DUPLICATES}", shard, DUPLICATE)["doc"])
        earlier = gather_table(run, f"{work}/{EARLIER}", shard, EARLIER_SCHEMA)
        removed.append(earlier.column("doc").to_numpy().astype(np.uint64))
    return row_of(np.concatenate(removed))


def shard_edits(run: RunDir, work: str, shard: int, fuzzy: bool, urls: bool, exact: bool
                ) -> ShardEdits:
    edits = ShardEdits(fuzzy=fuzzy)
    decisions = fuzzy_decisions(run, work, shard)
    duplicates = gather(run, f"{work}/{DUPLICATES}", shard, DUPLICATE)
    earlier = gather_table(run, f"{work}/{EARLIER}", shard, EARLIER_SCHEMA)
    marks = gather(run, f"{work}/{MARKS}", shard, MARK) if exact else np.empty(0, MARK)
    ids = read_names(run, work, shard)
    for doc, survivor, size in decisions.tolist():
        if doc == survivor:
            edits.cluster_size[doc & 0xFFFFFFFF] = size
        else:
            edits.removals[doc & 0xFFFFFFFF] = Removal(FUZZY_DEDUP.name, "near_duplicate",
                                                       ids[survivor])
    for doc, keeper in duplicates.tolist():
        edits.removals[doc & 0xFFFFFFFF] = Removal(URL_DEDUP.name, "duplicate_url", ids[keeper])
    for doc, earlier_id in zip(earlier.column("doc").to_pylist(),
                               earlier.column("id").to_pylist(), strict=True):
        edits.removals[doc & 0xFFFFFFFF] = Removal(URL_DEDUP.name, "url_in_earlier_run",
                                                   earlier_id)
    if len(marks):
        marks = marks[np.argsort(marks["doc"], kind="stable")]
        starts = np.flatnonzero(np.r_[True, marks["doc"][1:] != marks["doc"][:-1]])
        for lo, hi in zip(starts.tolist(), np.r_[starts[1:], len(marks)].tolist(),
                          strict=True):
            row = int(marks["doc"][lo]) & 0xFFFFFFFF
            sources = [ids[s] for s in marks["source"][lo:hi].tolist()]
            edits.marks[row] = (marks["pos"][lo:hi], sources)
    assert (shard_of(decisions["doc"]) == shard).all()
    return edits
