"""Data-quality ablation: what each refinement stage buys, measured with small models.

    python -m pretrain.ablate CONFIG --input PATH... --output DIR [--quick] [--seeds 2]
        [--workers 2]

From one input, the RefinedWeb variants (see `pretrain.ablate.variants`): **raw** (extracted
text that passed language ID), **filtered** (plus repetition, quality and line rules) and
**refined** (plus fuzzy, exact-substring and URL dedup). A held-out slice of the refined
documents (by id hash) is removed from every variant's training set. Then:

- one SentencePiece tokenizer, trained on the raw variant's training text (the superset of the
  three: filtered rows are raw rows, refined rows are filtered rows with dedup's cuts), so the
  models differ only by their data;
- the same number of training tokens for every model: `steps` optimizer steps of
  micro_batch x grad_accum windows of seq_len (+1) tokens, where by default steps is one epoch
  of the smallest variant (capped by the mode's `max_steps`), or `--tokens`; a variant with
  fewer windows than that repeats epochs (recorded as `epochs`);
- the same model config, schedule and seeds for every variant (seed s: the same initial
  weights for each variant; data order seeded by s over each variant's own windows);
- evaluation in bits per byte (`pretrain.ablate.bpb`) on the same bytes for every model: the
  curated set (Wikipedia + Lee news, shipped in refine/data) and the held-out refined slice.

DIR/ holds raw-run/ and run/ (the two refine passes; run/report.html gets an ablation section),
variants/{raw,filtered,refined}/train.parquet, tokenizer/, tokens/{variant}/,
models/{variant}-seed{s}/metrics.csv, and the results: ablation.json, ablation.md, ablation.svg.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refine.report.ablation import ABLATION_FILE
from refine.rundir import DATA, FILTERED, MANIFEST, RunDir

log = logging.getLogger("pretrain.ablate")

FORMAT = "refine-ablation/1"


@dataclass(frozen=True)
class Mode:
    name: str
    model: dict[str, Any]
    training: dict[str, Any]
    max_steps: int | None  # cap on the default budget (one epoch of the smallest variant)
    vocab_size: int
    heldout_fraction: float
    curated_bytes: int | None  # per curated source (None: all of it)
    stride: int  # evaluation window stride (seq_len: no overlap)


_TRAINING = {"weight_decay": 0.1, "betas": (0.9, 0.95), "grad_clip": 1.0, "eval_every": 1,
             "eval_steps": 1, "checkpoint_every": 1, "log_every": 50}

QUICK = Mode(
    "quick",
    model={"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
           "tie_word_embeddings": True},
    training={**_TRAINING, "seq_len": 64, "micro_batch_size": 8, "grad_accum": 1,
              "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 5, "max_steps": 1, "log_every": 20},
    max_steps=60, vocab_size=1000, heldout_fraction=0.1, curated_bytes=24_000, stride=32)

FULL = Mode(
    "full",
    model={"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
           "tie_word_embeddings": True},  # configs/pretrain/tiny.yaml's model
    training={**_TRAINING, "seq_len": 128, "micro_batch_size": 8, "grad_accum": 2,
              "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 20, "max_steps": 1},
    max_steps=600, vocab_size=4096, heldout_fraction=0.05, curated_bytes=None, stride=64)


class AblationError(RuntimeError):
    """An ablation that cannot run (no documents, an empty held-out set, a used DIR)."""


def plan_budget(train_tokens: dict[str, int], seq_len: int, samples_per_step: int,
                tokens: int | None, max_steps: int | None) -> dict[str, Any]:
    """Optimizer steps that give every variant the same number of training tokens.

    Default: one epoch of the smallest variant's windows ((T - 1) // seq_len), capped at
    max_steps; with `tokens`: tokens // (samples_per_step * seq_len) steps."""
    tokens_per_step = samples_per_step * seq_len
    windows = {name: max(0, (count - 1) // seq_len) for name, count in train_tokens.items()}
    if not all(windows.values()):
        raise AblationError(f"a variant has no window of {seq_len + 1} tokens: {train_tokens}")
    if tokens is not None:
        steps, rule, capped = tokens // tokens_per_step, "--tokens", False
    else:
        steps, rule = min(windows.values()) // samples_per_step, "one epoch of the smallest"
        capped = max_steps is not None and steps > max_steps
        steps = min(steps, max_steps) if max_steps is not None else steps
    if steps < 1:
        raise AblationError(f"a training budget of {tokens or min(train_tokens.values())} "
                            f"tokens is less than one step of {tokens_per_step} tokens")
    samples = steps * samples_per_step
    return {"rule": rule, "capped": capped, "steps": steps, "tokens_per_step": tokens_per_step,
            "train_tokens": steps * tokens_per_step, "samples": samples,
            "epochs": {name: samples / w for name, w in windows.items()}}


def _prepare(out: RunDir, overwrite: bool) -> None:
    from pretrain.ablate.variants import RAW_RUN

    if out.entries():
        if not overwrite:
            raise AblationError(f"{out} is not empty (use --overwrite)")
        if not (out.is_file(ABLATION_FILE) or out.is_file(RAW_RUN, MANIFEST)):
            raise AblationError(f"refusing to --overwrite {out}: it is not an ablation "
                                "directory")
        out.remove_tree()
    out.makedirs()


def _work_dir(out: RunDir, work: str | Path | None, stack: contextlib.ExitStack) -> Path:
    """Where variants, tokenizer, token shards and models go: DIR itself when local, else
    `work` or a temporary directory removed at the end (training reads local files)."""
    if out.local:
        return Path(out.root)
    if work is not None:
        Path(work).mkdir(parents=True, exist_ok=True)
        return Path(work)
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="refine-ablate-")))


