"""Vectorised reads of the run's Parquet columns: metrics entries to arrays, word counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A run of characters Python's str.split() does not split on: counting these is len(text.split())
_WORD = (r"[^\t\n\x{0B}\f\r \x{1C}-\x{1F}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}"
         r"\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]+")


def word_counts(text: pa.Array) -> np.ndarray:
    """len(t.split()) for every string of `text` (nulls: 0)."""
    counts = pc.count_substring_regex(text, _WORD)
    return counts.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


def metric_arrays(metrics: pa.Array, keys: list[str]) -> dict[str, np.ndarray]:
    """One float64 array per key from a metrics column (list of {key, value}, or a map);
    NaN where a row lacks it."""
    if isinstance(metrics, pa.ChunkedArray):
        metrics = metrics.combine_chunks()
    n = len(metrics)
    out = {key: np.full(n, np.nan) for key in keys}
    if n == 0 or not keys:
        return out
    offsets = metrics.offsets.to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets)
    first, count = int(offsets[0]), int(offsets[-1] - offsets[0])
    if isinstance(metrics, pa.MapArray):
        flat_names, flat_values = metrics.keys, metrics.items
    else:
        flat_names, flat_values = metrics.values.field("key"), metrics.values.field("value")
    if len(flat_names) != count:  # the children of a sliced list array are not sliced
        flat_names, flat_values = flat_names.slice(first, count), flat_values.slice(first, count)
    if len(flat_names) == 0:
        return out
    names = flat_names.dictionary_encode()
    values = flat_values.fill_null(np.nan).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(n), lengths)
    codes = names.indices.to_numpy(zero_copy_only=False)
    dictionary = names.dictionary.to_pylist()
    for code, name in enumerate(dictionary):
        if name in out:
            mask = codes == code
            out[name][rows[mask]] = values[mask]
    return out
