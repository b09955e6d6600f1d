"""Train one small model on one variant: pretrain's model, data order and schedule, one process.

The pieces are pretrain.train's: `CausalLM` initialised after `seed_everything(seed)` (so two
variants with the same seed start from the same weights), `TokenDataset` windows in its seeded
order (`batches`), AdamW with `param_groups` (no decay on norms), `lr_at` (linear warmup,
cosine decay), gradient clipping, and `Metrics` writing `metrics.csv` in pretrain.train's
format. What it leaves out is DeepSpeed: one CPU process needs no ZeRO, and the plain loop is
the one bench/train_throughput.py measures DeepSpeed against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pretrain.config import TrainingConfig
from pretrain.dataset import TokenDataset
from pretrain.model import CausalLM, ModelConfig
from pretrain.train import METRICS_FILE, Metrics, batches, lr_at, param_groups, seed_everything


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
    stream = batches(data, training.micro_batch_size, torch.device("cpu"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    metrics = Metrics(out_dir / METRICS_FILE, enabled=True)
    seen, loss_value, clock = 0, float("nan"), time.perf_counter()
    for step in range(1, training.max_steps + 1):
        lr = lr_at(step, training)
        for group in optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for _ in range(training.grad_accum):
            batch = next(stream)
            loss = model(batch, labels=batch).loss
            (loss / training.grad_accum).backward()
            total += loss.item()
            seen += batch[:, 1:].numel()
        grad_norm = None
        if training.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                             training.grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = total / training.grad_accum
        now = time.perf_counter()
        step_tokens = training.micro_batch_size * training.grad_accum * training.seq_len
        metrics.write(step=step, split="train", loss=f"{loss_value:.8f}", lr=f"{lr:.6e}",
                      grad_norm=None if grad_norm is None else f"{grad_norm:.6f}", tokens=seen,
                      tokens_per_s=f"{step_tokens / (now - clock):.1f}",
                      time_s=f"{time.time():.3f}")
        clock = now
        if log is not None and (step % training.log_every == 0 or step == training.max_steps):
            log.info("  step %d/%d | loss %.4f | lr %.2e", step, training.max_steps,
                     loss_value, lr)
    model.eval()
    return TrainResult(model, seen, samples, samples / probe.samples_per_epoch, loss_value,
                       time.monotonic() - started)
