"""Throughput of stages 1-7 on a real local Ray; prints one JSON line.

The four real-html WARC files (1,213 real pages) are tiled (symlinked under new names, so each
copy is its own work unit) to at least --min-records records and refined with --workers actors.
Also reports the extraction F1 of the configured trafilatura options on the gold set.

docs_per_s counts the whole wall time from before Ray starts; startup_s is the part before the
first unit starts (Ray, the Ray Data executor, the actors and their models: fixed, ~7 s here),
and docs_per_s_steady the rate from then to the last unit's end, which a long run approaches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def tile(sources: list[Path], min_records: int, records_per_round: int, into: Path) -> list[str]:
    rounds = -(-min_records // records_per_round)
    paths = []
    for copy in range(rounds):
        for source in sources:
            link = into / f"tile{copy:02d}-{source.name}"
            link.symlink_to(source.resolve())
            paths.append(str(link))
    return paths


def count_documents(paths: list[Path]) -> int:
    from refine.readers import plan_units, read_unit

    units = plan_units([(str(p), p.stat().st_size) for p in paths], 1 << 40)
    return sum(1 for unit in units for _ in read_unit(unit, 1 << 30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED / "warc" / "real-html")
    parser.add_argument("--gold", type=Path, default=SHARED / "extraction")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "refinedweb.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min-records", type=int, default=4800)
    parser.add_argument("--dedup", action="store_true",
                        help="also run the dedup stages 8-10 (default: stages 1-7 only)")
    args = parser.parse_args()

    from refine.config import load_config
    from refine.dag import init_ray
    from refine.extract_eval import evaluate
    from refine.run import run

    config = load_config(args.config)
    if not args.dedup:  # the target is for stages 1-7; bench/dedup.py measures 8-10
        off = {"enabled": False}
        config = config.model_copy(update={"dedup": config.dedup.model_copy(update={
            "fuzzy": config.dedup.fuzzy.model_copy(update=off),
            "exact": config.dedup.exact.model_copy(update=off),
            "urls": config.dedup.urls.model_copy(update=off)})})
    sources = sorted(args.data.glob("*.warc.gz"))
    if not sources:
        sys.exit(f"no *.warc.gz in {args.data}")
    per_round = count_documents(sources)
    with tempfile.TemporaryDirectory(prefix="refine-bench-") as tmp:
        inputs = tile(sources, args.min_records, per_round, Path(tmp))
        input_bytes = sum(Path(p).stat().st_size for p in inputs)
        started = time.monotonic()  # wall time includes starting Ray and the workers
        init_ray(None, num_cpus=os.cpu_count())
        ray_start = time.monotonic() - started
        summaries = []
        driver_cpu = time.process_time()
        result = run(config, inputs, Path(tmp) / "run", workers=args.workers,
                     on_unit=lambda s, done, total: summaries.append(s))
        wall = time.monotonic() - started
        driver_cpu = time.process_time() - driver_cpu  # Ray Data's executor loop, progress
        wall_end_unix = time.time()
    stats = result.stats
    stage_cpu = {name: round(stage["cpu_s"], 2) for name, stage in stats["stages"].items()}
    pipeline_cpu = sum(stage_cpu.values())
    workers: dict[int, dict[str, float]] = defaultdict(dict)
    for summary in summaries:
        worker = workers[summary["worker"]["pid"]]
        for key in ("peak_rss_mb", "extract_child_peak_rss_mb", "process_cpu_s",
                    "extract_child_cpu_s"):
            worker[key] = max(worker.get(key, 0.0), summary["worker"][key])
    docs = stats["documents"]["read"]
    # steady state: from the first unit's start to the last unit's end (no Ray or worker
    # start-up), what a long run converges to; start-up: from t0 to the first unit's start
    first_start = min(s["finished_unix"] - s["wall_s"] for s in summaries)
    last_end = max(s["finished_unix"] for s in summaries)
    startup = first_start - (wall_end_unix - wall)
    # all CPU the worker processes spent (Ray's threads in them included) and their children
    worker_cpu = sum(w["process_cpu_s"] + w["extract_child_cpu_s"] for w in workers.values())
    gold = evaluate(args.gold / "html", args.gold / "ground-truth.json", config.extract)
    print(json.dumps({
        "bench": "refine_throughput",
        "config": config.name,
        "workers": args.workers,
        "stages": "1-10" if args.dedup else "1-7",
        "cpus": os.cpu_count(),
        "documents": docs,
        "kept": stats["documents"]["kept"],
        "input_mb": round(input_bytes / 1e6, 1),
        "wall_s": round(wall, 2),
        "docs_per_s": round(docs / wall, 1),
        "ray_start_s": round(ray_start, 2),
        "docs_per_s_after_ray_start": round(docs / (wall - ray_start), 1),
        "startup_s": round(startup, 2),  # Ray, the actors and their models, until work starts
        "docs_per_s_steady": round(docs / (last_end - first_start), 1),
        "mb_per_s": round(input_bytes / 1e6 / wall, 2),
        "cpu_s_per_stage": stage_cpu,
        "pipeline_cpu_s": round(pipeline_cpu, 2),
        "worker_cpu_s": round(worker_cpu, 2),
        "driver_cpu_s": round(driver_cpu, 2),
        "extraction_share": round(stage_cpu["extract"] / pipeline_cpu, 3),
        "extraction_share_of_worker_cpu": round(stage_cpu["extract"] / worker_cpu, 3),
        "peak_rss_mb_per_worker": [
            {"actor": round(w["peak_rss_mb"], 1),
             "extraction_child": round(w["extract_child_peak_rss_mb"], 1),
             "total": round(w["peak_rss_mb"] + w["extract_child_peak_rss_mb"], 1)}
            for w in workers.values()
        ],
        "accounting_ok": stats["accounting_ok"],
        "extraction_f1": round(gold["f1"], 4),
        "extraction_ms_per_page": round(gold["ms_per_page"], 2),
        "extraction_gold_pages": gold["pages"],
    }))


if __name__ == "__main__":
    main()
