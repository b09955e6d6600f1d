"""Connected components of the near-duplicate graph by Ray tasks, in rounds, with nothing per
document on the driver: the large-star / small-star alternation of Kiveris et al. (2014).

The graph is stored as directed pairs (u, v), both directions of every edge, in the partition
of ``u``. A large-star round links every larger neighbour of u to the smallest node of u's
neighbourhood; a small-star round links u and its smaller neighbours to that smallest node.
Each round is one task per partition. When every node but the smallest of its neighbourhood
has a single neighbour, the graph is a set of stars: each star's centre is the smallest node of
a component, i.e. the document that stays (nodes sort by preference, `refine.dedup.shuffle`),
and its leaves are the near-duplicates removed in its favour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from refine.dedup.names import request_names
from refine.dedup.shuffle import (
    NODE,
    gather,
    hash_partition,
    node_codes,
    scatter,
    shard_of,
)
from refine.rundir import RunDir

PAIR = np.dtype([("u", NODE), ("v", NODE)])
MAX_ROUNDS = 100  # O(log^2 n) in theory; a handful on near-duplicate graphs
DECISION = np.dtype([("doc", "<u8"), ("survivor", "<u8"), ("size", "<u8")])


def write_pairs(run: RunDir, step: str, u: np.ndarray, v: np.ndarray, partitions: int,
                producer: str) -> int:
    """Store the undirected edges {u[i], v[i]} as both directed pairs; returns edges written."""
    pairs = np.empty(2 * len(u), dtype=PAIR)
    pairs["u"][: len(u)], pairs["v"][: len(u)] = u, v
    pairs["u"][len(u) :], pairs["v"][len(u) :] = v, u
    scatter(run, step, pairs, hash_partition(pairs["u"]["doc"], partitions), partitions,
            producer)
    return len(u)


def load_pairs(run: RunDir, step: str, partition: int) -> np.ndarray:
    pairs = gather(run, step, partition, PAIR)
    if not len(pairs):
        return pairs
    order = np.lexsort((pairs["v"]["doc"], pairs["u"]["doc"]))
    pairs = pairs[order]
    distinct = np.r_[True, (pairs["u"]["doc"][1:] != pairs["u"]["doc"][:-1])
                     | (pairs["v"]["doc"][1:] != pairs["v"]["doc"][:-1])]
    return pairs[distinct]


class Neighbourhoods:
    """The pairs of one partition grouped by u, as codes (small integers in preference order)."""

    def __init__(self, pairs: np.ndarray):
        self.nodes, codes = node_codes(np.concatenate([pairs["u"], pairs["v"]]))
        u, v = codes[: len(pairs)], codes[len(pairs) :]
        order = np.lexsort((v, u))
        self.u, self.v = u[order], v[order]
        starts = np.flatnonzero(np.r_[True, self.u[1:] != self.u[:-1]]) if len(u) else []
        self.group = np.cumsum(np.r_[True, self.u[1:] != self.u[:-1]]) - 1 if len(u) else u
        self.degree = np.diff(np.r_[starts, len(self.u)]).astype(np.int64)
        # smallest of the neighbourhood and u itself, per pair (v sorted: the group's first)
        self.smallest = np.minimum(self.u, self.v[np.asarray(starts, dtype=np.int64)][self.group])

    def violations(self) -> int:
        """Nodes that are not the smallest of their neighbourhood yet have several neighbours
        (zero exactly when the graph is a set of stars centred on their smallest node)."""
        not_centre = (self.smallest < self.u) & (self.degree[self.group] > 1)
        return int(np.unique(self.u[not_centre]).size)


def star_round(run: RunDir, source: str, target: str, partition: int, partitions: int,
               large: bool) -> tuple[int, int, float]:
    """One large- or small-star round over one partition; returns (violations of the input,
    edges written, CPU seconds)."""
    started = time.process_time()
    pairs = load_pairs(run, source, partition)
    if not len(pairs):
        return 0, 0, time.process_time() - started
    hood = Neighbourhoods(pairs)
    if large:
        keep = hood.v > hood.u
        a, b = hood.v[keep], hood.smallest[keep]
    else:
        smaller = hood.v < hood.u
        a = np.concatenate([hood.v[smaller], np.unique(hood.u)])
        b = np.concatenate([hood.smallest[smaller],
                            hood.smallest[np.r_[True, hood.u[1:] != hood.u[:-1]]]])
    linked = a != b
    written = write_pairs(run, target, hood.nodes[a[linked]], hood.nodes[b[linked]],
                          partitions, f"{partition:05d}")
    return hood.violations(), written, time.process_time() - started


def star_decisions(run: RunDir, work: str, source: str, target: str, partition: int,
                   shards: int) -> tuple[int, int, float]:
    """From the final stars of one partition: per member of each star centred here, the
    survivor and the cluster size, sent to the member's shard. Returns (clusters, members
    removed, CPU seconds)."""
    started = time.process_time()
    pairs = load_pairs(run, source, partition)
    if not len(pairs):
        return 0, 0, time.process_time() - started
    hood = Neighbourhoods(pairs)
    centre = hood.smallest == hood.u
    centres = np.unique(hood.u[centre])
    leaves = hood.v[centre]
    size = hood.degree[hood.group[centre]] + 1
    decisions = np.empty(len(leaves) + len(centres), dtype=DECISION)
    decisions["doc"] = np.concatenate([hood.nodes["doc"][leaves], hood.nodes["doc"][centres]])
    decisions["survivor"] = np.concatenate([hood.nodes["doc"][hood.u[centre]],
                                            hood.nodes["doc"][centres]])
    centre_size = hood.degree[hood.group[np.searchsorted(hood.u, centres)]] + 1
    decisions["size"] = np.concatenate([size, centre_size])
    scatter(run, target, decisions, shard_of(decisions["doc"]), shards, f"{partition:05d}")
    leaf_docs = hood.nodes["doc"][leaves]
    request_names(run, work, decisions["survivor"][: len(leaves)], leaf_docs, shards,
                  f"fuzzy-{partition:05d}")
    return len(centres), len(leaves), time.process_time() - started


def connect(run: RunDir, graph: str, partitions: int,
            map_tasks: Callable[[str, Callable[..., Any], list[tuple]], list[Any]]
            ) -> tuple[str, int, float]:
    """Alternate large- and small-star rounds from the pairs in ``graph/0`` until the graph is
    stars; returns (the folder of the final pairs, rounds run, CPU seconds)."""
    current, rounds, cpu_s = f"{graph}/0", 0, 0.0
    while True:
        target = f"{graph}/{rounds + 1}"
        results = map_tasks(f"dedup: components, round {rounds + 1}", star_round,
                            [(run, current, target, p, partitions, rounds % 2 == 0)
                             for p in range(partitions)])
        cpu_s += sum(cpu for _, _, cpu in results)
        rounds += 1
        if sum(violations for violations, _, _ in results) == 0:  # the input was all stars
            run.remove_tree(target)
            return current, rounds, cpu_s
        if rounds >= MAX_ROUNDS:
            raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
        run.remove_tree(current)
        current = target
