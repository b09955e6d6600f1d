"""Stages 1-7 and 11 over one work unit. Knows nothing of Ray: `refine.dag` schedules units.

Every document record read ends in exactly one place: a kept row in `data/` or a rejected row
in `rejected/` with its stage and reason. A unit's stats file is written last, after its shards
are renamed into place, so its presence marks the unit as finished (resume relies on this).

Records go through the stages a batch at a time, stage by stage: each stage's model (the
fastText tables, the regexes) stays in the CPU cache over the batch instead of being evicted by
the extraction of every page in between (fastText costs ~2x more interleaved). Rows are written
in record order, so the output is the same as record by record.
"""

from __future__ import annotations

import os
import posixpath
import resource
import time
from pathlib import Path
from typing import Any

from refine import stages
from refine.config import RunConfig
from refine.document import Document, Filter
from refine.filters.pii import anonymise_counted
from refine.languages import language_chains
from refine.readers import PAYLOAD_BYTES, SourceRecord, Unit, read_unit
from refine.rundir import DATA, FILTERED, PARTS, REJECTED, RunDir, as_run_dir
from refine.sandbox import OK, ExtractionSandbox
from refine.shards import KEPT_SCHEMA, REJECTED_SCHEMA, ShardWriter, kept_row, rejected_row
from refine.stats import UnitStats

WARN_REASONS = ("corrupt_record", "truncated_record", "record_too_large")
BATCH_RECORDS = 64  # records per stage-by-stage batch (~10 MB of HTML on Common Crawl pages)
BATCH_CHARS = 16 << 20  # and at most this much payload text held at once
HTML_CHARS = f"{stages.EXTRACT.prefix}html_chars"  # the page's HTML, in characters
READ, URL, EXTRACT, WRITE = (stages.READ.name, stages.URL.name, stages.EXTRACT.name,
                             stages.WRITE.name)


class _Outcome:
    """Where one record ends: the shard row to write and the warnings it raised."""

    __slots__ = ("doc", "row", "rejected", "warnings")

    def __init__(self, doc: Document):
        self.doc = doc
        self.row: dict[str, Any] | None = None
        self.rejected = False
        self.warnings: list[str] = []


def units_done(run_dir: RunDir) -> set[str]:
    """Ids of the committed units: one listing of RUN/stats/units/ (not a request per unit)."""
    return {posixpath.basename(p).removesuffix(".json")
            for p in run_dir.files(PARTS, suffix=".json")}


def build_text_filters(config: RunConfig) -> list[tuple[str, Filter]]:
    """(stage name, filter) of the enabled text stages (refine.stages), in run order."""
    return [(stage.name, stage.build(config)) for stage in stages.TEXT_FILTER_STAGES
            if stage.enabled(config)]


