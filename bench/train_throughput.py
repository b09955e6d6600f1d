"""Training throughput of one rank: DeepSpeed ZeRO (as pretrain/train.py builds it) against a
plain PyTorch loop; prints one JSON line per measurement.

For each ZeRO stage (--zero, default 1 and 2) and for a plain loop, the same model (the YAML's
`model:` section, the same seeded initial weights), the same batches, AdamW with the same
hyper-parameters and parameter groups, gradient clipping at the YAML's grad_clip and the same
dtype (bf16 where DeepSpeed would enable it, else fp32: on CPU fp32) run --warmup untimed
optimizer steps, then --steps timed ones. One optimizer step = grad_accum micro-batches of
micro_batch_size x seq_len tokens. The DeepSpeed engine comes from pretrain.training's functions
(`init_distributed`, `deepspeed_config`, `build_engine`) in one process (rank 0 of 1, gloo on
CPU). The implementations take turns, one step each, for --steps rounds, so that other load on
the machine falls on all of them alike; tokens/s is tokens per step / the median step time (the
mean is reported too).

With --compile (the default where the YAML sets `training.compile`, as the 125m/350m/1b
configs do) every compared model has its decoder layers compiled (pretrain.model.compile_layers);
compilation happens in the untimed warmup steps.

Batches: synthetic by default (seeded uniform token ids over the vocabulary, --vocab-size), or
real windows of a TOKENS directory (--data, `python -m pretrain.encode`). MFU =
flops_per_token * tokens/s / peak FLOP/s, with pretrain.training.metrics' peak table (GPUs) or
--peak-flops; on CPU no peak is known, so `mfu` is null and tokens/s is the measure.

Lines: `{"bench": "train_throughput", "impl": "torch" | "deepspeed", "zero": N | null, ...}`
per implementation, then `{"bench": "train_throughput_ratio", "zero": N, "ratio": ...}`:
DeepSpeed tokens/s / plain tokens/s. Target: >= 0.90 for ZeRO-1 and ZeRO-2 on one CPU rank.
"""

from __future__ import annotations

import os
import sys

if os.path.dirname(os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402 (after the path fix above)
import contextlib
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.config import PretrainConfig, load_config, parse
from pretrain.model import CausalLM, compile_layers
from pretrain.training.engine import (
    bf16_supported,
    build_engine,
    deepspeed_config,
    init_distributed,
)
from pretrain.training.loop import language_modelling, param_groups, seed_everything
from pretrain.training.metrics import peak_flops

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.90
DS_CONFIGS = ROOT / "configs" / "deepspeed"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path,
                        default=ROOT / "configs" / "pretrain" / "tiny.yaml",
                        help="pretraining YAML: model size and batch (e.g. configs/pretrain/"
                             "125m.yaml)")
    parser.add_argument("--zero", type=int, choices=(1, 2, 3), action="append", default=None,
                        help="ZeRO stage (repeatable; default: 1 and 2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--micro-batch-size", type=int, default=None,
                        help="override the YAML's micro_batch_size")
    parser.add_argument("--seq-len", type=int, default=None, help="override the YAML's seq_len")
    parser.add_argument("--grad-accum", type=int, default=None,
                        help="override the YAML's grad_accum")
    parser.add_argument("--vocab-size", type=int, default=32000,
                        help="vocabulary of the synthetic batches and the model (without --data)")
    parser.add_argument("--data", type=Path, default=None,
                        help="TOKENS directory: real token windows (vocab from its manifest)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile each decoder layer, in every compared model "
                             "(default: the YAML's training.compile)")
    parser.add_argument("--peak-flops", type=float, default=None,
                        help="peak FLOP/s of the device for MFU (default: pretrain.train's table)")
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace) -> PretrainConfig:
    config = load_config(args.config)
    overrides = {"micro_batch_size": args.micro_batch_size, "seq_len": args.seq_len,
                 "grad_accum": args.grad_accum, "compile": args.compile}
    training = config.training.model_dump() | {k: v for k, v in overrides.items()
                                               if v is not None}
    return parse(PretrainConfig, {"model": config.model.model_dump(), "training": training})


