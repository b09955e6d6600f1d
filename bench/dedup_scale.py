"""Dedup at scale (issue 16, acceptance point 3): stages 8-10 on 1M and 4M generated documents.

Filtered shards (``RUN/filtered/*.parquet``, `refine.shards.KEPT_SCHEMA`) are generated
directly, no extraction: every document is --docs-words words (about) of real text recombined,
short runs of 6-16 consecutive words cut at random places from the texts of
`bench/dedup_corpus.py` (the CC-MAIN text sample, Wikipedia sections, Lee news) and glued
together, so documents read like web text yet share no 5-gram run long enough to be duplicates
(a run of 16 words is far below exact dedup's 50 tokens, and two documents share a few 5-grams
at most). Generation is vectorised: each shard's texts are gathered from the corpus bytes with
numpy and become an Arrow string array without Python strings. Into that corpus go:

* near-duplicate clusters of known sizes (--cluster-sizes, default 2..5 members): a base
  document of --cluster-words words and copies of it with --edit-fraction of their words
  replaced (`testkit.synthetic.edit_words`). The defaults (320 words, 1 edit) give a copy
  Jaccard ~0.97 with its base, ~0.94 with another copy, where the S-curve of 14x8 is 1 - 1e-9
  (~1 - 1e-5): a miss is a bug, not bad luck. (2% edits of an 80-word document, Jaccard ~0.78,
  would be found only with probability ~0.87 by 14x8.)
* repeated passages: --passage-words words (a fresh recombination, unique), each inserted into
  2..4 host documents in different shards (and so, by their hashes, windows in different
  partitions).

Members of a cluster and hosts of a passage are placed in distinct shards where there are
enough. Generation and evaluation run in child processes (spawned): the driver's RSS is that of
dedup alone. Dedup (`refine.dedup.stage.run_dedup`) runs on a local Ray with 2 CPUs and
`map_tasks` with 2 workers, started once, after one untimed warm-up run on a small corpus
(workers import refine, compile the kernels); sizes ascending, one run each, then (--bracket,
the default) the smallest size again: the ratios divide by the mean of its two runs. A thread
samples every --sample-ms the RSS of the driver and its descendants (`bench/dedup.py`'s
`RssSampler`), and here also, per map step, the largest RSS of a Ray worker while that step ran,
and its growth over the worker's RSS at the start of the run (a worker is reused: its RSS
includes the interpreter and imports, ~the baseline, and whatever the allocator kept from
earlier tasks).

Config: --preset fineweb (14x8 MinHash, the default) or refinedweb (450x20), with exact-substring
and URL dedup enabled either way (configs/fineweb.yaml disables exact: here all three stages
run). --task-mb sets ``exact.task_bytes`` (default 256), --bucket-mb ``fuzzy.bucket_bytes`` and
--url-mb ``urls.task_bytes`` (both default to --task-mb).

Truth and measures: a cluster of n documents is caught when exactly one of them is kept
(recall_clusters: removed cluster members, at most n - 1 per cluster, over the sum of n - 1);
a passage in k hosts is caught when exactly one kept document still contains it
(recall_passages: occurrences gone, at most k - 1, over the sum of k - 1). precision_clusters:
of the documents removed by fuzzy dedup, the fraction in injected clusters (the rest are
listed: passage hosts, whose shared passage makes them ~0.3 Jaccard, or other);
precision_passages: of the spans cut, the fraction overlapping an injected passage (spans cut in
cluster members that fuzzy dedup missed are listed apart). Over-removal is counted too:
clusters with no member kept, passages with no occurrence kept.

Output: one JSON line per size (``"bench": "dedup_scale"``), then a summary line
(``"dedup_scale_summary"``) with the largest / smallest ratios and the targets: driver peak RSS
at most 1.1x, wall time at most 1.1x the size ratio (4.4 for 4M/1M), recall 1.0 on clusters and
passages, and each bounded step's (band buckets, URL ranges, repeated windows) worker RSS growth
within its configured bytes.

    .venv/bin/python bench/dedup_scale.py --sizes 20000,80000 --shard-docs 5000
    .venv/bin/python bench/dedup_scale.py --sizes 1000000,4000000 --cache /tmp/dedup-scale
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup import PRESETS, RssSampler  # noqa: E402  (bench/dedup.py)

MB = 1 << 20
CHUNK_WORDS = (6, 16)  # length range of the runs of real text a document is glued from
WARMUP_SIZE = 4000
GENERATOR = 2  # part of the cache key: bump when generation changes
PLAIN_BYTES = 16
PLAIN_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
BOUNDED_STEPS = {"dedup: band buckets": "bucket_bytes", "dedup: URL ranges": "url_task_bytes",
                 "dedup: repeated windows": "exact_task_bytes"}


# ---------------------------------------------------------------- corpus and generation

def corpus_bytes(cache: Path) -> bytes:
    """The real texts of `bench/dedup_corpus.py`, one UTF-8 blob (cached under `cache`)."""
    path = cache / "corpus.txt"
    if not path.exists():
        from dedup_corpus import load_originals

        blob = "\n\n".join(d["text"] for d in load_originals()).encode("utf-8")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
    return path.read_bytes()


class Words:
    """Word starts in the corpus bytes: chunk [w, w + n) is bytes[start[w]:start[w + n]], the
    words and the whitespace after them (spaces, newlines: the source's own)."""

    def __init__(self, blob: bytes) -> None:
        self.data = np.frombuffer(blob, dtype=np.uint8)
        space = np.isin(self.data, np.frombuffer(b" \n\t\r\f\v", dtype=np.uint8))
        begins = ~space & np.concatenate(([True], space[:-1]))
        self.start = np.concatenate((np.flatnonzero(begins), [len(self.data)])).astype(np.int64)
        self.count = len(self.start) - 1  # words; start[count] is the end of the text
        # chunks start only where the next CHUNK_WORDS[1] words are plain: at most PLAIN_BYTES
        # ASCII letters, digits and punctuation with at most 2 punctuation marks (so at most 3
        # tokens). Code, stack traces, formulas and scripts without spaces between words would
        # make a 16-word chunk 50 tokens long, a repeat exact dedup rightly cuts.
        plain_byte = (self.data >= 0x21) & (self.data < 0x7F)
        punct = plain_byte & ~np.isin(self.data, np.frombuffer(PLAIN_CHARS, dtype=np.uint8))
        text_bytes = np.add.reduceat((~space).astype(np.int64), self.start[:-1])
        bad = (np.add.reduceat((~plain_byte & ~space).astype(np.int64), self.start[:-1]) > 0)
        bad |= np.add.reduceat(punct.astype(np.int64), self.start[:-1]) > 2
        bad |= text_bytes > PLAIN_BYTES
        bad_before = np.concatenate(([0], np.cumsum(bad)))
        span = CHUNK_WORDS[1]
        ok = bad_before[span:self.count + 1] - bad_before[: self.count + 1 - span] == 0
        self.starts_ok = np.flatnonzero(ok)

    def chunks(self, rng: np.random.Generator, docs: int, per_doc: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`per_doc` random chunks for each of `docs` documents: byte starts, byte ends and the
        documents' word counts."""
        lengths = rng.integers(CHUNK_WORDS[0], CHUNK_WORDS[1] + 1, size=(docs, per_doc))
        first = self.starts_ok[rng.integers(0, len(self.starts_ok), size=(docs, per_doc))]
        return (self.start[first].ravel(), self.start[first + lengths].ravel(),
                lengths.sum(axis=1))

    def texts(self, rng: np.random.Generator, docs: int, per_doc: int) -> tuple[Any, np.ndarray]:
        """An Arrow string array of `docs` generated texts, and their word counts."""
        import pyarrow as pa

        lo, hi, words = self.chunks(rng, docs, per_doc)
        sizes = hi - lo
        total = int(sizes.sum())
        # gather: position k of the output reads corpus byte lo[chunk] + (k - chunk's offset)
        out_starts = np.cumsum(sizes) - sizes
        index = np.arange(total, dtype=np.int64) + np.repeat(lo - out_starts, sizes)
        buffer = self.data[index]
        doc_ends = np.cumsum(sizes.reshape(docs, per_doc).sum(axis=1))
        offsets = np.concatenate(([0], doc_ends)).astype(np.int64)
        array = pa.LargeStringArray.from_buffers(docs, pa.py_buffer(offsets),
                                                 pa.py_buffer(buffer))
        return array.cast(pa.string()), words

    def text(self, rng: np.random.Generator, words: int) -> str:
        """One text of exactly `words` words (chunks enough, the last cut short)."""
        array, _ = self.texts(rng, 1, -(-words // CHUNK_WORDS[0]))
        text = array[0].as_py()
        starts = [m.start() for m in re.finditer(r"\S+", text)]
        return text[: starts[words]].rstrip() if len(starts) > words else text.rstrip()


def spread(rng: random.Random, shards: int, size: int, taken: set[int],
           shard_docs: int, total: int) -> list[int]:
    """`size` free global rows, in distinct shards where there are enough shards."""
    chosen = rng.sample(range(shards), size) if shards >= size else [
        rng.randrange(shards) for _ in range(size)]
    rows = []
    for shard in chosen:
        while True:
            row = shard * shard_docs + rng.randrange(shard_docs)
            if row < total and row not in taken:
                break
        taken.add(row)
        rows.append(row)
    return rows


def doc_id(size: int, row: int) -> str:
    return f"s{size}-{row:08d}"


def generate(size: int, options: dict[str, Any], run_dir: Path, cache: Path) -> dict[str, Any]:
    """Writes `size` documents as ``run_dir/filtered`` shards and the truth as
    ``run_dir/truth.json``; returns generation statistics. Runs in a child process."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from refine.shards import KEPT_SCHEMA, METRICS
    from testkit.synthetic import edit_words

    started = time.monotonic()
    words = Words(corpus_bytes(cache))
    seed = options["seed"]
    nprng = np.random.default_rng([seed, size])
    rng = random.Random(seed * 1_000_003 + size)
    shard_docs = options["shard_docs"]
    shards = -(-size // shard_docs)
    per_doc = max(1, round(options["docs_words"] * 2 / sum(CHUNK_WORDS)))

    # the injected documents, by global row
    taken: set[int] = set()
    replace: dict[int, str] = {}
    clusters: list[list[str]] = []
    low, high = options["cluster_sizes"]
    for _ in range(round(size * options["cluster_rate"])):
        members = spread(rng, shards, rng.randint(low, high), taken, shard_docs, size)
        base = words.text(nprng, options["cluster_words"])
        replace[members[0]] = base
        for row in members[1:]:
            replace[row] = edit_words(base, options["edit_fraction"], rng)
        clusters.append([doc_id(size, row) for row in members])
    passages: list[dict[str, Any]] = []
    hosts: list[tuple[int, int]] = []  # (row, passage)
    low, high = options["passage_hosts"]
    for k in range(round(size * options["passage_rate"])):
        rows = spread(rng, shards, rng.randint(low, high), taken, shard_docs, size)
        text = words.text(nprng, options["passage_words"]).strip()
        passages.append({"text": text, "hosts": {doc_id(size, r): 0 for r in rows}})
        hosts += [(row, k) for row in rows]
    host_rows = {row: k for row, k in hosts}

    metrics_empty = None
    meta = {"clusters": len(clusters), "cluster_docs": sum(map(len, clusters)),
            "passages": len(passages), "passage_hosts": len(hosts)}
    text_bytes = 0
    out = run_dir / "filtered"
    out.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        lo, hi = shard * shard_docs, min(size, (shard + 1) * shard_docs)
        count = hi - lo
        texts, counts = words.texts(nprng, count, per_doc)
        own = sorted(r for r in replace if lo <= r < hi)
        own_hosts = sorted(r for r in host_rows if lo <= r < hi)
        if own_hosts:  # the passage goes in at a word boundary near the middle of the host
            originals = texts.take(pa.array([r - lo for r in own_hosts])).to_pylist()
            for row, host in zip(own_hosts, originals, strict=True):
                passage = passages[host_rows[row]]
                cut = host.find(" ", len(host) // 2)
                cut = len(host) if cut < 0 else cut
                text = f"{host[:cut]} {passage['text']} {host[cut:].lstrip(' ')}"
                passage["hosts"][doc_id(size, row)] = cut + 1  # char offset of the passage
                replace[row] = text
                own.append(row)
            own.sort()
        if own:
            mask = np.zeros(count, dtype=bool)
            mask[np.array(own) - lo] = True
            texts = pc.replace_with_mask(texts, pa.array(mask),
                                         pa.array([replace[r] for r in own], pa.string()))
            counts = counts.copy()
            counts[np.array(own) - lo] = [len(replace[r].split()) for r in own]
            for row in own:
                del replace[row]
        text_bytes += texts.nbytes
        rows = range(lo, hi)
        if metrics_empty is None or len(metrics_empty) != count:
            metrics_empty = pa.ListArray.from_arrays(
                pa.array(np.zeros(count + 1, dtype=np.int32)),
                pa.array([], METRICS.value_type)).cast(METRICS)
        table = pa.Table.from_arrays([
            pa.array([doc_id(size, r) for r in rows], pa.string()),
            pa.array([f"https://site{r % 9973}.example.org/{size}/page/{r}" for r in rows],
                     pa.string()),
            pa.repeat("2019-07-20T00:00:00Z", count).cast(pa.string()),
            texts,
            pa.repeat("en", count).cast(pa.string()),
            pa.repeat(0.99, count).cast(pa.float64()),
            pa.array(counts, pa.int64()),
            pa.repeat("bench-scale.jsonl", count).cast(pa.string()),
            pa.array(np.arange(lo, hi, dtype=np.int64)),
            metrics_empty,
        ], schema=KEPT_SCHEMA)
        pq.write_table(table, out / f"part-{shard:05d}.parquet", compression="zstd")
    truth = {"clusters": clusters, "passages": passages}
    (run_dir / "truth.json").write_text(json.dumps(truth))
    stats = {"docs": size, "shards": shards, "text_mb": round(text_bytes / 1e6, 1),
             "generate_s": round(time.monotonic() - started, 2), **meta}
    (run_dir / "generated.json").write_text(json.dumps(stats))
    return stats


def corpus_for(size: int, options: dict[str, Any], cache: Path) -> tuple[Path, dict]:
    """The run directory of `size` documents, generated (in a child process) unless cached with
    the same options."""
    key = json.dumps({"generator": GENERATOR, **options}, sort_keys=True)
    run_dir = cache / f"size-{size}-{_digest(key)}"
    done = run_dir / "generated.json"
    if done.exists():
        stats = json.loads(done.read_text())
        return run_dir, {**stats, "generate_s": 0.0, "cached": True}
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "options.json").write_text(key)
    stats = in_child(generate, size, options, run_dir, cache)
    return run_dir, {**stats, "cached": False}


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:10]


def in_child(fn: Any, *args: Any) -> Any:
    """`fn(*args)` in a fresh spawned process, so that the driver's heap stays that of dedup."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ---------------------------------------------------------------- evaluation

def evaluate(run_dir: Path) -> dict[str, Any]:
    """Recall and precision against ``truth.json``. Runs in a child process."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    truth = json.loads((run_dir / "truth.json").read_text())
    rejected = ds.dataset(sorted(str(p) for p in (run_dir / "rejected").glob("dedup-*.parquet")),
                          format="parquet").to_table(columns=["id", "stage", "reason"]) \
        if list((run_dir / "rejected").glob("dedup-*.parquet")) else None
    removed: dict[str, str] = {}
    if rejected is not None:
        removed = dict(zip(rejected.column("id").to_pylist(),
                           rejected.column("stage").to_pylist(), strict=True))
    cluster_of = {d: k for k, members in enumerate(truth["clusters"]) for d in members}
    host_of = {d: k for k, p in enumerate(truth["passages"]) for d in p["hosts"]}

    # clusters
    expected = sum(len(m) - 1 for m in truth["clusters"])
    caught = none_kept = 0
    for members in truth["clusters"]:
        gone = sum(d in removed for d in members)
        caught += min(gone, len(members) - 1)
        none_kept += gone == len(members)
    fuzzy = [d for d, stage in removed.items() if stage == "fuzzy_dedup"]
    fuzzy_in = sum(d in cluster_of for d in fuzzy)
    fuzzy_hosts = sum(d in host_of and d not in cluster_of for d in fuzzy)

    # passages: kept hosts that still hold their passage
    ids = list(host_of)
    data = ds.dataset(sorted(str(p) for p in (run_dir / "data").glob("*.parquet")),
                      format="parquet")
    kept_hosts = data.to_table(columns=["id", "text"],
                               filter=pc.field("id").isin(pa.array(ids, pa.string())))
    holding = [0] * len(truth["passages"])
    for doc, text in zip(kept_hosts.column("id").to_pylist(),
                         kept_hosts.column("text").to_pylist(), strict=True):
        k = host_of[doc]
        holding[k] += truth["passages"][k]["text"] in text
    p_expected = sum(len(p["hosts"]) - 1 for p in truth["passages"])
    p_caught = sum(min(len(p["hosts"]) - held, len(p["hosts"]) - 1)
                   for p, held in zip(truth["passages"], holding, strict=True))
    p_none = sum(held == 0 for held in holding)

    # spans cut: on an injected passage, in a cluster member, elsewhere
    span_files = sorted(str(p) for p in (run_dir / "spans").glob("*.parquet"))
    spans_total = spans_passage = spans_cluster = 0
    other_examples: list[str] = []
    if span_files:
        spans = ds.dataset(span_files, format="parquet").to_table(
            columns=["id", "start", "end", "text"]).to_pylist()
        spans_total = len(spans)
        for span in spans:
            k = host_of.get(span["id"])
            if k is not None:
                passage = truth["passages"][k]
                at = passage["hosts"][span["id"]]
                if span["start"] < at + len(passage["text"]) and span["end"] > at:
                    spans_passage += 1
                    continue
            if span["id"] in cluster_of:
                spans_cluster += 1
            elif len(other_examples) < 3:
                other_examples.append(span["text"][:160])
    stages: dict[str, int] = {}
    for stage in removed.values():
        stages[stage] = stages.get(stage, 0) + 1
    return {
        "recall_clusters": round(caught / max(1, expected), 6),
        "precision_clusters": round(fuzzy_in / max(1, len(fuzzy)), 6),
        "recall_passages": round(p_caught / max(1, p_expected), 6),
        "precision_passages": round(spans_passage / max(1, spans_total), 6),
        "clusters_caught": f"{caught}/{expected}", "clusters_none_kept": none_kept,
        "fuzzy_removed": len(fuzzy), "fuzzy_removed_passage_hosts": fuzzy_hosts,
        "fuzzy_removed_other": len(fuzzy) - fuzzy_in - fuzzy_hosts,
        "passages_caught": f"{p_caught}/{p_expected}", "passages_none_kept": p_none,
        "spans_cut": spans_total, "spans_on_passages": spans_passage,
        "spans_in_cluster_members": spans_cluster,
        "spans_other": spans_total - spans_passage - spans_cluster,
        "spans_other_examples": other_examples,
        "removed_by_stage": dict(sorted(stages.items())),
    }


# ---------------------------------------------------------------- measuring

class StepSampler(RssSampler):
    """`RssSampler`, plus each Ray worker's largest RSS while each map step ran and its RSS at
    the start (the first sample that saw it)."""

    def __init__(self, period_s: float) -> None:
        super().__init__(period_s)
        self.step = "driver"
        self.worker_first: dict[int, int] = {}
        self.step_peak: dict[str, tuple[int, int]] = {}  # step -> (peak RSS, growth)

    def sample(self) -> tuple[int, int]:
        step = self.step
        result = super().sample()
        for proc in self.me.children(recursive=True):
            if self.kinds.get(proc.pid) != "worker":
                continue
            try:
                rss = proc.memory_info().rss
            except self.psutil.Error:
                continue
            first = self.worker_first.setdefault(proc.pid, rss)
            peak, growth = self.step_peak.get(step, (0, 0))
            self.step_peak[step] = (max(peak, rss), max(growth, rss - first))
        return result


class StepMap:
    """`refine.dag.map_tasks` with `workers`; wall time per step label (rounds summed), and
    the step announced to the sampler."""

    def __init__(self, workers: int, sampler: StepSampler) -> None:
        self.workers, self.sampler = workers, sampler
        self.steps: dict[str, dict[str, Any]] = {}

    def __call__(self, label: str, fn: Any, arguments: list[tuple]) -> list[Any]:
        from refine.dag import map_tasks

        name = label.split(", round")[0]
        self.sampler.step = name
        start = time.monotonic()
        try:
            return map_tasks(fn, arguments, self.workers)
        finally:
            step = self.steps.setdefault(name, {"calls": 0, "tasks": 0, "wall_s": 0.0})
            step["calls"] += 1
            step["tasks"] += len(arguments)
            step["wall_s"] += time.monotonic() - start
            self.sampler.step = "driver"


def dedup_once(run_dir: Path, config: Any, workers: int, sample_ms: float) -> dict[str, Any]:
    from refine.dedup.stage import run_dedup

    sampler = StepSampler(sample_ms / 1000)
    mapper = StepMap(workers, sampler)
    driver_start = sampler.me.memory_info().rss
    sampler.start()
    start, cpu = time.monotonic(), time.process_time()
    summary = run_dedup(run_dir, config, 2000, "zstd", mapper)
    wall, cpu = time.monotonic() - start, time.process_time() - cpu
    memory = sampler.stop()
    return {"wall_s": round(wall, 2), "driver_cpu_s": round(cpu, 2), "summary": summary,
            "steps": mapper.steps, "step_peak": sampler.step_peak, "memory": memory,
            "driver_start_rss_mb": round(driver_start / MB, 1)}


def make_config(args: argparse.Namespace) -> Any:
    from refine.dedup.config import (
        DedupConfig,
        ExactDedupConfig,
        FuzzyDedupConfig,
        URLDedupConfig,
    )

    layout = PRESETS[args.preset].model_dump(exclude={"scheme", "shingle_hash"})
    if args.scheme:
        layout |= {"scheme": args.scheme,
                   "shingle_hash": "poly64" if args.scheme == "sketch" else "sha1"}
    return DedupConfig(
        fuzzy=FuzzyDedupConfig(**layout, bucket_bytes=round(args.bucket_mb * MB)),
        exact=ExactDedupConfig(task_bytes=round(args.task_mb * MB)),
        urls=URLDedupConfig(task_bytes=round(args.url_mb * MB)))


def size_line(args: argparse.Namespace, config: Any, size: int, corpus: dict, run: dict,
              quality: dict) -> dict[str, Any]:
    memory = run["memory"]
    stages = run["summary"]["stages"]
    bounds = {"bucket_bytes": config.fuzzy.bucket_bytes,
              "url_task_bytes": config.urls.task_bytes,
              "exact_task_bytes": config.exact.task_bytes}
    step_rss = {}
    for name, (peak, growth) in sorted(run["step_peak"].items()):
        entry = {"peak_mb": round(peak / MB, 1), "growth_mb": round(growth / MB, 1)}
        if name in BOUNDED_STEPS:
            bound = bounds[BOUNDED_STEPS[name]]
            entry.update(bound_mb=round(bound / MB, 1), within_bound=growth <= bound)
        step_rss[name] = entry
    steps_wall = {name: round(s["wall_s"], 2) for name, s in run["steps"].items()}
    return {
        "bench": "dedup_scale", "size": size, "preset": args.preset,
        "bands_x_rows": stages.get("fuzzy_dedup", {}).get("preset"),
        "scheme": config.fuzzy.scheme, "shingle_hash": config.fuzzy.shingle_hash,
        "shards": corpus["shards"], "shard_docs": args.shard_docs,
        "text_mb": corpus["text_mb"], "generate_s": corpus["generate_s"],
        "wall_s": run["wall_s"], "driver_cpu_s": run["driver_cpu_s"],
        "driver_peak_rss_mb": memory["peak_rss_driver_mb"],
        "driver_start_rss_mb": run["driver_start_rss_mb"],
        "largest_task_peak_rss_mb": memory["peak_rss_max_worker_mb"],
        "largest_task_rss_growth_mb": max(
            (v["growth_mb"] for k, v in step_rss.items() if k != "driver"), default=0.0),
        "task_bytes_mb": args.task_mb, "bucket_mb": args.bucket_mb, "url_task_mb": args.url_mb,
        "tasks_within_bounds": all(v.get("within_bound", True) for v in step_rss.values()),
        "steps_wall_s": steps_wall,
        "driver_other_s": round(run["wall_s"] - sum(steps_wall.values()), 2),
        "steps_tasks": {name: s["tasks"] for name, s in run["steps"].items()},
        "worker_rss_by_step": step_rss,
        **{k: v for k, v in quality.items()},
        "injected": {k: corpus[k] for k in ("clusters", "cluster_docs", "passages",
                                            "passage_hosts")},
        "partitions": {"fuzzy_buckets": stages.get("fuzzy_dedup", {}).get("buckets"),
                       "components_rounds": stages.get("fuzzy_dedup", {}).get("rounds"),
                       "url_ranges": stages.get("url_dedup", {}).get("ranges"),
                       "window_partitions": stages.get("exact_dedup", {}).get("partitions")},
        "documents_out": run["summary"]["documents_out"],
        "peak_rss_total_mb": memory["peak_rss_total_mb"],
        "peak_rss_other_mb": memory["peak_rss_other_mb"],
        "worker_processes": memory["worker_processes"],
        "cpu_s_driver_workers": memory["cpu_s_driver_workers"],
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def summary_line(lines: dict[int, dict], rerun: dict | None = None) -> dict[str, Any]:
    """`rerun`: the smallest size run again after the largest; its walls (whole and per step)
    are then the mean of both runs, so a drift of the machine's speed over the bench (this VM's
    single-thread speed varies by +-30% from minute to minute) weighs on both sides."""
    small, large = min(lines), max(lines)
    a, b = lines[small], lines[large]
    small_runs = [a] if rerun is None else [a, rerun]
    a_wall = sum(r["wall_s"] for r in small_runs) / len(small_runs)
    a_steps = {name: sum(r["steps_wall_s"].get(name, 0.0) for r in small_runs) / len(small_runs)
               for name in a["steps_wall_s"]}
    size_ratio = large / small
    rss_ratio = b["driver_peak_rss_mb"] / a["driver_peak_rss_mb"]
    wall_ratio = b["wall_s"] / a_wall
    steps = {name: round(wall / a_steps[name], 2)
             for name, wall in b["steps_wall_s"].items() if a_steps.get(name)}
    recall = all(line["recall_clusters"] == 1.0 and line["recall_passages"] == 1.0
                 for line in lines.values())
    bounded = all(line["tasks_within_bounds"] for line in lines.values())
    return {
        "bench": "dedup_scale_summary", "sizes": sorted(lines), "size_ratio": size_ratio,
        "driver_peak_rss_ratio": round(rss_ratio, 3),
        "driver_rss_ok": rss_ratio <= 1.1,
        "smallest_wall_s_runs": [r["wall_s"] for r in small_runs],
        "wall_ratio": round(wall_ratio, 3), "wall_ratio_max": round(1.1 * size_ratio, 2),
        "wall_ok": wall_ratio <= 1.1 * size_ratio,
        "step_wall_ratios": steps,
        "recall_ok": recall, "tasks_within_bounds": bounded,
        "all_ok": rss_ratio <= 1.1 and wall_ratio <= 1.1 * size_ratio and recall and bounded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,4000000",
                        help="documents per run, comma-separated")
    parser.add_argument("--bracket", action=argparse.BooleanOptionalAction, default=True,
                        help="run the smallest size again after the largest and compare with "
                        "the mean of its two runs (default: on)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fineweb",
                        help="the band layout (bands x rows, n-gram, seed)")
    parser.add_argument("--scheme", choices=["legacy", "affine32", "sketch"],
                        help="signature scheme (default: stage 8's, dedup.fuzzy.scheme); "
                        "legacy and affine32 hash shingles with SHA-1, as datasketch")
    parser.add_argument("--docs-words", type=int, default=80)
    parser.add_argument("--shard-docs", type=int, default=25000)
    parser.add_argument("--task-mb", type=float, default=256.0, help="exact.task_bytes")
    parser.add_argument("--bucket-mb", type=float, help="fuzzy.bucket_bytes (--task-mb)")
    parser.add_argument("--url-mb", type=float, help="urls.task_bytes (--task-mb)")
    parser.add_argument("--cluster-rate", type=float, default=0.01,
                        help="near-duplicate clusters per document")
    parser.add_argument("--cluster-sizes", default="2,5", help="min,max documents a cluster")
    parser.add_argument("--cluster-words", type=int, default=320)
    parser.add_argument("--edit-fraction", type=float, default=0.003,
                        help="words replaced in a cluster copy (at least 1)")
    parser.add_argument("--passage-rate", type=float, default=0.002,
                        help="repeated passages per document")
    parser.add_argument("--passage-hosts", default="2,4", help="min,max documents a passage")
    parser.add_argument("--passage-words", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="keep generated shards here between runs")
    args = parser.parse_args()
    args.bucket_mb = args.bucket_mb or args.task_mb
    args.url_mb = args.url_mb or args.task_mb
    sizes = sorted(int(s) for s in args.sizes.split(","))
    pair = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    options = {"seed": args.seed, "docs_words": args.docs_words, "shard_docs": args.shard_docs,
               "cluster_rate": args.cluster_rate, "cluster_sizes": pair(args.cluster_sizes),
               "cluster_words": args.cluster_words, "edit_fraction": args.edit_fraction,
               "passage_rate": args.passage_rate, "passage_hosts": pair(args.passage_hosts),
               "passage_words": args.passage_words}
    config = make_config(args)

    from refine.dag import init_ray

    with tempfile.TemporaryDirectory(prefix="dedup-scale-") as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        init_ray(None, num_cpus=2)
        ray_s = time.monotonic() - started
        warm_dir, _ = corpus_for(WARMUP_SIZE, {**options, "shard_docs": WARMUP_SIZE // 2}, cache)
        warm = dedup_once(warm_dir, config, args.workers, args.sample_ms)
        print(json.dumps({"bench": "dedup_scale_setup", "ray_start_s": round(ray_s, 2),
                          "warmup_wall_s": warm["wall_s"], "config": config.model_dump(
                              exclude={"urls": {"previous_runs"}}),
                          "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
        lines: dict[int, dict] = {}
        for size in sizes:
            run_dir, corpus = corpus_for(size, options, cache)
            run = dedup_once(run_dir, config, args.workers, args.sample_ms)
            quality = in_child(evaluate, run_dir)
            lines[size] = size_line(args, config, size, corpus, run, quality)
            print(json.dumps(lines[size]), flush=True)
        rerun = None
        if len(lines) > 1 and args.bracket:  # the smallest again, after the largest
            size = min(lines)
            run_dir, corpus = corpus_for(size, options, cache)
            run = dedup_once(run_dir, config, args.workers, args.sample_ms)
            rerun = size_line(args, config, size, corpus, run, in_child(evaluate, run_dir))
            print(json.dumps({**rerun, "rerun": True}), flush=True)
        if len(lines) > 1:
            print(json.dumps(summary_line(lines, rerun)), flush=True)


if __name__ == "__main__":
    main()