class UnitProcessor:
    """Holds the per-worker state (blocklist, fastText model, extraction child) across units."""

    def __init__(self, config: RunConfig, run_dir: str | Path | RunDir):
        self.config, self.run_dir = config, as_run_dir(run_dir)
        self.sandbox = ExtractionSandbox(config.extract.model_dump(), config.extract.timeout_s)
        self.sandbox.start()  # the child imports trafilatura while we load the other models
        url_stage = stages.URL
        self.url_filter = url_stage.build(config).load() if url_stage.enabled(config) else None
        self.text_filters = build_text_filters(config)
        # languages with their own settings: a chain each, the same stages (refine.languages)
        self.language_filters = language_chains(config, self.text_filters)
        # with dedup, stages 1-7 write to filtered/ and the dedup stages write data/ from it
        self.kept_dir = FILTERED if config.dedup.enabled else DATA
        # PII goes from the text written: here without dedup, else in dedup's rewrite
        pii = stages.PII
        self.pii = (pii.section(config) if pii.enabled(config) and not config.dedup.enabled
                    else None)

    def close(self) -> None:
        self.sandbox.close()

    def process(self, unit: Unit) -> dict[str, Any]:
        started = time.monotonic()
        for sub in (self.kept_dir, REJECTED):
            self.run_dir.remove_prefixed(sub, f"{unit.id}-")
        out = self.config.output
        kept = ShardWriter(self.run_dir, self.kept_dir, unit.id, KEPT_SCHEMA, out.shard_bytes,
                           out.compression)
        rejected = ShardWriter(self.run_dir, REJECTED, unit.id, REJECTED_SCHEMA,
                               out.shard_bytes, out.compression)
        stats = UnitStats(unit.id, unit.path, [name for name, _ in self.text_filters]
                          + ([stages.PII.name] if self.pii else []))
        batch: list[SourceRecord] = []
        batch_chars = 0
        clock = time.thread_time()
        for record in read_unit(unit, self.config.read.max_record_bytes):
            stats.stages[READ]["cpu_s"] += time.thread_time() - clock
            batch.append(record)
            batch_chars += len(record.html or record.doc.text)
            if len(batch) == BATCH_RECORDS or batch_chars >= BATCH_CHARS:
                self._process_batch(batch, stats, kept, rejected)
                batch, batch_chars = [], 0
            clock = time.thread_time()
        stats.stages[READ]["cpu_s"] += time.thread_time() - clock
        self._process_batch(batch, stats, kept, rejected)
        write_started = time.thread_time()
        kept.close()
        rejected.close()
        stats.stages[WRITE]["cpu_s"] += time.thread_time() - write_started
        stats.wall_s = time.monotonic() - started
        summary = stats.to_dict()
        summary["finished_unix"] = round(time.time(), 3)
        summary["files"] = {self.kept_dir: kept.files, "rejected": rejected.files}
        summary["worker"] = {
            "pid": os.getpid(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "extract_child_peak_rss_mb": self.sandbox.child_peak_rss_kb / 1024,
            "extract_child_restarts": self.sandbox.restarts,
            "process_cpu_s": round(time.process_time(), 3),  # cumulative, Ray's threads included
            "extract_child_cpu_s": round(self.sandbox.child_cpu_s, 3),  # cumulative
        }
        self.run_dir.write_json(summary, PARTS, f"{unit.id}.json")  # last: the unit's commit
        return summary

    def _process_batch(self, records: list[SourceRecord], stats: UnitStats, kept: ShardWriter,
                       rejected: ShardWriter) -> None:
        outcomes = [_Outcome(record.doc) for record in records]
        live = [out for record, out in zip(records, outcomes, strict=True)
                if self._read_and_extract(record, out, stats)]
        chains = self.language_filters
        for i, (stage, text_filter) in enumerate(self.text_filters):
            # each document by its language's filter (language ID, first, sets it)
            live = [out for out in live if self._run(
                chains[out.doc.language][i][1] if out.doc.language in chains else text_filter,
                stage, out, stats)]
        for out in live:
            self._keep(out, stats)
        for out in outcomes:  # in record order
            stats.warnings.extend(out.warnings)
            assert out.row is not None
            if out.rejected:
                rejected.add(out.row, len(out.row["text"]))
            else:
                kept.add(out.row, len(out.row["text"]))

    def _read_and_extract(self, record: SourceRecord, out: _Outcome, stats: UnitStats) -> bool:
        doc = out.doc
        stats.read += 1
        stats.records_by_type[record.record_type] += 1
        read = stats.stages[READ]
        read["in"] += 1
        read["bytes_in"] += int(doc.metrics.get(PAYLOAD_BYTES, len(doc.text)))
        if record.reason:
            if record.reason in WARN_REASONS:
                out.warnings.append(f"{doc.file_path} @ {doc.offset}: {record.reason}")
            self._reject(out, READ, record.reason, stats)
            return False
        read["out"] += 1
        # text corpora often carry no URL: there is nothing for the URL stage to judge then
        if self.url_filter is not None and doc.url and not self._run(self.url_filter, URL, out,
                                                                     stats):
            return False
        return record.html is None or self._extract(record.html, out, stats)

    def _keep(self, out: _Outcome, stats: UnitStats) -> None:
        doc = out.doc
        if self.pii is not None:
            doc.text, found = anonymise_counted(doc.text, self.pii, stats.stages[stages.PII.name])
            doc.metrics.update(found)
        write = stats.stages[WRITE]
        write["in"] += 1
        write["out"] += 1
        write["bytes_out"] += len(doc.text)
        stats.kept += 1
        out.row = kept_row(doc)

    def _run(self, stage_filter: Filter, stage: str, out: _Outcome, stats: UnitStats) -> bool:
        doc = out.doc
        counters = stats.stages[stage]
        counters["in"] += 1
        counters["bytes_in"] += len(doc.text)
        started = time.thread_time()
        reason = stage_filter.apply(doc)
        counters["cpu_s"] += time.thread_time() - started
        if reason is not None:
            self._reject(out, stage, reason, stats)
            return False
        counters["out"] += 1
        counters["bytes_out"] += len(doc.text)
        return True

    def _extract(self, html: str, out: _Outcome, stats: UnitStats) -> bool:
        doc = out.doc
        counters = stats.stages[EXTRACT]
        counters["in"] += 1
        counters["bytes_in"] += len(html)
        started = time.thread_time()
        status, text, child_cpu, error = self.sandbox.extract(html)
        counters["cpu_s"] += time.thread_time() - started + child_cpu
        # documents carry no timings: output must be the same bytes on every rerun
        doc.metrics[HTML_CHARS] = float(len(html))
        if status == OK and not text:
            status = "no_extracted_text"
        if status != OK:
            if error:
                out.warnings.append(f"{doc.file_path} @ {doc.offset}: {status}: {error}")
            self._reject(out, EXTRACT, status, stats)
            return False
        doc.text = text
        counters["out"] += 1
        counters["bytes_out"] += len(text)
        return True

    def _reject(self, out: _Outcome, stage: str, reason: str, stats: UnitStats) -> None:
        doc = out.doc
        stats.reject(stage, reason)
        out.rejected = True
        out.row = rejected_row(doc, stage, reason, self.config.output.rejected_text_chars)
