"""Pretrain `pretrain.model.CausalLM` on TOKENS with DeepSpeed ZeRO (stage 1, 2 or 3).

    deepspeed [--num_gpus N] pretrain/train.py --config configs/pretrain/SIZE.yaml \
        --deepspeed_config configs/deepspeed/zeroN.json --data TOKENS --output CKPT [--steps N]
    python pretrain/train.py ...      (one process: rank 0 of 1, no launcher needed)

On a CPU-only machine the launcher runs N ranks with `DS_ACCELERATOR=cpu deepspeed
--num_gpus N ...` (gloo collectives, fp32).

The split of responsibilities: the YAML (`pretrain.config`) says *what* to train (model, batch,
lr schedule, eval/checkpoint cadence); the DeepSpeed JSON says *how* (ZeRO stage, precision).
Keys both could hold (batch sizes, clipping, optimizer) are `"auto"` in the JSON and filled here
from the YAML; `"bf16": {"enabled": "auto"}` means bf16 where the accelerator supports it, else
fp32 (CPU). Under bf16 gradients accumulate in fp32 (`data_types.grad_accum_dtype`, unless the
JSON says otherwise; under ZeRO-1 DeepSpeed then uses its BF16_Optimizer); fp32 on CUDA uses
TF32 tensor cores. Flags such as `--lr` override the YAML. configs/deepspeed/zeroN.json are
for CPU and tests (no communication overlap); configs/deepspeed/gpu/zeroN.json add DeepSpeed's
usual GPU settings (overlap_comm, buckets, ZeRO-3 prefetch and a parameter persistence
threshold that keeps norms gathered).

One optimizer step = grad_accum micro-batches of micro_batch_size sequences on every rank. The
learning rate is a pure function of the step (linear warmup, cosine decay to min_lr at
max_steps), set by hand before each step, so resuming needs no scheduler state. The data order
is TokenDataset's: a seeded permutation read from `consumed_samples` on, so a resumed run sees
exactly the batches an uninterrupted one would. A thread reads the next batches ahead (into
pinned memory on CUDA, copied with non_blocking=True), and the loss stays on the device until
the step ends (one host sync per step).

metrics.csv's tokens_per_s and mfu leave out torch.compile's time (the first step, or a
recompile), which is its own column, compile_s. MFU needs the device's peak FLOP/s: a table of
GPUs (PEAK_FLOPS: bf16, or TF32 for fp32) or --peak_flops.

CKPT/ holds DeepSpeed checkpoints `global_step{N}/` (client state: step, consumed_samples,
config, token manifest hash, world size, absolute paths of TOKENS and --tokenizer, which
pretrain.export and pretrain.finetune read; plus `train_state.json`, the same as JSON, written
before DeepSpeed's files), `latest` (DeepSpeed writes it after every file of the tag, so an
interrupted save never becomes latest) and `metrics.csv` (one row per step and per evaluation).
A rerun with the same CKPT resumes from `latest`. With training.keep_latest_k = K (or
--keep_latest_k K) only the newest K tags stay: older ones are deleted after each successful
save, never the one `latest` names.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # a script (`deepspeed pretrain/train.py`): sys.path[0] is
    # pretrain/, whose modules (config, dataset, model, ...) would shadow any top-level modules
    # of those names; use the repo root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402 (after the path fix above)
import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from pretrain.config import ConfigError, PretrainConfig, TrainingConfig, load_config, parse
from pretrain.dataset import MAKE_TOKENS, MANIFEST, TokenDataset, TokensError, read_manifest
from pretrain.model import CausalLM, ModelConfig, compile_layers
from pretrain.training.checkpoints import check_resumed, resume_mode, save_checkpoint
from pretrain.training.engine import (
    EngineStepper,
    all_mean,
    bf16_supported,
    build_engine,
    deepspeed_config,
    exit_process,
    init_distributed,
    log_from_rank_zero,
    quiet_deepspeed,
    run_command,
    shutdown_distributed,  # noqa: F401 (pretrain.tune imports it from here)
    single_process_env,
)
from pretrain.training.loop import (
    Step,
    batches,
    epochs_for,
    every,
    language_modelling,
    mean_loss,
    run_steps,
    seed_everything,
)
from pretrain.training.metrics import (
    METRICS_FILE,
    Metrics,
    Throughput,
    peak_flops,
    truncate_metrics,
)

log = logging.getLogger("pretrain.train")


# --- arguments and configs -------------------------------------------------------------------

OVERRIDES = {  # TrainingConfig fields settable by flag (help text)
    "max_steps": "optimizer steps of the whole run: the lr schedule ends here",
    "micro_batch_size": "sequences per rank per forward",
    "grad_accum": "micro-batches per optimizer step",
    "seq_len": "tokens per sequence",
    "lr": "peak learning rate (after warmup)",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_steps": "linear warmup steps",
    "weight_decay": "AdamW weight decay of matrices (norms get none)",
    "grad_clip": "max global gradient norm (0 = no clipping)",
    "eval_every": "validate every K steps",
    "eval_steps": "validation micro-batches per rank",
    "checkpoint_every": "checkpoint every K steps",
    "log_every": "console log every K steps (metrics.csv gets every step)",
    "seed": "seed of initialisation and data order",
    "keep_latest_k": "keep only the newest K checkpoints (older tags are deleted after a save)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pretrain a Llama-style model on token shards with DeepSpeed ZeRO. Launch "
                    "with `deepspeed [--num_gpus N] pretrain/train.py ...` (on CPU prefix "
                    "DS_ACCELERATOR=cpu) or run as one process with `python pretrain/train.py`. "
                    "Resumes from OUTPUT/latest when it exists.")
    parser.add_argument("--config", type=Path, required=True,
                        help="model + training YAML (configs/pretrain/SIZE.yaml)")
    parser.add_argument("--deepspeed_config", type=Path, required=True,
                        help="DeepSpeed JSON (configs/deepspeed/zeroN.json): ZeRO stage, bf16")
    parser.add_argument("--data", type=Path, required=True,
                        help="TOKENS directory (python -m pretrain.encode)")
    parser.add_argument("--output", type=Path, required=True,
                        help="checkpoint directory (CKPT): checkpoints, latest, metrics.csv")
    parser.add_argument("--steps", type=int, default=None,
                        help="stop this launch once the global step reaches N (default: "
                             "max_steps); the lr schedule still runs to max_steps")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="TOK directory: vocab size from it (else from TOKENS' manifest), "
                             "checked against the tokenizer TOKENS was made with")
    parser.add_argument("--peak_flops", type=float, default=None,
                        help="peak FLOP/s of one device for MFU (default: a table of GPUs; "
                             "on CPU MFU is left empty unless this is given)")
    parser.add_argument("--universal", action="store_true",
                        help="resume from a universal checkpoint (after ds_to_universal), e.g. "
                             "on a different number of ranks")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile each decoder layer (default: the YAML's "
                             "training.compile; ZeRO 0-2)")
    parser.add_argument("--local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)  # passed by the deepspeed launcher; env wins
    group = parser.add_argument_group("overrides of the YAML's training section")
    for name, text in OVERRIDES.items():
        kind = TrainingConfig.model_fields[name].annotation
        group.add_argument(f"--{name}", type=float if kind is float else int, default=None,
                           help=text)
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> PretrainConfig:
    """The YAML with flag overrides, validated again (so an override can be refused)."""
    config = load_config(args.config)
    overrides = {k: getattr(args, k) for k in [*OVERRIDES, "compile"]
                 if getattr(args, k, None) is not None}
    training = config.training.model_dump() | overrides
    return parse(PretrainConfig, {"model": config.model.model_dump(), "training": training},
                 f"{args.config} with overrides {overrides}")


def vocab_size_for(data: Path, manifest: dict[str, Any], tokenizer: Path | None) -> int:
    """The vocab size: --tokenizer's (which must be the one TOKENS was made with), else the
    token manifest's."""
    if tokenizer is None:
        if not isinstance(manifest.get("vocab_size"), int):
            raise TokensError(f"{data / MANIFEST} is damaged: no 'vocab_size'; pass --tokenizer "
                              f"TOK or make TOKENS again with `{MAKE_TOKENS} --overwrite`")
        return manifest["vocab_size"]
    from pretrain.config import tokenizer_vocab_size
    from pretrain.files import sha256_file

    model_file = tokenizer / "tokenizer.model"
    if not model_file.is_file():
        raise ConfigError(f"--tokenizer {tokenizer} has no tokenizer.model: pass the TOK "
                          "directory of `python -m pretrain.tokenizer`")
    recorded = manifest.get("tokenizer")
    if not isinstance(recorded, dict) or sha256_file(model_file) != recorded.get("model_sha256"):
        raise ConfigError(f"{tokenizer} is not the tokenizer {data} was made with")
    return tokenizer_vocab_size(tokenizer)


