"""Throughput of stages 1-7 as `refine run` does them: on local worker processes (the default),
or on Ray (--address: local for a Ray of our own, or a cluster); prints one JSON line per
measurement.

The four real-html WARC files (1,213 real pages) are tiled (symlinked under new names, so each
copy is its own work unit) to at least --min-records records and refined with --workers actors.
Also reports the extraction F1 of the configured trafilatura options on the gold set.

docs_per_s counts the whole wall time from before the workers (or Ray) start; startup_s is the
part before the first unit starts (Ray if used, the workers and their models: fixed),
and docs_per_s_steady the rate from then to the last unit's end, which a long run approaches;
tail_s is what follows the last unit (merging the unit statistics, the accounting check, the
final stats.json and manifest). run_cpu_s is the CPU time of every process of the run (this
one, the workers, their extraction children, and Ray's GCS, raylet and the rest where Ray is
used) from before anything starts to the end;
extraction_share_of_run_cpu = extraction CPU / run_cpu_s, cpu_utilisation = run_cpu_s / (wall_s x
CPUs). --dedup adds stages 8-10 (the whole run, as the throughput issue measures it).

--output RUN writes the run directory there (a new local path, or a URL: s3://bucket/prefix;
the default is a temporary directory). With a URL the same input is refined to a local
temporary directory and to RUN (RUN-0, RUN-1, ... for several rounds) back to back in this
process, --rounds times (default 2) in alternating order (local, remote, remote, local: the
first run in a process is the slower), one JSON line each ("output": "local" or the URL), then
one line with remote/local docs/s (the object-storage target: within 10%). With --address, Ray
is started once before the comparison, so there wall_s and docs_per_s leave Ray's start out
(ray_start_s is in the last line); server_cpu_s is the local S3 server's CPU time, on the same
CPUs. --moto starts moto's S3 server on 127.0.0.1 (refine.locals3) and creates the bucket;
without it the usual AWS_* variables and AWS_ENDPOINT_URL say where S3 is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testkit: the tests' and benches' helpers
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


def is_remote(location: str) -> bool:
    import fsspec

    return fsspec.utils.get_protocol(location) not in ("file", "local")


class TreeCpu:
    """CPU seconds of this process and all its descendants (the workers, their extraction
    children; Ray's GCS, raylet and workers where Ray is used) from `start` to `stop`: each
    process's CPU time, sampled every `period_s` (a process that exits between samples loses at
    most that much). The sampling thread's own CPU is left out: it is the bench's, not the
    run's."""

    def __init__(self, period_s: float = 0.25) -> None:
        import threading

        import psutil

        self.psutil, self.me = psutil, psutil.Process()
        self.period_s, self.done = period_s, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.sampler_cpu = 0.0
        self.base = self._snapshot()
        self.seen = dict(self.base)

    def _snapshot(self) -> dict[int, float]:
        cpu = {}
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system
            except self.psutil.Error:
                continue
        return cpu

    def _run(self) -> None:
        while not self.done.wait(self.period_s):
            self.seen.update(self._snapshot())
        self.sampler_cpu = time.thread_time()

    def start(self) -> TreeCpu:
        self.thread.start()
        return self

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        self.seen.update(self._snapshot())
        total = sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.seen.items())
        return total - self.sampler_cpu


