"""Refinement throughput on a local multi-node Ray cluster with 1 and 2 worker nodes.

Each worker node is a separate `ray start` process session limited to --cpus-per-node CPUs
(default 1), the head has none; `refine run --address` runs the real-html WARCs through every
stage with one worker actor per node. One JSON line per node count, then a summary line with
the speed-up. On a 2-core machine the head, the driver and Ray's own daemons share the cores
with the workers, so 2 nodes cannot reach a full 2x there; the line reports the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testkit: the tests' and benches' helpers
SHARED = ROOT.parent / "shared" / "data"


def measure(nodes: int, cpus: int, inputs: list[str], config: Path) -> dict:
    from testkit.localcluster import LocalCluster

    temp = Path(tempfile.mkdtemp(prefix="rs-"))
    started = time.monotonic()
    cluster = LocalCluster(temp / "ray", workers=nodes, cpus_per_node=cpus)
    cluster_start = time.monotonic() - started
    try:
        out = temp / "run"
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "refine.cli", "run", str(config), "--input", *inputs,
             "--output", str(out), "--address", cluster.address, "--workers",
             str(nodes * cpus), "--quiet"],
            env=cluster.env, capture_output=True, text=True)
        wall = time.monotonic() - began
        if done.returncode != 0:
            sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
        stats = json.loads((out / "stats.json").read_text())
    finally:
        cluster.stop()
        shutil.rmtree(temp, ignore_errors=True)
    docs = stats["documents"]["read"]
    return {
        "bench": "refine_scaling", "worker_nodes": nodes, "cpus_per_node": cpus,
        "documents": docs, "kept": stats["documents"]["kept"],
        "wall_s": round(wall, 2), "docs_per_s": round(docs / wall, 1),
        "cluster_start_s": round(cluster_start, 2), "config": config.name,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "warc" / "real-html",
                        help="directory of *.warc.gz (default: ../shared/data/warc/real-html)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "refinedweb.yaml")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-node", type=int, default=1)
    args = parser.parse_args()
    inputs = sorted(str(p) for p in args.data.glob("*.warc.gz"))
    if not inputs:
        sys.exit(f"no *.warc.gz in {args.data}")
    lines = []
    for nodes in args.nodes:
        lines.append(measure(nodes, args.cpus_per_node, inputs, args.config))
        print(json.dumps(lines[-1]), flush=True)
    base = lines[0]
    print(json.dumps({
        "bench": "refine_scaling_summary",
        "speedup": {str(line["worker_nodes"]): round(line["docs_per_s"] / base["docs_per_s"], 2)
                    for line in lines},
        "relative_to_nodes": base["worker_nodes"],
    }), flush=True)


if __name__ == "__main__":
    main()