def _curated(limit: int | None) -> tuple[list[str], list[str]]:
    from pretrain.ablate.curated import load_curated

    ids, texts, sizes = [], [], {}
    for row in load_curated():
        size = sizes.get(row["source"], 0)
        if limit is not None and size >= limit:
            continue
        ids.append(row["id"])
        texts.append(row["text"])
        sizes[row["source"]] = size + len(row["text"].encode("utf-8"))
    return ids, texts


def _write_results(out: RunDir, result: dict[str, Any]) -> None:
    from refine.report.ablation import markdown_table, svg_plot

    out.write_json(result, ABLATION_FILE)
    out.write_bytes(out.path("ablation.md"), markdown_table(result).encode())
    out.write_bytes(out.path("ablation.svg"), svg_plot(result).encode())


def ablate(config: Any, inputs: list[str], output: str | Path, quick: bool = False,
           seeds: int = 2, workers: int = 2, address: str | None = None,
           tokens: int | None = None, overwrite: bool = False,
           mode: Mode | None = None, work: str | Path | None = None) -> dict[str, Any]:
    """Run the whole ablation into `output` (a path or a URL); returns what ablation.json
    holds. With a URL, the refine runs and the results go there and the training files to
    `work` (see `_work_dir`)."""
    with contextlib.ExitStack() as stack:
        return _ablate(config, inputs, RunDir(output), quick, seeds, workers, address, tokens,
                       overwrite, mode, stack, work)


