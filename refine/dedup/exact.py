"""Exact-substring deduplication within a partition (suffix array + LCP, "keep first").

Semantics: the documents of a partition, in the given order, are tokenised (`TOKEN_PATTERN`:
a word, or one non-space symbol) and concatenated into one stream of integer token ids, each
document followed by a separator id unique to it, so no match crosses a document boundary.
A token is *duplicate* when it lies inside a run of at least ``min_tokens`` tokens that also
occurs at an earlier stream position (an earlier document, or earlier in the same document).
The earliest occurrence of every such run is never marked; later ones are. Marked tokens are
reported per document as `DuplicateSpan`s (maximal runs of marked tokens, as char offsets) and
removed with `cut_spans`.

The suffix array comes from `pydivsufsort.divsufsort` and the LCP array from
`pydivsufsort.kasai`; everything after tokenisation is vectorised numpy. Memory is a few
int32/int64 arrays of the stream length plus the partition's vocabulary; the peak is inside
divsufsort, which sorts integer ids as 4-byte big-endian words (a byte-level suffix array of
4x the stream length), about 36 bytes per token (~200 MB traced for 10 MB of text).
This module knows nothing of Ray.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydivsufsort import divsufsort, kasai

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
# Splitting on a capturing TOKEN_PATTERN alternates (whitespace, token, ..., whitespace): the
# pieces tile the text, so char offsets are a cumsum of piece lengths, all at C speed.
_TOKEN_SPLIT = re.compile(f"({TOKEN_PATTERN.pattern})")


@dataclass(frozen=True)
class DuplicateSpan:
    """A duplicate region of one document: ``text[start:end]`` is what `cut_spans` removes."""

    start: int  # char offset of the first duplicate token
    end: int  # char offset just past the last duplicate token
    source: int  # index in the partition of the document holding the earlier occurrence
    tokens: int  # length in tokens


def tokenize(text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tokens of ``text`` with their char offsets: ``(tokens, starts, ends)``."""
    pieces = _TOKEN_SPLIT.split(text)
    tokens = pieces[1::2]
    cum = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)), out=cum[1:])
    return tokens, cum[1:-1:2], cum[2::2]


def find_duplicate_spans(
    texts: Sequence[str], min_tokens: int = 50
) -> list[list[DuplicateSpan]]:
    """Per document, the spans repeating an earlier >= ``min_tokens``-token run of the partition."""
    if min_tokens < 1:
        raise ValueError("min_tokens must be >= 1")
    n_docs = len(texts)
    if n_docs == 0:
        return []
    vocab: dict[str, int] = {}
    new_id = itertools.count()  # id of a string = counter value when first seen (not dense)
    id_parts: list[np.ndarray] = []
    start_parts: list[np.ndarray] = []
    end_parts: list[np.ndarray] = []
    lengths = np.zeros(n_docs, dtype=np.int64)
    for i, text in enumerate(texts):
        tokens, starts, ends = tokenize(text)
        id_parts.append(
            np.fromiter(map(vocab.setdefault, tokens, new_id), dtype=np.int64, count=len(tokens))
        )
        start_parts.append(starts)
        end_parts.append(ends)
        lengths[i] = len(tokens)
    if not (lengths >= min_tokens).any():
        return [[] for _ in range(n_docs)]

    # The stream: doc 0 tokens, sep 0, doc 1 tokens, sep 1, ... (separator ids are unique).
    n_vocab = next(new_id)  # above every token id
    stream = _interleave(id_parts, n_vocab + np.arange(n_docs, dtype=np.int64))
    dtype = np.int32 if n_vocab + n_docs < 2**31 else np.int64
    stream = stream.astype(dtype)
    n = len(stream)
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int32), lengths + 1)

    sa = np.asarray(divsufsort(stream))  # int32 below 2**29 tokens (it sorts 4-byte words)
    lcp = np.asarray(kasai(stream, sa))  # lcp[i] = LCP(suffix sa[i], suffix sa[i + 1])

    # Groups: maximal SA ranges linked by LCP >= min_tokens. All members share their first
    # min_tokens tokens; the smallest position is the first occurrence, the others repeat it.
    linked = lcp[:-1] >= min_tokens
    group_start = np.ones(n, dtype=bool)
    group_start[1:] = ~linked
    starts_idx = np.flatnonzero(group_start)
    group_min = np.minimum.reduceat(sa, starts_idx)
    group_of = np.cumsum(group_start) - 1
    first_pos = group_min[group_of]  # per SA entry: first occurrence of its group
    repeat = sa != first_pos
    pos = sa[repeat]
    if len(pos) == 0:
        return [[] for _ in range(n_docs)]

    del lcp, linked, group_start, starts_idx, group_min, group_of
    diff = np.zeros(n + 1, dtype=np.int32)
    diff[pos] += 1  # positions in `pos` are distinct, so fancy-index updates do not collide
    diff[pos + min_tokens] -= 1  # pos + min_tokens <= n: a match never runs past a separator
    marked = np.cumsum(diff[:n]) > 0
    source_at = np.full(n, -1, dtype=np.int32)
    source_at[pos] = doc_of[first_pos[repeat]]

    # Runs of marked tokens; separators are never marked, so a run lies in one document.
    edges = np.diff(np.concatenate(([False], marked, [False])).astype(np.int8))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1)  # exclusive
    all_starts = np.concatenate(start_parts)
    all_ends = np.concatenate(end_parts)
    docs = doc_of[run_starts]
    # token index within the concatenated (separator-free) offset arrays
    first_tok = run_starts - docs
    last_tok = run_ends - 1 - docs
    out: list[list[DuplicateSpan]] = [[] for _ in range(n_docs)]
    for d, s, e, src, k in zip(
        docs.tolist(),
        all_starts[first_tok].tolist(),
        all_ends[last_tok].tolist(),
        source_at[run_starts].tolist(),  # a run always begins at a repeat position
        (run_ends - run_starts).tolist(),
        strict=True,
    ):
        out[d].append(DuplicateSpan(start=s, end=e, source=src, tokens=k))
    return out


def _interleave(parts: list[np.ndarray], separators: np.ndarray) -> np.ndarray:
    """``parts[0], separators[0], parts[1], separators[1], ...`` as one array."""
    pieces: list[np.ndarray] = []
    for ids, s in zip(parts, separators, strict=True):
        pieces.append(ids)
        pieces.append(s[None])
    return np.concatenate(pieces)


def cut_spans(text: str, spans: Iterable[DuplicateSpan]) -> str:
    """``text`` without the spans (overlapping ones are merged).

    Seams are tidied: the whitespace on both sides of a cut is dropped and the two kept pieces
    are joined by one newline if the removed region (with that whitespace) held a newline,
    else by one space; a cut at the start or end of the text leaves no seam at all.
    """
    ranges = sorted((s.start, s.end) for s in spans)
    if not ranges:
        return text
    merged: list[list[int]] = []
    for s, e in ranges:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    bounds = [0] + [x for r in merged for x in r] + [len(text)]
    kept = list(zip(bounds[0::2], bounds[1::2], strict=True))
    out: list[str] = []
    last_hi = -1
    for i, (a, b) in enumerate(kept):
        piece = text[a:b]
        lo = a + len(piece) - len(piece.lstrip()) if i > 0 else a
        hi = b - (len(piece) - len(piece.rstrip())) if i < len(kept) - 1 else b
        if lo >= hi:
            continue
        if out:
            out.append("\n" if "\n" in text[last_hi:lo] else " ")
        out.append(text[lo:hi])
        last_hi = hi
    return "".join(out)