def train(args: argparse.Namespace) -> int:
    single_process_env()
    config = resolve_config(args)
    training = config.training
    # TOKENS and the tokenizer are checked before DeepSpeed starts and OUTPUT is created
    manifest = read_manifest(args.data)
    manifest_sha256 = hashlib.sha256((args.data / MANIFEST).read_bytes()).hexdigest()
    model_config: ModelConfig = config.model_for(vocab_size_for(args.data, manifest,
                                                                args.tokenizer))
    quiet_deepspeed()
    rank, world_size, device = init_distributed()
    log_from_rank_zero(rank, log)
    resume = resume_mode(args.output, world_size, args.universal)
    ds_config = deepspeed_config(args.deepspeed_config, training, world_size,
                                 bf16_supported(device))
    if resume == "latest_universal":
        ds_config.setdefault("checkpoint", {})["load_universal"] = True

    seed_everything(training.seed)  # the same initial weights on every rank
    model = CausalLM(model_config)
    num_params = model.num_params()  # before ZeRO-3 partitions the parameters away
    flops_per_token = model.flops_per_token(training.seq_len)
    if training.compile:
        compile_layers(model)  # compiles on the first step
    engine = build_engine(model, ds_config, training.weight_decay)
    stage = engine.zero_optimization_stage()
    bf16 = ds_config["bf16"]["enabled"]
    if device.type == "cuda" and not bf16:
        # fp32 training on CUDA: matmuls and convolutions on TF32 tensor cores (10-bit
        # mantissa products, fp32 accumulation), as the fp32 peaks in PEAK_FLOPS assume
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        log.info("fp32 on CUDA: TF32 tensor cores enabled for matmuls and convolutions")
    log.info("rank 0 of %d on %s: ZeRO stage %d, %s, %.2fM parameters, global batch %d x %d "
             "tokens", world_size, device, stage, "bf16" if bf16 else "fp32",
             num_params / 1e6, training.micro_batch_size * training.grad_accum
             * world_size, training.seq_len)
    if training.compile:
        log.info("decoder layers and loss compiled with torch.compile (the first step compiles)")

    start, consumed = 0, 0
    samples_per_step = training.micro_batch_size * training.grad_accum * world_size
    # the client state of every checkpoint, less step and consumed_samples
    run_state: dict[str, Any] = {
        "model": model_config.model_dump(), "training": training.model_dump(),
        "tokens": str(args.data.resolve()), "tokens_manifest_sha256": manifest_sha256,
        "world_size": world_size, "zero_stage": stage,
        "tokenizer": str(args.tokenizer.resolve()) if args.tokenizer else None}
    loaded, client = None, {}
    if resume is not None:
        loaded, client = engine.load_checkpoint(str(args.output), load_module_strict=True)
    if loaded is not None:
        check_resumed(loaded, client, run_state, world_size)
        start, consumed = client["step"], client["consumed_samples"]
        log.info("resumed from %s at step %d (%d samples consumed)", Path(loaded).parent, start,
                 consumed)
    elif rank == 0:
        args.output.mkdir(parents=True, exist_ok=True)
    metrics_path = args.output / METRICS_FILE
    if rank == 0:
        truncate_metrics(metrics_path, start)
    metrics = Metrics(metrics_path, enabled=rank == 0)

    last = min(args.steps or training.max_steps, training.max_steps)
    if start >= last:
        log.info("already at step %d >= %d: nothing to do", start, last)
        return 0
    needed = consumed + (last - start) * samples_per_step
    train_data = TokenDataset(args.data, training.seq_len, "train", training.seed, rank,
                              world_size, consumed, epochs_for(args.data, "train",
                                                               training.seq_len, world_size,
                                                               needed))
    val_data = TokenDataset(args.data, training.seq_len, "val", training.seed, rank, world_size,
                            0, epochs_for(args.data, "val", training.seq_len, world_size,
                                          training.eval_steps * training.micro_batch_size
                                          * world_size))
    peak = peak_flops(device, bf16, args.peak_flops)
    if peak is None:
        log.info("MFU: no peak FLOP/s known for %s (pass --peak_flops); left empty", device)

    def consumed_at(step: Step) -> int:
        return consumed + (step.number - start) * samples_per_step

    def record(step: Step) -> None:
        tokens_per_s, mfu, compile_s = throughput.lap()
        metrics.train(step.number, step.loss, step.lr, step.grad_norm,
                      consumed_at(step) * training.seq_len, tokens_per_s, mfu, compile_s)
        if compile_s:
            log.info("step %d: torch.compile took %.1f s (left out of tokens/s and MFU)",
                     step.number, compile_s)
        if step.number % training.log_every == 0 or step.number == last:
            log.info("step %d/%d | loss %.4f | lr %.2e | grad norm %s | %.0f tokens/s | MFU %s",
                     step.number, training.max_steps, step.loss, step.lr,
                     "n/a" if step.grad_norm is None else f"{step.grad_norm:.3f}", tokens_per_s,
                     "n/a" if mfu is None else f"{mfu:.1%}")

    def validate(step: Step) -> None:
        val_loss = mean_loss(engine, batches(val_data, training.micro_batch_size, device,
                                             prefetch=0),
                             training.eval_steps, device, lambda t: all_mean(t, device))
        metrics.val(step.number, val_loss, step.lr, consumed_at(step) * training.seq_len)
        log.info("step %d: validation loss %.4f", step.number, val_loss)
        throughput.restart()  # evaluation time is not training throughput

    def save(step: Step) -> None:
        save_checkpoint(engine, args.output, {
            "step": step.number, "consumed_samples": consumed_at(step),
            **run_state}, rank, training.keep_latest_k)
        throughput.restart()

    log.info("training steps %d..%d of %d", start + 1, last, training.max_steps)
    engine.train()
    throughput = Throughput(samples_per_step * training.seq_len, flops_per_token,
                            peak * world_size if peak else None)
    run_steps(EngineStepper(engine),
              language_modelling(batches(train_data, training.micro_batch_size, device)),
              training, start, last, device,
              [record, every(training.eval_every, last, validate),
               every(training.checkpoint_every, last, save)],
              reduce=lambda loss: all_mean(loss, device))
    log.info("done at step %d; checkpoints in %s", last, args.output)
    if device.type == "cuda":
        log.info("peak device memory %.3f GiB (torch.cuda.max_memory_allocated)",
                 torch.cuda.max_memory_allocated(device) / 2**30)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: train(args))


if __name__ == "__main__":
    exit_process(main())  # not raise SystemExit: see exit_process (gloo threads at exit)
