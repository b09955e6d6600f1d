"""Connected components of a duplicate graph, vectorised (hook and jump, as union-find does)."""

from __future__ import annotations

import numpy as np


def connected_components(num_nodes: int, edges: np.ndarray) -> np.ndarray:
    """Label of each node: the smallest node index in its component.

    `edges` is an (m, 2) integer array of node indices. Each round hooks the larger of two
    roots joined by an edge under the smaller, then compresses paths fully; rounds repeat
    until every edge joins equal labels (a handful, even for long chains).
    """
    labels = np.arange(num_nodes, dtype=np.int64)
    if len(edges) == 0:
        return labels
    a = np.asarray(edges[:, 0], dtype=np.int64)
    b = np.asarray(edges[:, 1], dtype=np.int64)
    while True:
        la, lb = labels[a], labels[b]
        differ = la != lb
        if not differ.any():
            return labels
        la, lb = la[differ], lb[differ]
        np.minimum.at(labels, np.maximum(la, lb), np.minimum(la, lb))
        while True:  # path compression: every node points at its root
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
