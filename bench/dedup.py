"""Fuzzy-dedup benchmark, signature part: MinHash signatures per second on one core.

Texts come from a refine run's RUN/data Parquet (--run) or are extracted from the real-html
WARCs with refine's reader and `extract_text`. For each preset (14x8; 450x20 legacy; 450x20
affine32, datasketch 2.x's default scheme) refine and datasketch (same seed and scheme) sign
the same documents, outputs checked equal, three ways: ``*_from_hashes`` is the signature step
alone (each document's distinct SHA-1 shingle hashes in: `MinHasher.hash_signatures`, the
compiled kernel, vs `MinHash.bulk` with an identity hashfunc), the plain keys start from
shingle bytes (`MinHasher.signatures`, `MinHash.bulk`; ``refine_poly64`` with
``shingle_hash="poly64"``), ``*_from_text`` from the text (normalising and shingling included;
datasketch gets refine's shingles). Single-threaded CPU time (`time.process_time`), runs
alternating, best of --repeat. ``text_path_ms_per_doc``: refine's text path step by step
(normalise, shingle + SHA-1, de-duplicate + pre-mix, kernel) and the fuzzy stage's band keys.
One JSON line per preset (``"bench": "dedup_minhash_signatures"``), after one line with the
kernels' first-call times in fresh processes, compiling and from numba's cache
(``"dedup_minhash_kernel_compile"``); --skip-signatures skips this part.

Scaling part (issue 5, acceptance point 4): wall time and peak memory of the whole dedup
(`refine.dedup.stage.run_dedup`: fuzzy, exact-substring and URL dedup, then the rewrite) at
--scales times a corpus of --base-docs real, distinct texts (`bench/dedup_corpus.py`: the
CC-MAIN text sample, Wikipedia sections, Lee news; shuffled, so every scale has the same mix)
with injected duplicates at the same rates (`testkit.synthetic.inject_duplicates`: 6%
near-duplicates, 2% exact copies, 1% same-URL re-crawls, 1% quoting documents). Scale k is
written as k * --shards-per-scale ``RUN/filtered/*.parquet`` shards of equal document counts
(so 2 workers get equal work at every scale; --shard-mb: shards of that much text instead).
Dedup runs on a local Ray (2 CPUs, started once before all timings, its start reported) with
`map_tasks` and --workers 2, after one untimed warm-up run per preset (workers import refine);
each scale runs --scaling-repeat times, the scales taking turns, and the fastest run is
reported. During each run a thread samples, every 50 ms, the RSS of the driver and of all its
descendant processes (Ray workers ``ray::*``, raylet, GCS, agents, ...) and their CPU times:
peaks in total, for driver + workers, and per process (memory from each scale's first run:
workers are reused and keep their heap), CPU seconds of driver + workers (a growth measure
less sensitive to other load on the machine than wall time). Wall time of each map step
(sign_shard, bucket_edges, star_round, shard_windows, ...) is measured around `map_tasks`;
the rest (driver_other_s) is driver work: listing files and bookkeeping.
One JSON line per (preset, scale) (``"bench": "dedup_scaling"``), then one summary line per
preset with wall(2x)/wall(1x), wall(4x)/wall(1x), the same for CPU and per step, and
``linear_ok``: wall(k x) <= k * wall(1x) * 1.1 for every scale k (``cpu_linear_ok``: the same
for CPU time). Recall: an injected near/exact copy or same-URL re-crawl is caught when it and
its original are not both kept; a quote when the passage is cut (or the quoting document
dropped) with a link to the quoted document or its survivor. ``removed_not_injected``: removals
of documents that are neither injected nor copied (near-duplicates already in the sources).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from refine.dedup import (
    FINEWEB,
    REFINEDWEB,
    MinHashConfig,
    MinHasher,
    normalize_text,
    word_shingles,
)

PRESETS = {"refinedweb": REFINEDWEB, "fineweb": FINEWEB}
REFINEDWEB_AFFINE32 = REFINEDWEB.model_copy(update={"scheme": "affine32"})  # datasketch 2's default
SKETCH_PRESETS = {  # the presets' layouts with fast similarity sketching (scheme "sketch")
    "fineweb_sketch": FINEWEB.model_copy(update={"scheme": "sketch", "shingle_hash": "poly64"}),
    "refinedweb_sketch": REFINEDWEB.model_copy(update={"scheme": "sketch",
                                                       "shingle_hash": "poly64"}),
}

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testkit: the tests' and benches' helpers
SHARED = ROOT.parent / "shared" / "data"


def run_texts(run: Path, limit: int) -> list[str]:
    import pyarrow.parquet as pq

    texts: list[str] = []
    for path in sorted((run / "data").glob("**/*.parquet")):
        texts += [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t]
        if len(texts) >= limit:
            break
    return texts[:limit]


def warc_texts(data: Path, limit: int) -> list[str]:
    from refine.extract import ExtractConfig, extract_text
    from refine.readers import plan_units, read_unit

    config = ExtractConfig()
    paths = sorted(data.glob("*.warc.gz"))
    texts: list[str] = []
    for unit in plan_units([(str(p), p.stat().st_size) for p in paths], 1 << 40):
        for record in read_unit(unit, 1 << 26):
            text = extract_text(record.html, config) if record.html else ""
            if text:
                texts.append(text)
                if len(texts) >= limit:
                    return texts
    return texts


def best_rates(count: int, fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):  # alternate, so both see the same load from the other processes
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    return {name: count / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    signatures = parser.add_argument_group("signature rates (vs datasketch)")
    signatures.add_argument("--skip-signatures", action="store_true", help="skip this part")
    signatures.add_argument("--run", type=Path, help="a refine run directory (uses RUN/data)")
    signatures.add_argument("--data", type=Path, default=SHARED / "warc" / "real-html")
    signatures.add_argument("--texts", type=int, default=300, help="texts for the 14x8 preset")
    signatures.add_argument("--texts-large", type=int, default=40, help="texts for 450x20")
    signatures.add_argument("--repeat", type=int, default=3)
    scaling = parser.add_argument_group("scaling of the whole dedup (stages 8-10)")
    scaling.add_argument("--skip-scaling", action="store_true", help="skip this part")
    scaling.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4],
                         help="corpus sizes, in multiples of --base-docs (default: 1 2 4)")
    scaling.add_argument("--base-docs", type=int, default=700,
                         help="original documents at scale 1, before injected copies (default "
                              "700; about 3,000 distinct texts are available)")
    scaling.add_argument("--presets", nargs="+", choices=list(PRESETS),
                         default=["refinedweb", "fineweb"], help="fuzzy dedup presets")
    scaling.add_argument("--shards-per-scale", type=int, default=2,
                         help="scale k is written as k times this many filtered shards of "
                              "equal document counts (default 2: one per worker at 1x)")
    scaling.add_argument("--shard-mb", type=float, default=0.0,
                         help="instead, shards of about this much text (MB)")
    scaling.add_argument("--workers", type=int, default=2, help="concurrent Ray tasks")
    scaling.add_argument("--scaling-repeat", type=int, default=3,
                         help="runs per (preset, scale), scales taking turns; the fastest "
                              "is reported (default 3)")
    scaling.add_argument("--sample-ms", type=float, default=50.0, help="RSS sampling period")
    args = parser.parse_args()

    if not args.skip_signatures:
        limit = max(args.texts, args.texts_large)
        texts = run_texts(args.run, limit) if args.run else warc_texts(args.data, limit)
        source = str(args.run or args.data)
        print(json.dumps(kernel_compile_times()), flush=True)
        for name, config, count in (
            ("fineweb", FINEWEB, args.texts),
            ("refinedweb", REFINEDWEB, args.texts_large),
            ("refinedweb_affine32", REFINEDWEB_AFFINE32, args.texts_large),
        ):
            print(json.dumps(measure(name, config, texts[:count], args.repeat, source)),
                  flush=True)
        for name, config in SKETCH_PRESETS.items():
            count = args.texts if config.num_perm < 1000 else args.texts_large
            print(json.dumps(measure_sketch(name, config, texts[:count], args.repeat, source)),
                  flush=True)
    if not args.skip_scaling:
        scaling_bench(args)


def measure(name: str, config: MinHashConfig, texts: list[str], repeat: int, source: str) -> dict:
    """One preset: signatures from hashes, from shingles and from text, refine vs datasketch
    (all in this process, runs alternating), and refine's text path step by step."""
    import numpy as np
    from datasketch import MinHash

    from refine.dedup.hashing import texts_shingle_sha1_hash32
    from refine.dedup.minhash import band_key_array

    def shingle(text: str) -> list[bytes]:
        return [s.encode() for s in word_shingles(text, config.ngram)]

    docs = [shingle(t) for t in texts]
    exact, fast = MinHasher(config), MinHasher(config.model_copy(update={"shingle_hash": "poly64"}))
    kwargs: dict = {"num_perm": config.num_perm, "seed": config.seed}
    if "scheme" in inspect.signature(MinHash).parameters:  # datasketch >= 2.0 (legacy before)
        kwargs["scheme"] = config.scheme
    elif config.scheme != "legacy":
        raise SystemExit(f"datasketch {MinHash.__module__} has no scheme {config.scheme!r}")
    # The signature step alone: each document's distinct SHA-1 shingle hashes in (datasketch
    # pre-mixes them itself for affine32: its hashfunc is the identity here).
    normalized = [normalize_text(t) for t in texts]
    raw = [np.unique(h) for h in texts_shingle_sha1_hash32(normalized, config.ngram)]
    premixed = [exact._premix(h) for h in raw]
    raw_lists = [h.tolist() for h in raw]
    ours = exact.hash_signatures(premixed)
    equal = {
        "from_hashes": _equal(ours, MinHash.bulk(raw_lists, hashfunc=int, **kwargs)),
        "from_shingles": _equal(exact.signatures(docs), MinHash.bulk(docs, **kwargs)),
        "from_text": _equal(exact.text_signatures(texts), MinHash.bulk(docs, **kwargs)),
    }
    rates = best_rates(
        len(docs),
        {
            "refine_from_hashes": lambda: exact.hash_signatures(premixed),
            "datasketch_from_hashes": lambda: MinHash.bulk(raw_lists, hashfunc=int, **kwargs),
            "refine": lambda: exact.signatures(docs),
            "datasketch": lambda: MinHash.bulk(docs, **kwargs),
            "refine_poly64": lambda: fast.signatures(docs),
            "refine_from_text": lambda: exact.text_signatures(texts),
            "datasketch_from_text": lambda: MinHash.bulk([shingle(t) for t in texts], **kwargs),
            "refine_poly64_from_text": lambda: fast.text_signatures(texts),
        },
        repeat,
    )
    hashes = texts_shingle_sha1_hash32(normalized, config.ngram)
    batch = exact._batch(hashes)
    steps = best_rates(  # refine's text_signatures, step by step, + the fuzzy stage's band keys
        len(docs),
        {
            "normalize_text": lambda: [normalize_text(t) for t in texts],
            "shingle_sha1": lambda: texts_shingle_sha1_hash32(normalized, config.ngram),
            "distinct_premix": lambda: exact._batch(hashes),
            "signature_kernel": lambda: exact.hash_signatures(batch),
            "band_keys": lambda: band_key_array(ours, config),
        },
        repeat,
    )
    ms = {k: 1000 / v for k, v in steps.items()}
    line = line_head(name, config, docs, raw)
    line.update({f"{k}_docs_per_s_per_core": round(v, 1) for k, v in rates.items()})
    for ours_key, theirs_key in (
        ("refine_from_hashes", "datasketch_from_hashes"),
        ("refine", "datasketch"),
        ("refine_poly64", "datasketch"),
        ("refine_from_text", "datasketch_from_text"),
        ("refine_poly64_from_text", "datasketch_from_text"),
    ):
        line["ratio" + ours_key.removeprefix("refine")] = round(
            rates[ours_key] / rates[theirs_key], 2
        )
    line["signatures_equal_datasketch"] = equal
    line["text_path_ms_per_doc"] = {k: round(v, 3) for k, v in ms.items()}
    line["text_path_share"] = {k: round(v / sum(ms.values()), 3) for k, v in ms.items()}
    line["timer"] = f"process_time, best of {repeat}, runs alternating"
    line["loadavg_1m"] = round(os.getloadavg()[0], 2)
    line["source"] = source
    return line


