"""Stage 9 over the whole run: exact-substring dedup by hashes of every `min_tokens` window.

Same semantics as the suffix array of `refine.dedup.exact` (its oracle), without putting the run
in one array: the surviving documents, best-ranked first, form one stream; a token is duplicate
when it lies inside a run of `min_tokens` tokens that also occurs at an earlier stream position.
Every window of `min_tokens` tokens gets a 128-bit hash (two rolling polynomial hashes over
per-token hashes of the token's code points); windows are shuffled by hash, so each task sees
every occurrence of its windows, and all but the first occurrence (in stream order: the
document's node, then the position) mark their window's tokens. A document's marks become the
same `DuplicateSpan`s the suffix array gives: maximal runs of marked tokens, the source being
the first occurrence of the window that starts the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from refine.dedup.exact import DuplicateSpan, tokenize
from refine.dedup.shuffle import NODE, node_order

WINDOW = np.dtype([("h1", "<u8"), ("h2", "<u8"), ("node", NODE), ("pos", "<u4")])
MARK = np.dtype([("doc", "<u8"), ("pos", "<u4"), ("source", "<u8")])


@numba.njit(cache=True, nogil=True)
def _fmix64(h: np.uint64) -> np.uint64:
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@numba.njit(cache=True, nogil=True)
def _window_hashes(code_points: np.ndarray, starts: np.ndarray, ends: np.ndarray, k: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    n = len(starts)
    tok1 = np.empty(n, dtype=np.uint64)
    tok2 = np.empty(n, dtype=np.uint64)
    for t in range(n):
        a = np.uint64(0xCBF29CE484222325)
        b = np.uint64(0x84222325CBF29CE4)
        for c in range(starts[t], ends[t]):
            a = (a ^ np.uint64(code_points[c])) * np.uint64(0x100000001B3)
            b = (b ^ np.uint64(code_points[c])) * np.uint64(0x00000100000001B3 + 2)
        tok1[t] = _fmix64(a)
        tok2[t] = _fmix64(b ^ np.uint64(0x5851F42D4C957F2D))
    windows = n - k + 1
    h1 = np.empty(max(windows, 0), dtype=np.uint64)
    h2 = np.empty(max(windows, 0), dtype=np.uint64)
    if windows <= 0:
        return h1, h2
    base1, base2 = np.uint64(0x100000001B3), np.uint64(0x9E3779B97F4A7C15)
    top1, top2 = np.uint64(1), np.uint64(1)  # base ** (k - 1)
    x1, x2 = np.uint64(0), np.uint64(0)
    for i in range(k):
        x1 = x1 * base1 + tok1[i]
        x2 = x2 * base2 + tok2[i]
        if i:
            top1 *= base1
            top2 *= base2
    h1[0], h2[0] = x1, x2
    for q in range(1, windows):
        x1 = (x1 - tok1[q - 1] * top1) * base1 + tok1[q + k - 1]
        x2 = (x2 - tok2[q - 1] * top2) * base2 + tok2[q + k - 1]
        h1[q], h2[q] = x1, x2
    return h1, h2


def window_hashes(text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The two 64-bit hashes of each window of `k` tokens of `text` (`tokenize`'s tokens)."""
    _, starts, ends = tokenize(text)
    code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return _window_hashes(code_points, starts, ends, k)


def document_windows(text: str, node: np.void, k: int) -> np.ndarray:
    h1, h2 = window_hashes(text, k)
    records = np.empty(len(h1), dtype=WINDOW)
    records["h1"], records["h2"] = h1, h2
    records["node"] = node
    records["pos"] = np.arange(len(h1), dtype=np.uint32)
    return records


def repeat_marks(windows: np.ndarray) -> np.ndarray:
    """Every occurrence of a window but its first in stream order, with the first's document."""
    if not len(windows):
        return np.empty(0, dtype=MARK)
    node = windows["node"]
    order = np.lexsort((windows["pos"], node["doc"], node["id_hash"], node["neg_chars"],
                        windows["h2"], windows["h1"]))
    windows = windows[order]
    h1, h2 = windows["h1"], windows["h2"]
    first = np.r_[True, (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])]
    source = windows["node"]["doc"][np.flatnonzero(first)[np.cumsum(first) - 1]]
    marks = np.empty(int((~first).sum()), dtype=MARK)
    marks["doc"] = windows["node"]["doc"][~first]
    marks["pos"] = windows["pos"][~first]
    marks["source"] = source[~first]
    return marks


def spans_from_marks(text: str, pos: np.ndarray, source: np.ndarray, k: int
                     ) -> list[DuplicateSpan]:
    """The document's duplicate spans from its marks (window starts and their sources); a
    span's `source` is the source of the mark that starts it."""
    if not len(pos):
        return []
    _, starts, ends = tokenize(text)
    order = np.argsort(pos, kind="stable")
    pos, source = pos[order].astype(np.int64), source[order]
    diff = np.zeros(len(starts) + 1, dtype=np.int32)
    np.add.at(diff, pos, 1)
    np.add.at(diff, pos + k, -1)
    marked = np.cumsum(diff[:-1]) > 0
    edges = np.diff(np.concatenate(([False], marked, [False])).astype(np.int8))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1)
    source_at = source[np.searchsorted(pos, run_starts)]
    return [DuplicateSpan(int(starts[a]), int(ends[b - 1]), int(s), int(b - a))
            for a, b, s in zip(run_starts.tolist(), run_ends.tolist(), source_at.tolist(),
                               strict=True)]


def find_duplicate_spans_hashed(texts: Sequence[str], min_tokens: int = 50
                                ) -> list[list[DuplicateSpan]]:
    """`refine.dedup.exact.find_duplicate_spans` by window hashes, in one process (for tests):
    documents in the given order, `source` an index into `texts`."""
    nodes = np.zeros(len(texts), dtype=NODE)
    nodes["doc"] = np.arange(len(texts), dtype=np.uint64)
    assert (node_order(nodes) == np.arange(len(texts))).all()
    parts = [document_windows(t, nodes[i], min_tokens) for i, t in enumerate(texts)]
    marks = repeat_marks(np.concatenate(parts)) if parts else np.empty(0, dtype=MARK)
    out: list[list[DuplicateSpan]] = []
    for i, text in enumerate(texts):
        mine = marks[marks["doc"] == i]
        out.append(spans_from_marks(text, mine["pos"], mine["source"], min_tokens))
    return out
