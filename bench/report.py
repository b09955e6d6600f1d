"""`refine report` on a large run directory: wall time, page size and peak memory.

The run directory is synthesised, not refined (refining a million documents here would take
hours): --docs documents over --inputs inputs, every one kept in data/ or rejected in
rejected/ with a stage and reason, and per-unit stats files merged into stats.json by
refine.stats (so the accounting holds). Metrics are drawn per document for every filter
(language score, the 13 Gopher repetition fractions, the 7 Gopher quality measures, the line
correction counts, ~30 keys as in a real run) and each filter's drop decision is taken from
them with the refinedweb preset's thresholds, in run order, so the what-if tables see
consistent data; read/url/extract and dedup drops are drawn at fixed rates. Texts are short
(a pool of 30-200 word texts), rejected texts cut at 2,000 characters as in a run.

Then `refine report RUN` runs in a subprocess, timed, best of --repeat; one JSON line per run:
{"bench": "report", "docs", "wall_s", "page_bytes", "peak_rss_mb", "setup_s"}. Targets
(issue 6): wall_s < 60 and page_bytes < 10 MB at 1,000,000 documents.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refine.accounting import check_run
from refine.config import RunConfig
from refine.filters import language, lines, quality, repetition
from refine.run import KIND
from refine.shards import KEPT_SCHEMA, METRICS, REJECTED_SCHEMA
from refine.stats import DEDUP_STAGES, merge

_VOCABULARY = ("the of and to in a is that for it as was with be by on not he this are or his "
               "from at which but have an they you were her she there been one all we their has "
               "would when river market window science garden village engine history music "
               "summer theory paper #tag ... - lorem ipsum LOREM 123 456")
WORDS = _VOCABULARY.split(" ")
LINE_KEYS = ["line_corrections." + k for k in (
    "removed_word_frac", "removed_words", "lines_removed", "lines_edited", "uppercase_lines",
    "numeric_lines", "counter_lines", "single_word_lines", "boilerplate_lines")]


def _texts(rng: np.random.Generator, count: int) -> list[str]:
    out = []
    for _ in range(count):
        words = rng.choice(WORDS, size=int(rng.integers(30, 200)))
        lines_ = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
        out.append("\n".join(lines_))
    return out


def _metrics(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    m: dict[str, np.ndarray] = {
        "read.payload_bytes": rng.integers(2_000, 200_000, n).astype(float),
        "extract.cpu_ms": rng.gamma(2.0, 15.0, n),
        "language.score": np.clip(rng.beta(8, 1.2, n), 0, 1),
    }
    for check in repetition.CHECKS:
        m[f"gopher_repetition.{check}"] = np.clip(rng.beta(0.5, 40, n), 0, 1)
    q = "gopher_quality."
    m[q + "n_words"] = np.floor(rng.lognormal(5.5, 1.1, n))
    m[q + "mean_word_len"] = rng.normal(4.8, 0.9, n)
    m[q + "hash_word_ratio"] = rng.exponential(0.005, n)
    m[q + "ellipsis_word_ratio"] = rng.exponential(0.005, n)
    m[q + "bullet_line_frac"] = np.clip(rng.beta(0.4, 4, n), 0, 1)
    m[q + "ellipsis_line_frac"] = np.clip(rng.beta(0.3, 8, n), 0, 1)
    m[q + "alpha_word_frac"] = np.clip(rng.beta(30, 2, n), 0, 1)
    m[q + "stop_words"] = np.floor(rng.gamma(2.0, 12.0, n))
    for key in LINE_KEYS:
        m[key] = np.floor(rng.exponential(2.0, n))
    m["line_corrections.removed_word_frac"] = np.clip(rng.exponential(0.015, n), 0, 1)
    return m


def _decide(m: dict[str, np.ndarray], config: RunConfig, rng: np.random.Generator,
            n: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage and reason per document ("" for kept), in run order."""
    stage = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)

    def drop(mask: np.ndarray, name: str, why: str | np.ndarray) -> None:
        mask = mask & (stage == "")
        stage[mask] = name
        reason[mask] = why if isinstance(why, str) else why[mask]

    u = rng.random(n)
    drop(u < 0.01, "read", "not_html")
    drop((u >= 0.01) & (u < 0.06), "url", "blocklisted_domain")
    drop((u >= 0.06) & (u < 0.09), "extract", "no_extracted_text")
    drop((u >= 0.09) & (u < 0.17), "language", "language_not_selected")
    filters = (("language", language.THRESHOLDS, config.language),
               ("repetition", repetition.THRESHOLDS, config.repetition),
               ("quality", quality.THRESHOLDS, config.quality),
               ("lines", lines.THRESHOLDS, config.lines))
    for name, checks, section in filters:
        for check in checks:
            t = float(getattr(section, check.config_key))
            values = m[check.metric]
            fails = values < t if check.direction == "min" else values > t
            drop(fails, name, check.reason)
    u = rng.random(n)
    drop(u < 0.04, "fuzzy_dedup", "near_duplicate")
    drop((u >= 0.04) & (u < 0.045), "exact_dedup", "too_short")
    drop((u >= 0.045) & (u < 0.05), "url_dedup", "duplicate_url")
    return stage, reason