def measure_sketch(
    name: str, config: MinHashConfig, texts: list[str], repeat: int, source: str
) -> dict:
    """A sketch preset beside datasketch (legacy and affine32) and rensa (RMinHash, CMinHash) at
    the same num_perm, all in this process, runs alternating: the signature step from each
    document's distinct shingle hashes (theirs: from shingle strings, which they hash
    themselves), and the whole fuzzy stage per document from raw text as `refine.dedup.fuzzy`
    runs it (normalise, shingle + hash, sign, band keys)."""
    import numpy as np
    import rensa
    from datasketch import MinHash

    from refine.dedup.minhash import band_key_array

    def shingle(text: str) -> list[bytes]:
        return [s.encode() for s in word_shingles(text, config.ngram)]

    ours = MinHasher(config)
    docs = [shingle(t) for t in texts]
    strings = [[s.decode() for s in set(d)] for d in docs]
    hashes = [np.unique(h) for h in ours.texts_hashes(texts)]
    sha1 = MinHasher(config.model_copy(update={"shingle_hash": "sha1"}))

    def datasketch(scheme: str) -> Callable[[], object]:
        kwargs: dict = {"num_perm": config.num_perm, "seed": config.seed}
        if "scheme" in inspect.signature(MinHash).parameters:
            kwargs["scheme"] = scheme
        return lambda: MinHash.bulk(docs, **kwargs)

    def rensa_signatures(cls: Any) -> Callable[[], object]:
        def run() -> list:
            out = []
            for d in strings:
                m = cls(num_perm=config.num_perm, seed=config.seed)
                m.update(d)
                out.append(m.digest())
            return out
        return run

    def fuzzy_stage(hasher: MinHasher) -> Callable[[], object]:
        return lambda: band_key_array(
            hasher.hash_signatures([h for h in hasher.texts_hashes(texts) if len(h)]), config)

    rates = best_rates(
        len(docs),
        {
            "refine_from_hashes": lambda: ours.hash_signatures(hashes),
            "rensa_rminhash": rensa_signatures(rensa.RMinHash),
            "rensa_cminhash": rensa_signatures(rensa.CMinHash),
            "datasketch_legacy": datasketch("legacy"),
            "datasketch_affine32": datasketch("affine32"),
            "refine_fuzzy_stage_from_text": fuzzy_stage(ours),
            "refine_fuzzy_stage_from_text_sha1": fuzzy_stage(sha1),
        },
        repeat,
    )
    from importlib.metadata import version

    line = line_head(name, config, docs, hashes) | {"shingle_hash": config.shingle_hash,
                                                    "rensa": version("rensa")}
    line.update({f"{k}_docs_per_s_per_core": round(v, 1) for k, v in rates.items()})
    line["timer"] = f"process_time, best of {repeat}, runs alternating"
    line["loadavg_1m"] = round(os.getloadavg()[0], 2)
    line["source"] = source
    return line


