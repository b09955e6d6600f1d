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

import functools
import re
from collections.abc import Sequence

import numba
import numpy as np

from refine.dedup.exact import DuplicateSpan, tokenize
from refine.dedup.kernels import fmix64
from refine.dedup.shuffle import NODE, node_order
from refine.dedup.tables import cached_table

WINDOW = np.dtype([("h1", "<u8"), ("h2", "<u8"), ("node", NODE), ("pos", "<u4")])
MARK = np.dtype([("doc", "<u8"), ("pos", "<u4"), ("source", "<u8")])
SPACE, WORD, OTHER = 0, 1, 2  # character classes of the tokenizer


@numba.njit(cache=True, nogil=True)
def _tokens(code_points: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`refine.dedup.exact.tokenize`'s token offsets: a run of word characters, or one other
    non-space character."""
    starts = np.empty(len(code_points), dtype=np.int64)
    ends = np.empty(len(code_points), dtype=np.int64)
    t = i = 0
    while i < len(code_points):
        kind = classes[code_points[i]]
        if kind == SPACE:
            i += 1
            continue
        starts[t] = i
        i += 1
        if kind == WORD:
            while i < len(code_points) and classes[code_points[i]] == WORD:
                i += 1
        ends[t] = i
        t += 1
    return starts[:t], ends[:t]


@functools.cache
def char_classes() -> np.ndarray:
    """Per code point: SPACE (``\\s``), WORD (``\\w``) or OTHER, as Python's `re` decides: built
    once per machine (~0.3 s) and loaded from the cache (`refine.dedup.tables`, keyed on this
    file) in a few ms, once per process."""
    return cached_table("char_classes", _build_char_classes)


def _build_char_classes() -> np.ndarray:
    """`char_classes`, built by running the patterns over every code point once."""
    every = "".join(map(chr, range(0x110000)))
    classes = np.full(0x110000, OTHER, dtype=np.uint8)
    for match in re.finditer(r"\s", every):
        classes[match.start()] = SPACE
    marked = re.sub(r"\w", "\x01", every).encode("utf-32-le", "surrogatepass")
    classes[np.frombuffer(marked, dtype=np.uint32) == 1] = WORD
    classes[1] = WORD if re.match(r"\w", "\x01") else OTHER
    return classes


@numba.njit(cache=True, nogil=True)
def _windows(code_points: np.ndarray, starts: np.ndarray, ends: np.ndarray,
             doc_first: np.ndarray, doc_count: np.ndarray, k: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tok1 = np.empty(len(starts), dtype=np.uint64)
    tok2 = np.empty(len(starts), dtype=np.uint64)
    for t in range(len(starts)):
        a = np.uint64(0xCBF29CE484222325)
        b = np.uint64(0x84222325CBF29CE4)
        for c in range(starts[t], ends[t]):
            a = (a ^ np.uint64(code_points[c])) * np.uint64(0x100000001B3)
            b = (b ^ np.uint64(code_points[c])) * np.uint64(0x00000100000001B3 + 2)
        tok1[t] = fmix64(a)
        tok2[t] = fmix64(b ^ np.uint64(0x5851F42D4C957F2D))
    total = 0
    for d in range(len(doc_first)):
        total += max(doc_count[d] - k + 1, 0)
    h1 = np.empty(total, dtype=np.uint64)
    h2 = np.empty(total, dtype=np.uint64)
    doc = np.empty(total, dtype=np.int64)
    pos = np.empty(total, dtype=np.uint32)
    base1, base2 = np.uint64(0x100000001B3), np.uint64(0x9E3779B97F4A7C15)
    top1, top2 = np.uint64(1), np.uint64(1)  # base ** (k - 1)
    for _ in range(1, k):
        top1 *= base1
        top2 *= base2
    w = 0
    for d in range(len(doc_first)):
        first = doc_first[d]
        x1, x2 = np.uint64(0), np.uint64(0)
        for q in range(doc_count[d]):
            if q >= k:
                x1 -= tok1[first + q - k] * top1
                x2 -= tok2[first + q - k] * top2
            x1 = x1 * base1 + tok1[first + q]
            x2 = x2 * base2 + tok2[first + q]
            if q >= k - 1:
                h1[w], h2[w], doc[w], pos[w] = x1, x2, d, q - k + 1
                w += 1
    return h1, h2, doc, pos


def batch_windows(texts: Sequence[str], nodes: np.ndarray, k: int) -> np.ndarray:
    """Every window of `k` tokens (`tokenize`'s tokens) of each text, as `WINDOW` records of
    the text's node; the texts are tokenised and hashed together, in compiled code."""
    if not texts:
        return np.empty(0, dtype=WINDOW)
    joined = " ".join(texts)  # a space ends every token: none spans two texts
    doc_start = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))[:-1] + 1,
              out=doc_start[1:])
    code_points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    starts, ends = _tokens(code_points, char_classes())
    doc_count = np.bincount(np.searchsorted(doc_start, starts, side="right") - 1,
                            minlength=len(texts))
    doc_first = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(doc_count[:-1], out=doc_first[1:])
    h1, h2, doc, pos = _windows(code_points, starts, ends, doc_first, doc_count, k)
    records = np.empty(len(h1), dtype=WINDOW)
    records["h1"], records["h2"], records["pos"] = h1, h2, pos
    records["node"] = nodes[doc]
    return records


def repeat_marks(windows: np.ndarray) -> np.ndarray:
    """Every occurrence of a window but its first in stream order, with the first's document."""
    if not len(windows):
        return np.empty(0, dtype=MARK)
    # only windows whose first hash occurs twice can repeat: one integer sort finds them, and
    # the full sort runs on those few
    h1 = windows["h1"]
    by_h1 = np.argsort(h1)
    sorted_h1 = h1[by_h1]
    twice = np.r_[False, sorted_h1[1:] == sorted_h1[:-1]]
    windows = windows[np.sort(by_h1[twice | np.r_[twice[1:], False]])]
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
    marks = repeat_marks(batch_windows(texts, nodes, min_tokens))
    out: list[list[DuplicateSpan]] = []
    for i, text in enumerate(texts):
        mine = marks[marks["doc"] == i]
        out.append(spans_from_marks(text, mine["pos"], mine["source"], min_tokens))
    return out