def make_batches(args: argparse.Namespace, count: int, micro: int, seq_len: int,
                 vocab_size: int, seed: int) -> list[torch.Tensor]:
    """`count` micro-batches of (micro, seq_len + 1) token ids, synthetic or real."""
    if args.data is None:
        generator = torch.Generator().manual_seed(seed)
        return [torch.randint(0, vocab_size, (micro, seq_len + 1), generator=generator)
                for _ in range(count)]
    from pretrain.dataset import TokenDataset

    probe = TokenDataset(args.data, seq_len, "train", seed)
    epochs = max(1, -(-count * micro // probe.samples_per_epoch))
    dataset = TokenDataset(args.data, seq_len, "train", seed, epochs=epochs)
    return [torch.from_numpy(np.stack([dataset[i * micro + j] for j in range(micro)]))
            for i in range(count)]


def plain_step(model: CausalLM, optimizer: torch.optim.Optimizer, grad_clip: float,
               bf16: bool) -> Callable[[list[torch.Tensor]], float]:
    def step(micro_batches: list[torch.Tensor]) -> float:
        total = 0.0
        for inputs, labels in language_modelling(micro_batches):
            with torch.autocast(inputs.device.type, torch.bfloat16, enabled=bf16):
                loss = model(inputs, labels=labels).loss
            (loss / len(micro_batches)).backward()
            total += loss.item()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total / len(micro_batches)
    return step


def engine_step(engine: Any) -> Callable[[list[torch.Tensor]], float]:
    def step(micro_batches: list[torch.Tensor]) -> float:
        total = 0.0
        for inputs, labels in language_modelling(micro_batches):
            loss = engine(inputs, labels=labels).loss
            engine.backward(loss)
            engine.step()  # the update happens after the last micro-batch
            total += loss.item()
        return total / len(micro_batches)
    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    stages = args.zero or [1, 2]
    config = resolve(args)
    training = config.training
    with contextlib.redirect_stdout(sys.stderr):  # stdout: JSON lines only
        _, world_size, device = init_distributed()
    bf16 = bf16_supported(device)
    vocab_size = args.vocab_size
    if args.data is not None:
        vocab_size = json.loads((args.data / "manifest.json").read_text())["vocab_size"]
    model_config = config.model_for(vocab_size)
    micro, accum = training.micro_batch_size, training.grad_accum
    batches = make_batches(args, (args.warmup + args.steps) * accum, micro, training.seq_len,
                           vocab_size, training.seed)
    batches = [b.to(device) for b in batches]

    steps: dict[str, Callable[[list[torch.Tensor]], float]] = {}
    seed_everything(training.seed)
    model = CausalLM(model_config).to(device)
    num_params, flops = model.num_params(), model.flops_per_token(training.seq_len)
    if training.compile:
        compile_layers(model)
    optimizer = torch.optim.AdamW(param_groups(model, training.weight_decay), lr=training.lr,
                                  fused=True,  # as pretrain.train configures DeepSpeed's
                                  betas=training.betas, eps=1e-8)
    steps["torch"] = plain_step(model.train(), optimizer, training.grad_clip, bf16)
    for stage in stages:
        seed_everything(training.seed)
        ds = deepspeed_config(DS_CONFIGS / f"zero{stage}.json", training, world_size, bf16)
        model = CausalLM(model_config)
        if training.compile:
            compile_layers(model)
        with contextlib.redirect_stdout(sys.stderr):
            engine = build_engine(model, ds, training.weight_decay)
        engine.train()
        steps[f"zero{stage}"] = engine_step(engine)

    times: dict[str, list[float]] = {name: [] for name in steps}
    losses: dict[str, list[float]] = {name: [] for name in steps}
    for index in range(args.warmup + args.steps):
        micro_batches = batches[index * accum:(index + 1) * accum]
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            losses[name].append(step(micro_batches))
            sync(device)
            if index >= args.warmup:
                times[name].append(time.perf_counter() - start)

    peak = peak_flops(device, bf16, args.peak_flops)
    tokens_per_step = micro * accum * training.seq_len
    rates = {}
    for name in steps:
        rate = tokens_per_step / statistics.median(times[name])
        rates[name] = rate
        print(json.dumps({
            "bench": "train_throughput", "impl": "torch" if name == "torch" else "deepspeed",
            "zero": None if name == "torch" else int(name[4:]), "config": args.config.stem,
            "params": num_params, "device": str(device), "dtype": "bf16" if bf16 else "fp32",
            "compile": training.compile,
            "threads": torch.get_num_threads(), "ranks": world_size,
            "data": "real" if args.data else "synthetic", "micro_batch_size": micro,
            "grad_accum": accum, "seq_len": training.seq_len, "tokens_per_step": tokens_per_step,
            "warmup_steps": args.warmup, "timed_steps": args.steps,
            "tokens_per_s": round(rate, 1),
            "tokens_per_s_mean": round(tokens_per_step * len(times[name]) / sum(times[name]), 1),
            "flops_per_token": flops, "mfu": round(flops * rate / peak, 4) if peak else None,
            "loss_first": round(losses[name][0], 5), "loss_last": round(losses[name][-1], 5)}),
            flush=True)
    for stage in stages:
        ratio = rates[f"zero{stage}"] / rates["torch"]
        print(json.dumps({"bench": "train_throughput_ratio", "config": args.config.stem,
                          "zero": stage, "ratio": round(ratio, 3), "target": TARGET,
                          "meets_target": ratio >= TARGET}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