def measure(config: Any, inputs: list[str], output: str | Path, label: str, workers: int,
            address: str | None, started: float, server_pid: int | None = None,
            ) -> dict[str, Any]:
    """One run of `inputs` into `output` (shown as `label`); its wall time counts from
    `started`."""
    from s3_local import process_cpu_s

    from refine.run import run

    summaries: list[dict[str, Any]] = []
    driver_cpu = time.process_time()
    server_cpu = process_cpu_s(server_pid) if server_pid else 0.0
    result = run(config, inputs, output, workers=workers, address=address,
                 on_unit=lambda s, done, total: summaries.append(s))
    wall = time.monotonic() - started
    driver_cpu = time.process_time() - driver_cpu  # the scheduling loop, progress
    server_cpu = process_cpu_s(server_pid) - server_cpu if server_pid else None
    wall_end_unix = time.time()
    stats = result.stats
    stage_cpu = {name: round(stage["cpu_s"], 2) for name, stage in stats["stages"].items()}
    pipeline_cpu = sum(stage_cpu.values())
    per_worker: dict[int, dict[str, float]] = defaultdict(dict)
    for summary in summaries:
        worker = per_worker[summary["worker"]["pid"]]
        for key in ("peak_rss_mb", "extract_child_peak_rss_mb", "process_cpu_s",
                    "extract_child_cpu_s"):
            worker[key] = max(worker.get(key, 0.0), summary["worker"][key])
    docs = stats["documents"]["read"]
    # steady state: from the first unit's start to the last unit's end (no Ray or worker
    # start-up), what a long run converges to; start-up: from t0 to the first unit's start
    first_start = min(s["finished_unix"] - s["wall_s"] for s in summaries)
    last_end = max(s["finished_unix"] for s in summaries)
    # all CPU the worker processes spent (Ray's threads in them included) and their children
    worker_cpu = sum(w["process_cpu_s"] + w["extract_child_cpu_s"] for w in per_worker.values())
    line = {
        "output": label,
        "documents": docs,
        "kept": stats["documents"]["kept"],
        "units": result.units_total,
        "wall_s": round(wall, 2),
        "docs_per_s": round(docs / wall, 1),
        "startup_s": round(first_start - (wall_end_unix - wall), 2),
        "steady_s": round(last_end - first_start, 2),
        "docs_per_s_steady": round(docs / (last_end - first_start), 1),
        "tail_s": round(wall_end_unix - last_end, 2),  # merge, accounting, stats, manifest
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
            for w in per_worker.values()
        ],
        "accounting_ok": stats["accounting_ok"],
    }
    if server_cpu is not None:
        line["server_cpu_s"] = round(server_cpu, 2)  # the local S3 server, same machine's CPUs
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "warc" / "real-html")
    parser.add_argument("--gold", type=Path, default=SHARED / "extraction")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "refinedweb.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--address", help="run on Ray: 'local' starts a Ray of our own, else a "
                        "cluster's address (default: local worker processes, no Ray)")
    parser.add_argument("--min-records", type=int, default=4800)
    parser.add_argument("--dedup", action="store_true",
                        help="also run the dedup stages 8-10 (default: stages 1-7 only)")
    parser.add_argument("--output", help="the run directory: a new local path or a URL "
                        "(s3://bucket/prefix); default: a temporary directory")
    parser.add_argument("--compare-local", action=argparse.BooleanOptionalAction, default=None,
                        help="also refine to a local temporary directory and print the ratio "
                        "(default: on when --output is a URL)")
    parser.add_argument("--rounds", type=int,
                        help="comparison rounds, the order alternating (local, remote, remote, "
                        "local, ...), so the first run's warm-up is not charged to one side "
                        "only (default 2)")
    parser.add_argument("--moto", action="store_true",
                        help="start moto's S3 server on 127.0.0.1 for the bench and create "
                        "--output's bucket (default --output: s3://refine-bench/runs/bench)")
    args = parser.parse_args()

    from refine.config import load_config
    from refine.dag import LOCAL_RAY, init_ray
    from testkit.extract_eval import evaluate

    if args.moto and args.output is None:
        args.output = "s3://refine-bench/runs/bench"
    remote = args.output is not None and is_remote(args.output)
    if args.moto and not args.output.startswith("s3://"):
        sys.exit("--moto needs an s3:// --output")
    compare = remote if args.compare_local is None else args.compare_local
    if args.rounds is None:
        args.rounds = 2 if compare else 1
    if args.rounds < 1 or (args.rounds > 1 and not compare):
        sys.exit("--rounds needs a comparison (a URL --output or --compare-local), and >= 1")

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
    common = {"bench": "refine_throughput", "config": config.name, "workers": args.workers,
              "backend": "ray" if args.address else "processes",
              "stages": "1-10" if args.dedup else "1-7", "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="refine-bench-") as tmp, ExitStack() as stack:
        server_pid = None
        if args.moto:  # bench/ is sys.path[0] when this runs as a script
            from refine.locals3 import moto_server

            bucket = args.output.split("://", 1)[1].split("/")[0]
            server_pid = stack.enter_context(moto_server(bucket)).pid
        inputs = tile(sources, args.min_records, per_round, Path(tmp))
        input_mb = round(sum(Path(p).stat().st_size for p in inputs) / 1e6, 1)
        tree_cpu = TreeCpu().start()
        started = time.monotonic()  # wall time includes starting Ray and the workers
        if args.address:
            init_ray(args.address, num_cpus=os.cpu_count() if args.address == LOCAL_RAY else None)
        ray_start = time.monotonic() - started
        if not compare:
            line = measure(config, inputs, args.output or Path(tmp) / "run",
                           args.output or "local", args.workers, args.address, started,
                           server_pid)
            run_cpu = tree_cpu.stop()
            cores = os.cpu_count() or 1
            line |= {  # the whole run: every process (Ray's own too), from before any starts
                "run_cpu_s": round(run_cpu, 2),
                "extraction_share_of_run_cpu": round(line["cpu_s_per_stage"]["extract"] / run_cpu,
                                                     3),
                "cpu_utilisation": round(run_cpu / (line["wall_s"] * cores), 3),
            }
            gold = evaluate(args.gold / "html", args.gold / "ground-truth.json", config.extract)
            wall = line["wall_s"]
            ray = {"ray_start_s": round(ray_start, 2),
                   "docs_per_s_after_ray_start": round(line["documents"] / (wall - ray_start), 1),
                   } if args.address else {}
            print(json.dumps({
                **common, **line, "input_mb": input_mb,
                "mb_per_s": round(input_mb / wall, 2), **ray,
                "extraction_f1": round(gold["f1"], 4),
                "extraction_ms_per_page": round(gold["ms_per_page"], 2),
                "extraction_gold_pages": gold["pages"],
            }), flush=True)
            return
        target = args.output or str(Path(tmp) / "compare")
        lines: dict[str, list[dict[str, Any]]] = {"local": [], "remote": []}
        for round_ in range(args.rounds):
            order = ("local", "remote") if round_ % 2 == 0 else ("remote", "local")
            for side in order:
                if side == "local":
                    output: str | Path = Path(tmp) / f"run-{round_}"
                else:
                    output = target if args.rounds == 1 else f"{target.rstrip('/')}-{round_}"
                line = measure(config, inputs, output,
                               "local" if side == "local" else str(output), args.workers,
                               args.address, time.monotonic(),
                               server_pid if side == "remote" else None)
                line = {**common, **line, "round": round_, "input_mb": input_mb,
                        "mb_per_s": round(input_mb / line["wall_s"], 2)}
                lines[side].append(line)
                print(json.dumps(line), flush=True)

    def rate(side: str, seconds: str) -> float:  # all rounds' documents over their seconds
        runs = lines[side]
        return sum(r["documents"] for r in runs) / sum(r[seconds] for r in runs)

    ratio = rate("remote", "wall_s") / rate("local", "wall_s")
    ratio_steady = rate("remote", "steady_s") / rate("local", "steady_s")
    print(json.dumps({
        **common, "comparison": "remote/local", "output": target, "rounds": args.rounds,
        **({"ray_start_s": round(ray_start, 2)} if args.address else {}),
        "local_docs_per_s": [r["docs_per_s"] for r in lines["local"]],
        "remote_docs_per_s": [r["docs_per_s"] for r in lines["remote"]],
        "local_docs_per_s_steady": [r["docs_per_s_steady"] for r in lines["local"]],
        "remote_docs_per_s_steady": [r["docs_per_s_steady"] for r in lines["remote"]],
        "ratio": round(ratio, 3),
        "ratio_steady": round(ratio_steady, 3),
        "within_10pct": ratio >= 0.9,
        "within_10pct_steady": ratio_steady >= 0.9,
    }), flush=True)


if __name__ == "__main__":
    main()
