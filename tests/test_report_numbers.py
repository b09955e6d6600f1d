"""`refine report`: the numbers it computes, without a browser (refine.report.whatif, .columns,
.examples, .render).
"""

import json

import numpy as np
import pyarrow as pa
import pytest

from refine.document import Threshold
from refine.filters.lines import LineCorrectionFilter
from refine.report.columns import metric_arrays, word_counts
from refine.report.examples import Reservoir
from refine.report.render import script_json
from refine.report.whatif import bin_edges, histogram, kept_at
from refine.shards import METRICS

# -- numbers, without a browser ----------------------------------------------------------------

def test_script_json_cannot_end_its_script_block():
    payload = {"text": "</script><script>alert(1)</script> <!-- \u2028 & >"}
    text = script_json(payload)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == payload


KEEP = {"min": np.greater_equal, "max": np.less_equal, "above": np.greater, "below": np.less}


@pytest.mark.parametrize("direction", ["min", "max", "above", "below"])
@pytest.mark.parametrize("integer", [False, True])
def test_whatif_bins_are_exact_at_every_edge(direction, integer):
    rng = np.random.default_rng(7)
    values = rng.gamma(2.0, 30.0, 5000)
    if integer:
        values = np.floor(values)
    words = rng.integers(1, 500, len(values))
    check = Threshold("m", "t", direction, "r", integer)
    threshold = 40.0
    edges = bin_edges(values, threshold, integer)
    assert threshold in edges
    docs, word_bins = histogram(check, values, words, edges)
    assert docs.sum() == len(values) and word_bins.sum() == words.sum()
    for k, t in enumerate(edges):
        keep = KEEP[direction](values, t)
        assert kept_at(check, docs, k) == keep.sum(), (k, t)
        upper = direction in ("max", "below")
        word_sum = word_bins[: k + 1].sum() if upper else word_bins[k + 1 :].sum()
        assert word_sum == words[keep].sum()


def test_metric_arrays_and_word_counts_match_python():
    rows = [{"a": 1.5, "b": 2.0}, {}, None, {"b": -3.0}, {"a": 0.25}]
    column = pa.array([list(r.items()) if r is not None else None for r in rows], type=METRICS)
    for sliced, offset in ((column, 0), (column.slice(2), 2)):
        arrays = metric_arrays(sliced, ["a", "b", "c"])
        for key in ("a", "b", "c"):
            expected = [(r or {}).get(key, np.nan) for r in rows[offset:]]
            np.testing.assert_array_equal(arrays[key], np.array(expected, dtype=float))
    texts = ["a  b\n c", " x ", "", "é\u00a0f\x1cg\u2003h\u200bi", None, "\tone\x0btwo\x85three"]
    assert word_counts(pa.array(texts)).tolist() == [len((t or "").split()) for t in texts]


def test_reservoir_is_seeded_and_bounded():
    batch = pa.RecordBatch.from_pydict({"i": list(range(1000))})
    codes = np.array([i % 3 for i in range(1000)])

    def sample(seed: int) -> list[int]:
        reservoir = Reservoir(4, seed)
        for start in range(0, 1000, 250):
            reservoir.offer(batch.slice(start, 250), codes[start : start + 250], ["a", "b", "c"])
        return [r["i"] for name in "abc" for r in reservoir.rows(name)]

    first = sample(1)
    assert first == sample(1) and first != sample(2)
    assert len(first) == 12 and len(set(first)) == 12
    assert all(i % 3 == k for k, name in enumerate("abc") for i in first[4 * k : 4 * k + 4])


def test_line_flags_are_the_lines_correct_lines_removes():
    line_filter = LineCorrectionFilter()
    text = ("A normal sentence with several words.\nSIGN IN NOW\n3 likes\nRead more\n"
            "Good text here | read more\nword\n\nAnother fine line of text stays here.")
    flags = line_filter.line_flags(text)
    removed = {text[s:e] for s, e, rule in flags if rule != "edited"}
    corrected, _, counts = line_filter.correct_lines(text)
    kept_lines = set(corrected.split("\n"))
    assert removed == {"SIGN IN NOW", "3 likes", "Read more", "word"}
    assert not removed & kept_lines
    assert sum(rule != "edited" for _, _, rule in flags) == sum(
        v for k, v in counts.items() if k != "edited")