def line_head(name: str, config: MinHashConfig, docs: list, distinct: list) -> dict:
    """The fields that open a signature line: the preset and the documents' shingle counts."""
    return {
        "bench": "dedup_minhash_signatures",
        "preset": name,
        "bands_x_rows": f"{config.num_bands}x{config.rows_per_band}",
        "num_perm": config.num_perm,
        "scheme": config.scheme,
        "docs": len(docs),
        "mean_shingles": round(sum(map(len, docs)) / max(1, len(docs)), 1),
        "mean_distinct_shingles": round(sum(map(len, distinct)) / max(1, len(distinct)), 1),
    }


def _equal(ours: Any, theirs: list) -> bool:
    return len(ours) == len(theirs) and all(
        (o == t.hashvalues).all() for o, t in zip(ours, theirs, strict=True)
    )


def kernel_compile_times() -> dict:
    """First calls of the signature kernels in fresh processes: numba compiling them (an empty
    cache), then loading them from that cache (what each later Ray worker pays)."""
    import subprocess
    import sys
    import tempfile

    code = (
        "import json, time\n"
        "import numpy as np\n"
        "t = time.perf_counter()\n"
        "from refine.dedup import FINEWEB, MinHasher, kernels\n"
        "times = {'import_s': time.perf_counter() - t}\n"
        "for scheme in ('legacy', 'affine32'):\n"
        "    hasher = MinHasher(FINEWEB.model_copy(update={'scheme': scheme}))\n"
        "    t = time.perf_counter()\n"
        "    hasher.hash_signatures([np.arange(5, dtype=np.uint32)])\n"
        "    times[f'first_call_{scheme}_s'] = time.perf_counter() - t\n"
        "print(json.dumps(times))\n"
    )
    line: dict = {"bench": "dedup_minhash_kernel_compile"}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for run in ("cold_cache", "warm_cache"):
            done = subprocess.run([sys.executable, "-c", code], env=env, check=True, text=True,
                                  capture_output=True)  # fmt: skip
            line[run] = {k: round(v, 3) for k, v in json.loads(done.stdout).items()}
    line["note"] = "legacy first: its first call also pays numba's own start (~1 s)"
    line["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return line


INJECT_RATES = {"near": 0.06, "exact": 0.02, "same_url": 0.01, "quoting": 0.01}
WARMUP_DOCS = 120


class RssSampler(threading.Thread):
    """Every `period_s`, the RSS of this process and all its descendants (Ray's raylet, GCS,
    agents and workers); keeps the peak sum and each process's peak."""

    def __init__(self, period_s: float) -> None:
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.period_s = period_s
        self.done = threading.Event()
        self.me = psutil.Process()
        self.kinds: dict[int, str] = {}
        self.peak_by_pid: dict[int, int] = {}
        self.cpu_first: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.peak_total = self.peak_driver_workers = self.samples = 0
        self.baseline_total = self.baseline_driver_workers = 0

    def kind(self, proc: Any) -> str:
        if proc.pid not in self.kinds:
            try:
                cmd = proc.cmdline()
            except self.psutil.Error:
                cmd = []
            joined = " ".join(cmd)
            if proc.pid == self.me.pid:
                kind = "driver"
            elif joined.startswith("ray::") and "Agent" in joined:  # DashboardAgent, ...
                kind = joined[5:].split()[0]
            elif joined.startswith("ray::") or (
                    "default_worker.py" in joined and "raylet" not in cmd[0]):
                kind = "worker"
            else:
                script = next((a for a in cmd if a.endswith(".py")), cmd[0] if cmd else "?")
                kind = Path(script).name
            self.kinds[proc.pid] = kind
        return self.kinds[proc.pid]

    def sample(self) -> tuple[int, int]:
        total = driver_workers = 0
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                rss = proc.memory_info().rss
                times = proc.cpu_times()
            except self.psutil.Error:
                continue
            self.cpu_first.setdefault(proc.pid, times.user + times.system)
            self.cpu_last[proc.pid] = times.user + times.system
            total += rss
            if self.kind(proc) in ("driver", "worker"):
                driver_workers += rss
            self.peak_by_pid[proc.pid] = max(self.peak_by_pid.get(proc.pid, 0), rss)
        self.peak_total = max(self.peak_total, total)
        self.peak_driver_workers = max(self.peak_driver_workers, driver_workers)
        self.samples += 1
        return total, driver_workers

    def run(self) -> None:
        self.baseline_total, self.baseline_driver_workers = self.sample()
        while not self.done.wait(self.period_s):
            self.sample()

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.join()
        self.sample()
        mb = 1 << 20
        by_kind: dict[str, list[int]] = {}
        for pid, peak in self.peak_by_pid.items():
            by_kind.setdefault(self.kinds[pid], []).append(peak)
        workers = by_kind.get("worker", [0])
        cpu = {pid: self.cpu_last[pid] - self.cpu_first[pid] for pid in self.cpu_first}
        return {
            "cpu_s_driver_workers": round(sum(
                t for pid, t in cpu.items() if self.kinds[pid] in ("driver", "worker")), 2),
            "cpu_s_ray_services": round(sum(
                t for pid, t in cpu.items() if self.kinds[pid] not in ("driver", "worker")), 2),
            "peak_rss_total_mb": round(self.peak_total / mb, 1),
            "peak_rss_driver_workers_mb": round(self.peak_driver_workers / mb, 1),
            "baseline_rss_total_mb": round(self.baseline_total / mb, 1),
            "baseline_rss_driver_workers_mb": round(self.baseline_driver_workers / mb, 1),
            "peak_rss_driver_mb": round(max(by_kind.get("driver", [0])) / mb, 1),
            "peak_rss_max_worker_mb": round(max(workers) / mb, 1),
            "worker_processes": len(by_kind.get("worker", [])),
            "peak_rss_other_mb": {k: round(max(v) / mb, 1) for k, v in sorted(by_kind.items())
                                  if k not in ("driver", "worker")},
            "rss_samples": self.samples,
        }


class TimedMap:
    """`refine.dag.map_tasks` with `workers`, timing each call by the task function's name.

    Called as ``(fn, arguments)`` or, by newer `run_dedup`, ``(step_label, fn, arguments)``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.steps: dict[str, dict[str, Any]] = {}

    def __call__(self, *call: Any) -> list[Any]:
        from refine.dag import map_tasks

        fn, arguments = call[-2:]

        start = time.monotonic()
        results = map_tasks(fn, arguments, self.workers)
        step = self.steps.setdefault(fn.__name__, {"tasks": 0, "wall_s": 0.0})
        step["tasks"] += len(arguments)
        step["wall_s"] += time.monotonic() - start
        return results


def read_column_rows(directory: Path, pattern: str, columns: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for path in sorted(directory.glob(pattern))
            for row in pq.read_table(path, columns=columns).to_pylist()]


def evaluate(run_dir: Path, injected: Any) -> dict[str, Any]:
    """How many injected copies dedup caught, and what else it removed."""
    kept = {r["id"] for r in read_column_rows(run_dir / "data", "*.parquet", ["id"])}
    rejected = {r["id"]: r for r in read_column_rows(
        run_dir / "rejected", "dedup-*.parquet", ["id", "stage", "duplicate_of"])}
    spans = read_column_rows(run_dir / "spans", "*.parquet", ["id", "duplicate_of"])
    caught = {kind: sum(not (copy in kept and original in kept)
                        for copy, original in getattr(injected, kind).items())
              for kind in ("near", "exact", "same_url")}
    fuzzy = {i: r["duplicate_of"] for i, r in rejected.items() if r["stage"] == "fuzzy_dedup"}
    links = {(s["id"], s["duplicate_of"]) for s in spans} | {
        (i, r["duplicate_of"]) for i, r in rejected.items() if r["stage"] == "exact_dedup"}
    caught["quoting"] = 0
    for quoting, quoted in injected.quoting.items():
        holder = fuzzy.get(quoted, quoted)
        caught["quoting"] += (quoting, holder) in links or (holder, quoting) in links
    involved = {doc_id.rsplit("-quote", 1)[0] for doc_id in injected.quoting}  # quote hosts:
    for kind in ("near", "exact", "same_url", "quoting"):  # a quoting document is their near
        for copy, original in getattr(injected, kind).items():  # duplicate, longer
            involved |= {copy, original}
    other = Counter(r["stage"] for i, r in rejected.items() if i not in involved)
    copies = len(injected.near) + len(injected.exact)
    return {
        "caught": caught,
        "recall_near_exact": round((caught["near"] + caught["exact"]) / max(1, copies), 4),
        "removed_not_injected": dict(sorted(other.items())),
        "kept": len(kept),
    }


def build_corpora(scales: list[int], base_docs: int, shards_per_scale: int, shard_chars: int,
                  root: Path) -> dict:
    from dedup_corpus import load_originals, write_filtered

    from testkit.synthetic import inject_duplicates

    available = load_originals()
    random.Random(0).shuffle(available)  # every scale: the same mix of sources
    need = max(scales) * base_docs
    if need > len(available):
        raise SystemExit(f"{need} originals needed, {len(available)} available: lower "
                         "--base-docs or the largest --scale")
    corpora = {}
    for scale in [0, *scales]:  # 0: the warm-up corpus
        originals = available[: scale * base_docs] if scale else available[-WARMUP_DOCS:]
        counts = {k: round(rate * len(originals)) for k, rate in INJECT_RATES.items()}
        injected = inject_duplicates(originals, seed=1, **counts)
        run_dir = root / f"scale-{scale}"
        shards = write_filtered(injected.docs, run_dir, shards_per_scale * max(1, scale),
                                shard_chars)
        corpora[scale] = {
            "scale": scale, "run_dir": run_dir, "injected": injected, "originals": len(originals),
            "docs": len(injected.docs), "shards": shards, "injected_counts": counts,
            "text_mb": round(sum(len(d["text"]) for d in injected.docs) / 1e6, 2),
        }
    return corpora


def dedup_once(run_dir: Path, config: Any, workers: int, sample_ms: float) -> dict[str, Any]:
    from refine.dedup.stage import run_dedup

    mapper = TimedMap(workers)
    sampler = RssSampler(sample_ms / 1000)
    load_before = os.getloadavg()[0]
    sampler.start()
    start, cpu = time.monotonic(), time.process_time()
    summary = run_dedup(run_dir, config, 2000, "zstd", mapper)
    wall, cpu = time.monotonic() - start, time.process_time() - cpu
    memory = sampler.stop()
    steps = {name: {"tasks": s["tasks"], "wall_s": round(s["wall_s"], 3)}
             for name, s in mapper.steps.items()}
    return {"wall_s": round(wall, 3), "summary": summary, "steps": steps,
            "driver_other_s": round(wall - sum(s["wall_s"] for s in mapper.steps.values()), 3),
            "driver_cpu_s": round(cpu, 3), "memory": memory,
            "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def scaling_bench(args: argparse.Namespace) -> None:
    import tempfile

    from refine.dag import init_ray
    from refine.dedup.config import DedupConfig, FuzzyDedupConfig

    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        started = time.monotonic()
        corpora = build_corpora(args.scales, args.base_docs, args.shards_per_scale,
                                int(args.shard_mb * 1e6), Path(tmp))
        corpus_s = time.monotonic() - started
        started = time.monotonic()
        init_ray(None, num_cpus=2)
        print(json.dumps({"bench": "dedup_scaling_setup", "ray_start_s":
                          round(time.monotonic() - started, 2), "corpus_build_s":
                          round(corpus_s, 2), "loadavg_1m": round(os.getloadavg()[0], 2)}),
              flush=True)
        for preset in args.presets:
            minhash = PRESETS[preset]
            config = DedupConfig(fuzzy=FuzzyDedupConfig(**minhash.model_dump()))
            warm = dedup_once(corpora[0]["run_dir"], config, args.workers, args.sample_ms)
            runs: dict[int, list[dict]] = {scale: [] for scale in args.scales}
            for _ in range(args.scaling_repeat):  # scales take turns: load drift hits all
                for scale in args.scales:
                    runs[scale].append(dedup_once(corpora[scale]["run_dir"], config,
                                                  args.workers, args.sample_ms))
            lines = {scale: scaling_line(preset, minhash, corpora[scale], runs[scale], warm,
                                         args.workers) for scale in args.scales}
            for line in lines.values():
                print(json.dumps(line), flush=True)
            print(json.dumps(scaling_summary(preset, lines)), flush=True)


def scaling_line(preset: str, minhash: MinHashConfig, corpus: dict, runs: list[dict],
                 warm: dict, workers: int) -> dict[str, Any]:
    best = min(runs, key=lambda r: r["wall_s"])
    memory = runs[0]["memory"]  # the first round, scales ascending: no larger run before it
    summary = best["summary"]
    stages = summary["stages"]
    docs = corpus["docs"]
    cpu = best["memory"]["cpu_s_driver_workers"]
    return {
        "bench": "dedup_scaling", "preset": preset,
        "bands_x_rows": f"{minhash.num_bands}x{minhash.rows_per_band}",
        "scale": corpus["scale"], "originals": corpus["originals"], "docs": docs,
        "text_mb": corpus["text_mb"], "shards": corpus["shards"],
        "injected": corpus["injected_counts"],
        **evaluate(corpus["run_dir"], corpus["injected"]),  # the last run's outputs
        "removed": {name: sum(s["rejected"].values()) for name, s in stages.items()},
        "documents_out": summary["documents_out"],
        "spans_cut": stages.get("exact_dedup", {}).get("spans_cut"),
        "candidate_pairs": stages.get("fuzzy_dedup", {}).get("candidate_pairs"),
        "wall_s": best["wall_s"],
        "wall_s_per_1k_docs": round(best["wall_s"] * 1000 / docs, 3),
        "walls_s": [r["wall_s"] for r in runs],
        "cpu_s_per_1k_docs": round(cpu * 1000 / docs, 3),
        "steps_wall_s": best["steps"], "driver_other_s": best["driver_other_s"],
        "driver_cpu_s": best["driver_cpu_s"],
        "stage_cpu_s": {name: s["cpu_s"] for name, s in stages.items()},
        "cpu_s_driver_workers": cpu,
        "cpu_s_ray_services": best["memory"]["cpu_s_ray_services"],
        **{k: v for k, v in memory.items() if not k.startswith("cpu_s")},
        "memory_from": "first run of this scale (scales ascending)",
        "peak_rss_total_mb_all_runs": [r["memory"]["peak_rss_total_mb"] for r in runs],
        "loadavg_1m": best["loadavg_1m"],
        "loadavg_1m_all_runs": [r["loadavg_1m"] for r in runs],
        "warmup_wall_s": warm["wall_s"], "workers": workers,
    }


def scaling_summary(preset: str, lines: dict[int, dict]) -> dict[str, Any]:
    """Growth from the smallest scale: wall time (linear_ok), CPU time of driver + workers
    (cpu_linear_ok, less sensitive to other load on the machine), and per step."""
    first = min(lines)
    walls = {k: line["wall_s"] for k, line in lines.items()}
    cpus = {k: line["cpu_s_driver_workers"] for k, line in lines.items()}
    result: dict[str, Any] = {"bench": "dedup_scaling_summary", "preset": preset,
                              "docs": {str(k): line["docs"] for k, line in lines.items()},
                              "wall_s": {str(k): v for k, v in walls.items()},
                              "cpu_s_driver_workers": {str(k): v for k, v in cpus.items()}}
    for scale, line in lines.items():
        if scale == first:
            continue
        tag = f"{scale}x_{first}x"
        result[f"wall_ratio_{tag}"] = round(walls[scale] / walls[first], 3)
        result[f"cpu_ratio_{tag}"] = round(cpus[scale] / max(cpus[first], 1e-9), 3)
        steps = {}
        for name, step in line["steps_wall_s"].items():
            base = lines[first]["steps_wall_s"].get(name, {}).get("wall_s")
            if base:
                steps[name] = round(step["wall_s"] / base, 2)
        if lines[first]["driver_other_s"] > 0:
            steps["driver_other"] = round(line["driver_other_s"] / lines[first]["driver_other_s"],
                                          2)
        for name, cpu in line["stage_cpu_s"].items():
            base = lines[first]["stage_cpu_s"].get(name)
            if base:
                steps[f"{name}_cpu"] = round(cpu / base, 2)
        result[f"step_ratio_{tag}"] = steps
    result["linear_ok"] = all(walls[k] <= k / first * walls[first] * 1.1 for k in walls)
    result["cpu_linear_ok"] = all(cpus[k] <= k / first * cpus[first] * 1.1 for k in cpus)
    result["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return result


if __name__ == "__main__":
    main()