def _ablate(config: Any, inputs: list[str], out_dir: RunDir, quick: bool, seeds: int,
            workers: int, address: str | None, tokens: int | None, overwrite: bool,
            mode: Mode | None, stack: contextlib.ExitStack,
            work: str | Path | None) -> dict[str, Any]:
    import torch

    from pretrain.ablate import variants as V
    from pretrain.ablate.bpb import bits_per_byte, encode_texts
    from pretrain.ablate.trainer import train_variant
    from pretrain.codec import LosslessTokenizer
    from pretrain.config import TrainingConfig, parse
    from pretrain.encode import tokenize_run
    from pretrain.model import ModelConfig
    from pretrain.tokenizer import MODEL_FILE, TrainerOptions, train_tokenizer
    from refine.report import build_report
    from refine.report.ablation import summarize
    from refine.run import run

    mode = mode or (QUICK if quick else FULL)
    if seeds < 1:
        raise AblationError("--seeds must be at least 1")
    _prepare(out_dir, overwrite)
    out = _work_dir(out_dir, work, stack)
    raw_dir, run_dir = RunDir(out_dir.url(V.RAW_RUN)), RunDir(out_dir.url(V.RUN))
    started = time.monotonic()
    timings: dict[str, float] = {}

    log.info("pass 1: stages 1-4 (the raw variant) -> %s", raw_dir)
    raw_result = run(V.raw_config(config), inputs, raw_dir.location, workers=workers,
                     address=address)
    raw_files = [raw_dir.url(DATA, posixpath.basename(f)) for f in raw_dir.files(DATA)]
    if not raw_files:
        raise AblationError("no document passed language ID: nothing to train on")
    log.info("pass 2: the full config over the raw variant -> %s", run_dir)
    full_result = run(V.second_pass_config(config), raw_files, run_dir.location,
                      workers=workers, address=address)
    problems = V.check_second_pass(full_result.stats)
    timings["refine_s"] = time.monotonic() - started

    sources = {"raw": (raw_dir, DATA),
               "filtered": (run_dir, FILTERED if config.dedup.enabled else DATA),
               "refined": (run_dir, DATA)}
    rows = {name: V.read_rows(*source) for name, source in sources.items()}
    heldout = [r for r in rows["refined"] if V.is_validation(r["id"], mode.heldout_fraction)]
    if not heldout:
        raise AblationError(f"no refined document fell in the held-out {mode.heldout_fraction} "
                            f"of {len(rows['refined'])}: too few documents")
    duplicates = V.duplicates_of(run_dir, {r["id"] for r in heldout})
    split = V.heldout_split(rows["refined"], duplicates, mode.heldout_fraction)
    variant_info: dict[str, dict[str, Any]] = {}
    for name in V.VARIANTS:
        kept, counts = V.training_rows(rows[name], split)
        if not kept:
            raise AblationError(f"the {name} variant has no training documents")
        V.write_rows(kept, out / "variants" / name)
        variant_info[name] = {"source": sources[name][0].url(sources[name][1]), **counts}
        log.info("%s: %d documents, %d for training (%d bytes)", name, counts["documents"],
                 counts["train_documents"], counts["train_bytes"])
    del rows

    tick = time.monotonic()
    vocab = mode.vocab_size
    tok_dir = out / "tokenizer"
    tok_meta = train_tokenizer(out / "variants" / "raw", tok_dir, vocab_size=vocab, seed=0,
                               options=TrainerOptions(vocab_size=vocab, num_threads=workers))
    tokenizer = LosslessTokenizer.load(tok_dir / MODEL_FILE)
    timings["tokenizer_s"] = time.monotonic() - tick
    tick = time.monotonic()
    available = {}
    for name in V.VARIANTS:
        tokenized = tokenize_run(out / "variants" / name, tok_dir, out / "tokens" / name,
                                 val_fraction=0.0, workers=workers, address=address,
                                 overwrite=True)
        available[name] = tokenized.manifest["totals"]["train"]["tokens"]
        variant_info[name]["train_tokens_available"] = available[name]
    timings["tokenize_s"] = time.monotonic() - tick

    curated_ids, curated_texts = _curated(mode.curated_bytes)
    eval_sets = {"curated": encode_texts("curated", curated_ids, curated_texts, tokenizer),
                 "heldout": encode_texts("heldout", [r["id"] for r in split.heldout],
                                         [r["text"] for r in split.heldout], tokenizer)}
    # documents whose tokens do not decode back to their text: 0 with LosslessTokenizer (a
    # literal U+2581 is encoded as its bytes); kept as a check of that in every result
    roundtrip = {name: sum(tokenizer.decode(ids) != text for ids, text in
                           zip(data.tokens, data.texts, strict=True))
                 for name, data in eval_sets.items()}

    model_config = ModelConfig(vocab_size=tokenizer.piece_size(), **mode.model)
    base = mode.training
    budget = plan_budget(available, base["seq_len"], base["micro_batch_size"]
                         * base["grad_accum"], tokens, mode.max_steps)
    steps = budget["steps"]
    training = parse(TrainingConfig, {**base, "max_steps": steps,
                                      "warmup_steps": min(base["warmup_steps"],
                                                          max(1, steps // 10)),
                                      "eval_every": steps, "checkpoint_every": steps},
                     "ablation training")
    log.info("budget: %d steps x %d tokens = %d training tokens per model (%s)", steps,
             budget["tokens_per_step"], budget["train_tokens"], budget["rule"])

    result: dict[str, Any] = {
        "format": FORMAT, "mode": mode.name, "config_name": config.name,
        "config_hash": config.hash, "inputs": list(inputs),
        "runs": {"raw": raw_dir.url(), "full": run_dir.url()},
        "tokenizer": {"dir": str(tok_dir), "model_sha256": tok_meta["model_sha256"],
                      "vocab_size": tokenizer.piece_size(), "trained_on": "raw variant "
                      "(training split)"},
        "model": model_config.model_dump(), "training": training.model_dump(),
        "budget": budget, "seeds": list(range(seeds)),
        "variant_order": list(V.VARIANTS), "eval_order": list(eval_sets),
        "refine": {"raw_pass": raw_result.stats["documents"],
                   "second_pass": full_result.stats["documents"]},
        "heldout": split.counts,
        "eval_sets": {name: {**data.summary(), "not_round_trip": roundtrip[name]}
                      for name, data in eval_sets.items()},
        "eval": {"unit": "bits per byte", "context": "EOS, then the document alone",
                 "seq_len": training.seq_len, "stride": mode.stride},
        "variants": {name: {**variant_info[name], "epochs": budget["epochs"][name], "runs": []}
                     for name in V.VARIANTS},
        "problems": problems,
        "notes": ["Held-out refined documents are excluded from every variant by id, by "
                  "duplicate_of (dedup's removals) and by normalised URL; near-duplicates that "
                  "stages 5-7 dropped before dedup stay in the raw variant (a leak that can "
                  "only favour raw on the held-out set).",
                  "The tokenizer is trained on the raw variant's training text."],
        "timings": timings,
    }
    eos = tokenizer.eos_id()
    train_started = time.monotonic()
    for name in V.VARIANTS:
        for seed in range(seeds):
            log.info("training %s, seed %d: %d steps", name, seed, steps)
            trained = train_variant(out / "tokens" / name, model_config, training, seed,
                                    out / "models" / f"{name}-seed{seed}", log)
            tick = time.monotonic()
            model = trained.model

            def logits(ids: torch.Tensor, model: Any = model) -> torch.Tensor:
                return model(ids).logits

            scores = {}
            for set_name, data in eval_sets.items():
                score = bits_per_byte(logits, data, eos, training.seq_len, mode.stride)
                scores[set_name] = {**score.to_dict(), "sha256": data.summary()["sha256"]}
            run_entry = {"seed": seed, "train_tokens": trained.train_tokens,
                         "samples": trained.samples, "epochs": trained.epochs,
                         "final_train_loss": trained.final_loss,
                         "train_s": round(trained.wall_s, 3),
                         "eval_s": round(time.monotonic() - tick, 3),
                         "wall_s": round(trained.wall_s + time.monotonic() - tick, 3),
                         "eval": scores}
            result["variants"][name]["runs"].append(run_entry)
            log.info("%s seed %d: %s", name, seed,
                     ", ".join(f"{k} {v['bpb']:.4f} bpb" for k, v in scores.items()))
    timings["train_eval_s"] = time.monotonic() - train_started
    for variant in result["variants"].values():
        variant["summary"] = {s: summarize([r["eval"][s]["bpb"] for r in variant["runs"]])
                              for s in eval_sets}
    timings["total_s"] = time.monotonic() - started
    result["timings"] = {k: round(v, 2) for k, v in timings.items()}
    _write_results(out_dir, result)
    if not out_dir.local:  # the report reads the results from a local file
        RunDir(out).write_json(result, ABLATION_FILE)
    build_report(run_dir.location, ablation=None if out_dir.local else out / ABLATION_FILE)
    log.info("wrote %s (%.0f s)", out_dir.url("ablation.md"), timings["total_s"])
    return result
