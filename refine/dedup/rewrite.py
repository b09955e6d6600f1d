"""Stage 11 after dedup: one filtered shard in, its kept rows (spans cut) and rejected rows out.

Output names follow the input shard's name, so a rewrite is the same whichever worker runs it.
Cut spans go to ``RUN/spans/`` (document id, character offsets, the id holding the first
occurrence, the cut text) so the report can show them.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from refine.dedup.exact import DuplicateSpan, cut_spans
from refine.dedup.windows import spans_from_marks
from refine.filters.pii import PIIConfig, anonymise_counted
from refine.rundir import DATA, REJECTED, SPANS, RunDir
from refine.shards import (
    KEPT_SCHEMA,
    REJECTED_SCHEMA,
    SPAN_SCHEMA,
    metrics_dict,
    rows_to_table,
)
from refine.stages import EXACT_DEDUP, FUZZY_DEDUP

# the documents in the near-duplicate cluster it survived
CLUSTER_SIZE = FUZZY_DEDUP.prefix + "cluster_size"


@dataclass(frozen=True)
class Removal:
    stage: str
    reason: str
    duplicate_of: str | None


@dataclass
class ShardEdits:
    """What dedup decided for one shard's rows (by row number)."""

    removals: dict[int, Removal] = field(default_factory=dict)
    # exact dedup: per row, the starts of its repeated windows and the id of each one's source
    marks: dict[int, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    min_tokens: int = 50  # the window length of the marks
    min_chars: int = 20  # a document left shorter by its cuts is dropped
    fuzzy: bool = False  # fuzzy dedup ran: every kept row records its cluster size
    cluster_size: dict[int, int] = field(default_factory=dict)  # rows that survived a cluster
    pii: PIIConfig | None = None  # anonymise the kept text, after every cut


@dataclass
class RewriteResult:
    shard: str
    kept: int
    rejected: Counter[str]  # (input, "stage.reason") keys joined by "\t"
    spans: int
    chars_cut: int
    documents_cut: int
    pii: dict[str, float] = field(default_factory=dict)  # the pii stage's counters


def _spans(text: str, edits: ShardEdits, index: int) -> list[tuple[DuplicateSpan, str]]:
    pos, sources = edits.marks.get(index, (np.empty(0, np.uint32), []))
    spans = spans_from_marks(text, pos, np.arange(len(sources)), edits.min_tokens)
    return [(span, sources[span.source]) for span in spans]


def rewrite_shard(source: str, run: RunDir, edits: ShardEdits, rejected_text_chars: int,
                  compression: str) -> tuple[RewriteResult, np.ndarray, pa.Array]:
    """Returns the counts, and the row numbers and ids of the rows kept."""
    compression = None if compression == "none" else compression
    name = posixpath.basename(source)
    rows = run.read_table(source).to_pylist()
    kept: list[dict] = []
    kept_rows: list[int] = []
    rejected: list[dict] = []
    span_rows: list[dict] = []
    counts: Counter[str] = Counter()
    chars_cut = 0
    pii_stage: dict[str, float] = {}
    for index, row in enumerate(rows):
        spans = _spans(row["text"], edits, index) if index in edits.marks else []
        removal = edits.removals.get(index)
        if removal is None and spans:
            remaining = cut_spans(row["text"], [s for s, _ in spans])
            if len(remaining.strip()) < edits.min_chars:
                largest = max(spans, key=lambda s: s[0].end - s[0].start)
                removal = Removal(EXACT_DEDUP.name, "too_short_after_cut", largest[1])
        if removal is not None:
            text = row["text"]
            counts[f"{row['file_path']}\t{removal.stage}.{removal.reason}"] += 1
            rejected.append({
                "id": row["id"], "url": row["url"], "date": row["date"],
                "file_path": row["file_path"], "offset": row["offset"], "stage": removal.stage,
                "reason": removal.reason, "duplicate_of": removal.duplicate_of,
                "language": row["language"], "metrics": metrics_dict(row["metrics"]),
                "text": text[:rejected_text_chars], "text_chars": len(text),
            })
            continue
        if spans:
            text = row["text"]
            for span, source_id in spans:
                span_rows.append({"id": row["id"], "start": span.start, "end": span.end,
                                  "tokens": span.tokens, "duplicate_of": source_id,
                                  "text": text[span.start : span.end][:rejected_text_chars]})
            row["text"] = remaining
            cut = len(text) - len(row["text"])
            chars_cut += cut
            row["metrics"] = row["metrics"] + [
                {"key": EXACT_DEDUP.prefix + "chars_cut", "value": float(cut)},
                {"key": EXACT_DEDUP.prefix + "spans", "value": float(len(spans))}]
            row["token_count"] = len(row["text"].split())
        if edits.fuzzy:  # FineWeb-2's minhash_cluster_size: to upsample by it (rehydration)
            row["metrics"] = row["metrics"] + [
                {"key": CLUSTER_SIZE, "value": float(edits.cluster_size.get(index, 1))}]
        if edits.pii is not None:  # after every cut, on the text that is written
            row["text"], found = anonymise_counted(row["text"], edits.pii, pii_stage)
            row["metrics"] = row["metrics"] + [{"key": k, "value": v} for k, v in found.items()]
        kept.append(row)
        kept_rows.append(index)
    if kept:
        run.write_table(pa.Table.from_pylist(kept, schema=KEPT_SCHEMA), run.path(DATA, name),
                        compression)
    if rejected:
        run.write_table(rows_to_table(rejected, REJECTED_SCHEMA),
                        run.path(REJECTED, f"dedup-{name}"), compression)
    if span_rows:
        run.write_table(pa.Table.from_pylist(span_rows, schema=SPAN_SCHEMA),
                        run.path(SPANS, name), compression)
    documents_cut = len({r["id"] for r in span_rows})
    result = RewriteResult(name, len(kept), counts, len(span_rows), chars_cut, documents_cut,
                           pii_stage)
    return result, np.array(kept_rows, dtype=np.int64), pa.array([r["id"] for r in kept],
                                                                  pa.string())
