"""Train one small model on one variant: pretrain's model, data order and schedule, one process.

The pieces are pretrain.training's: `CausalLM` initialised after `seed_everything(seed)` (so two
variants with the same seed start from the same weights), `TokenDataset` windows in its seeded
order (`batches`), AdamW with `param_groups` (no decay on norms), the step loop `run_steps`
(`lr_at`: linear warmup, cosine decay; gradient clipping) and `Metrics` writing `metrics.csv`
in pretrain.train's format. What it leaves out is DeepSpeed: one CPU process needs no ZeRO, and
the plain loop is the one bench/train_throughput.py measures DeepSpeed against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pretrain.config import TrainingConfig
from pretrain.dataset import TokenDataset
from pretrain.model import CausalLM, ModelConfig
from pretrain.training.loop import (
    Step,
    TorchStepper,
    batches,
    every,
    language_modelling,
    param_groups,
    run_steps,
    seed_everything,
)
from pretrain.training.metrics import METRICS_FILE, Metrics, Throughput


@dataclass
class TrainResult:
    model: CausalLM
    train_tokens: int  # target tokens the optimizer saw (inputs: the same count)
    samples: int  # windows of seq_len + 1
    epochs: float  # passes over the variant's training windows
    final_loss: float
    wall_s: float


def train_variant(tokens_dir: Path, model_config: ModelConfig, training: TrainingConfig,
                  seed: int, out_dir: Path, log=None) -> TrainResult:
    """`training.max_steps` optimizer steps of micro_batch_size x grad_accum windows."""
    started = time.monotonic()
    seed_everything(seed)
    model = CausalLM(model_config).train()
    optimizer = torch.optim.AdamW(param_groups(model, training.weight_decay), lr=training.lr,
                                  betas=training.betas, eps=1e-8,
                                  fused=True)  # as pretrain.train configures DeepSpeed's
    samples = training.max_steps * training.micro_batch_size * training.grad_accum
    probe = TokenDataset(tokens_dir, training.seq_len, "train", seed)
    epochs = -(-samples // probe.samples_per_epoch)
    data = TokenDataset(tokens_dir, training.seq_len, "train", seed, epochs=epochs)
    cpu = torch.device("cpu")
    stream = language_modelling(batches(data, training.micro_batch_size, cpu))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    metrics = Metrics(out_dir / METRICS_FILE, enabled=True)
    step_tokens = training.micro_batch_size * training.grad_accum * training.seq_len
    done = Step(0, float("nan"), 0.0, None)

    def record(step: Step) -> None:
        nonlocal done
        tokens_per_s, _, _ = throughput.lap()
        metrics.train(step.number, step.loss, step.lr, step.grad_norm, step.number * step_tokens,
                      tokens_per_s)
        done = step

    def progress(step: Step) -> None:
        log.info("  step %d/%d | loss %.4f | lr %.2e", step.number, training.max_steps,
                 step.loss, step.lr)

    hooks = [record] if log is None else [record, every(training.log_every,
                                                        training.max_steps, progress)]
    throughput = Throughput(step_tokens)
    run_steps(TorchStepper(model, optimizer, training), stream, training, 0, training.max_steps,
              cpu, hooks)
    model.eval()
    return TrainResult(model, done.number * step_tokens, samples,
                       samples / probe.samples_per_epoch, done.loss, time.monotonic() - started)
