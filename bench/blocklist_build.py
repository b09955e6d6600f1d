"""Building the domain blocklist cache from scratch, as a worker on a new machine does.

Each run is a fresh Python process with an empty ``$REFINE_CACHE_DIR`` that imports
`refine.blocklist` and calls ``DomainBlocklist.load(path)`` (the entry point of
`refine.filters.url.URLFilter.load`): imports, JIT compilation, reading, hashing and writing
the ``.npy`` files are all timed. Prints one JSON line per way of building:

- ``packed``: the packaged list, through its packed copy (``refine/data/ut1-domains.fc.zst``);
- ``text``: the same ``.xz`` list read and normalised itself, as a list from ``refine
  blocklist update`` or ``url.blocklist_path`` is (the packed copy hidden);
- ``reference`` (``--reference``, ~30 s a run): the reference implementation, hashlib and
  `normalize_domain` per line, which built the cache before `refine.blocklist_build`.

``wall_s``: the process's wall time (min and median of ``--repeat`` runs); ``cpu_s``: its CPU
time, all threads, user + system (of the run with the median wall time); ``load``: the
1-minute load average before the runs (the machine's other work slows the wall time).
``identical``: whether each way's ``.npy`` files are byte-identical to the first way's.

    .venv/bin/python bench/blocklist_build.py                  # packed and text, 3 runs each
    .venv/bin/python bench/blocklist_build.py --reference --repeat 1
    .venv/bin/python bench/blocklist_build.py --list other-domains.txt.xz
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import sys, time
t0 = time.perf_counter()
from pathlib import Path
import refine.blocklist as blocklist
import refine.blocklist_build as blocklist_build
way, path = sys.argv[1], sys.argv[2]
if way == "text":
    blocklist_build.PACKED_DOMAINS = Path("/nonexistent/ut1-domains.fc.zst")
elif way == "reference":
    blocklist._hash_domain_file = lambda src, sha256=None: blocklist_build._reference(src)
d = blocklist.DomainBlocklist.load(path or None)
assert d.built, "the cache existed"
print(len(d), time.perf_counter() - t0)
"""


def _run(way: str, path: str, cache_dir: Path) -> tuple[float, float, int]:
    env = dict(os.environ, REFINE_CACHE_DIR=str(cache_dir))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, way, path],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, int(out.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", default="", help="domain list (default: the packaged one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also the reference (~30 s)")
    args = parser.parse_args()
    ways = (["reference"] if args.reference else []) + ["packed", "text"]
    first: dict[str, bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="blocklist-bench-") as tmp:
        for way in ways:
            load = os.getloadavg()[0]
            runs = []
            files: dict[str, bytes] = {}
            for i in range(args.repeat):
                cache_dir = Path(tmp) / f"{way}-{i}"
                runs.append((*_run(way, args.list, cache_dir), cache_dir))
            walls = sorted(r[0] for r in runs)
            median = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
            for f in sorted(median[3].glob("*.npy")):
                files[f.name.split(".", 1)[1]] = f.read_bytes()  # hashes.npy, bitmap.npy
            first = first if first is not None else files
            print(
                json.dumps(
                    {
                        "way": way,
                        "entries": median[2],
                        "wall_s": {"min": round(walls[0], 3),
                                   "median": round(statistics.median(walls), 3)},
                        "cpu_s": round(median[1], 3),
                        "load": round(load, 2),
                        "identical": files == first,
                        "sizes": {k: len(v) for k, v in files.items()},
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