def _map_column(m: dict[str, np.ndarray], rows: np.ndarray) -> pa.Array:
    keys = sorted(m)
    n, k = len(rows), len(keys)
    names = pa.DictionaryArray.from_arrays(
        pa.array(np.tile(np.arange(k, dtype=np.int32), n)), pa.array(keys)).cast(pa.string())
    values = np.stack([m[key][rows] for key in keys], axis=1).reshape(-1)
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.MapArray.from_arrays(offsets, names, pa.array(values)).cast(METRICS)


def synthesise(run: Path, docs: int, inputs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    config = RunConfig()
    m = _metrics(rng, docs)
    stage, reason = _decide(m, config, rng, docs)
    pool = pa.array(_texts(rng, 1000))
    pick = rng.integers(0, len(pool), docs)
    per_input = np.array_split(np.arange(docs), inputs)
    (run / "data").mkdir(parents=True)
    (run / "rejected").mkdir()
    (run / "stats" / "units").mkdir(parents=True)
    dedup_inputs: dict[str, dict[str, int]] = {}
    manifest_inputs = []
    for k, rows in enumerate(per_input):
        path = f"/crawl/part-{k:04d}.warc.gz"
        manifest_inputs.append({"path": path, "size": int(len(rows) * 40_000), "units": 1,
                                "units_done": 1, "complete": True})
        n = len(rows)
        ids = pa.array([f"{k:04d}-{i:08d}" for i in range(n)])
        texts = pool.take(pa.array(pick[rows]))
        common = {"id": ids, "url": pa.array([f"https://site{i % 5000}.example/{k}/{i}"
                                              for i in range(n)]),
                  "date": pa.array(["2024-05-01T00:00:00Z"] * n),
                  "file_path": pa.array([path] * n), "offset": pa.array(np.arange(n) * 4096),
                  "metrics": _map_column(m, rows)}
        table = pa.table({**common, "text": texts}).select(
            [c for c in KEPT_SCHEMA.names if c in common or c == "text"])
        kept = stage[rows] == ""
        word_counts = np.array([len(t.split()) for t in pool.to_pylist()])[pick[rows]]
        data = table.filter(pa.array(kept)).append_column(
            "language", pa.array(["en"] * int(kept.sum()))).append_column(
            "language_score", pa.array(m["language.score"][rows][kept])).append_column(
            "token_count", pa.array(word_counts[kept]))
        pq.write_table(data.select(KEPT_SCHEMA.names).cast(KEPT_SCHEMA),
                       run / "data" / f"part-{k:04d}.parquet", compression="zstd")
        rej = ~kept
        nr = int(rej.sum())
        rejected = pa.table({
            **{c: table.column(c).filter(pa.array(rej)) for c in ("id", "url", "date",
                                                                  "file_path", "offset",
                                                                  "metrics")},
            "stage": pa.array(stage[rows][rej].tolist()),
            "reason": pa.array(reason[rows][rej].tolist()),
            "duplicate_of": pa.array([f"{k:04d}-{int(i) // 7 * 7:08d}" if s == "fuzzy_dedup"
                                      else None for i, s in zip(np.flatnonzero(rej),
                                                                stage[rows][rej],
                                                                strict=True)]),
            "language": pa.array(["en"] * nr),
            "text": texts.filter(pa.array(rej)),
            "text_chars": pa.array(np.array([len(t) for t in pool.to_pylist()])[pick[rows]][rej]),
        })
        pq.write_table(rejected.select(REJECTED_SCHEMA.names).cast(REJECTED_SCHEMA),
                       run / "rejected" / f"part-{k:04d}.parquet", compression="zstd")
        _write_unit(run, k, path, stage[rows], reason[rows], dedup_inputs)
    _write_stats(run, config, manifest_inputs, dedup_inputs, stage, reason)


def _write_unit(run: Path, k: int, path: str, stage: np.ndarray, reason: np.ndarray,
                dedup_inputs: dict[str, dict[str, int]]) -> None:
    order = ("read", "url", "extract", "language", "repetition", "quality", "lines")
    stages = {}
    alive = len(stage)
    rejected: dict[str, int] = {}
    for name in (*order, "write"):
        mask = stage == name
        by_reason = dict(zip(*np.unique(reason[mask].astype(str), return_counts=True),
                             strict=True)) if mask.any() else {}
        by_reason = {r: int(c) for r, c in by_reason.items()}
        dropped = int(mask.sum())
        stages[name] = {"in": alive, "out": alive - dropped, "rejected": by_reason,
                        "cpu_s": alive * 0.002, "bytes_in": alive * 5000,
                        "bytes_out": (alive - dropped) * 5000}
        rejected.update({f"{name}.{r}": c for r, c in by_reason.items()})
        alive -= dropped
    dedup = stage[np.isin(stage, list(DEDUP_STAGES))]
    dedup_reasons = reason[np.isin(stage, list(DEDUP_STAGES))]
    dedup_inputs[path] = {}
    for s, r in zip(dedup, dedup_reasons, strict=True):
        key = f"{s}.{r}"
        dedup_inputs[path][key] = dedup_inputs[path].get(key, 0) + 1
    unit = {"unit": f"u{k:04d}", "input": path, "read": len(stage), "kept": alive,
            "rejected": rejected, "stages": stages, "records_by_type": {"response": len(stage)},
            "warnings": [], "wall_s": 1.0}
    (run / "stats" / "units" / f"u{k:04d}.json").write_text(json.dumps(unit))


def _write_stats(run: Path, config: RunConfig, inputs: list[dict], dedup_inputs: dict,
                 stage: np.ndarray, reason: np.ndarray) -> None:
    units = {i["path"]: 1 for i in inputs}
    after_lines = int((stage == "").sum() + np.isin(stage, list(DEDUP_STAGES)).sum())
    dedup_stages, alive = {}, after_lines
    for name in DEDUP_STAGES:
        mask = stage == name
        by_reason = {str(r): int((reason[mask] == r).sum()) for r in np.unique(reason[mask])}
        dedup_stages[name] = {"in": alive, "out": alive - int(mask.sum()),
                              "rejected": by_reason, "cpu_s": alive * 0.001}
        alive -= int(mask.sum())
    dedup = {"stages": dedup_stages, "documents_out": alive, "inputs": dedup_inputs}
    (run / "stats" / "dedup.json").write_text(json.dumps(dedup))
    from refine.rundir import RunDir
    from refine.stats import load_parts

    stats = merge(load_parts(RunDir(run)), units, dedup)
    stats["config_hash"] = config.hash
    check_run(run, stats)
    (run / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    manifest = {"kind": KIND, "config": config.model_dump(mode="json"),
                "config_hash": config.hash,
                "inputs": inputs, "versions": {}, "command": ["bench/report.py"],
                "status": "complete"}
    (run / "manifest.json").write_text(json.dumps(manifest, indent=1))
    assert stats["accounting_ok"], "synthesised run does not account"


def measure(run: Path, repeat: int) -> dict:
    best = None
    for _ in range(repeat):
        page = run / "report.html"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "refine.cli", "report", str(run)], check=True,
                       capture_output=True)
        wall = time.perf_counter() - started
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if best is None or wall < best["wall_s"]:
            best = {"wall_s": round(wall, 2), "page_bytes": page.stat().st_size,
                    "peak_rss_mb": round(rss, 1)}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--inputs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="write the run here and keep it")
    args = parser.parse_args()
    for docs in args.docs:
        base = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
        run = base / f"run-{docs}"
        if run.exists():
            shutil.rmtree(run)
        started = time.perf_counter()
        synthesise(run, docs, min(args.inputs, docs))
        setup = time.perf_counter() - started
        result = measure(run, args.repeat)
        print(json.dumps({"bench": "report", "docs": docs, **result,
                          "setup_s": round(setup, 1),
                          "wall_ok": result["wall_s"] < 60,
                          "size_ok": result["page_bytes"] < 10_000_000}), flush=True)
        if args.keep is None:
            shutil.rmtree(base)


if __name__ == "__main__":
    main()
