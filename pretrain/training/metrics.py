"""metrics.csv (one row per optimizer step and per evaluation), throughput and MFU."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.csv"
METRICS = ("step", "split", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu", "time_s",
           "compile_s")
# Dense (no sparsity) peak FLOP/s per device for MFU, by a pattern of
# torch.cuda.get_device_name(): (bf16 tensor cores, TF32 tensor cores, which fp32 training
# uses: `train` enables TF32 on CUDA). First match wins, so the variants come before the plain
# name: "NVIDIA H100 PCIe" and "NVIDIA H100 NVL" are not the SXM part ("NVIDIA H100 80GB HBM3").
PEAK_FLOPS: list[tuple[str, float, float]] = [
    (r"H100.*\bNVL\b", 835e12, 418e12),
    (r"H100.*\bPCIe\b", 756e12, 378e12),
    (r"H100\b", 989e12, 494e12),  # SXM
    (r"H200.*\bNVL\b", 835e12, 418e12),
    (r"H200\b", 989e12, 494e12),
    (r"A100\b", 312e12, 156e12),  # SXM and PCIe alike
    (r"L40S\b", 362e12, 183e12),
    (r"\bA10\b", 125e12, 62.5e12),  # not the A10G (AWS), whose peaks differ
]


def peak_flops_of(name: str, bf16: bool) -> float | None:
    """The PEAK_FLOPS entry of a device name (bf16, else TF32), or None for an unknown one."""
    for pattern, bf16_peak, tf32_peak in PEAK_FLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return bf16_peak if bf16 else tf32_peak
    return None


def peak_flops(device: torch.device, bf16: bool, declared: float | None) -> float | None:
    """Peak FLOP/s of one device: the declared value, a table entry for known GPUs, or None."""
    if declared is not None:
        return declared
    if device.type != "cuda":
        return None
    return peak_flops_of(torch.cuda.get_device_name(device), bf16)


def compile_seconds() -> float:
    """Seconds torch.compile has spent in this process so far: dynamo + inductor on the first
    forward of each compiled layer, and the backward graph's compilation on its first
    backward (AOTAutograd compiles it lazily). 0 when nothing was compiled."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:  # pragma: no cover - torch without dynamo
        return 0.0
    return sum(sum(compilation_time_metrics.get(key, ()))
               for key in ("_compile.compile_inner", "backward._backward_impl"))


class Throughput:
    """Tokens/s and MFU of each optimizer step since the last `lap` or `restart`, leaving out
    torch.compile's time (the first step, a recompile), which `lap` reports on its own."""

    def __init__(self, tokens_per_step: int, flops_per_token: float = 0.0,
                 peak: float | None = None):
        self.tokens_per_step, self.flops_per_token, self.peak = (tokens_per_step,
                                                                 flops_per_token, peak)
        self.restart()

    def restart(self) -> None:
        """Time spent since (evaluation, a checkpoint) is not training throughput, nor is
        compiling meanwhile (eval mode recompiles the layers): neither counts in the next lap."""
        self.clock, self.compiled = time.perf_counter(), compile_seconds()

    def lap(self) -> tuple[float, float | None, float]:
        """(tokens/s, MFU or None without a peak, torch.compile seconds) of the step."""
        now, compiled = time.perf_counter(), compile_seconds()
        compile_s = compiled - self.compiled
        tokens_per_s = self.tokens_per_step / max(now - self.clock - compile_s, 1e-9)
        self.clock, self.compiled = now, compiled
        mfu = self.flops_per_token * tokens_per_s / self.peak if self.peak else None
        return tokens_per_s, mfu, compile_s


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows after `step` (left by a run that died after its last checkpoint)."""
    if not path.is_file():
        return
    with open(path, newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if int(row["step"]) <= step]
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=METRICS)
        writer.writeheader()
        writer.writerows(rows)


class Metrics:
    """metrics.csv in CKPT (rank 0 writes; other ranks hold a no-op)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, **row: Any) -> None:
        if not self.enabled:
            return
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=METRICS)
            if new:
                writer.writeheader()
            writer.writerow({key: "" if row.get(key) is None else row[key] for key in METRICS})

    def train(self, step: int, loss: float, lr: float, grad_norm: float | None, tokens: int,
              tokens_per_s: float, mfu: float | None = None, compile_s: float = 0.0) -> None:
        """The "train" row of an optimizer step."""
        self.write(step=step, split="train", loss=f"{loss:.8f}", lr=f"{lr:.6e}",
                   grad_norm=None if grad_norm is None else f"{grad_norm:.6f}", tokens=tokens,
                   tokens_per_s=f"{tokens_per_s:.1f}", mfu=None if mfu is None else f"{mfu:.4f}",
                   time_s=f"{time.time():.3f}", compile_s=f"{compile_s:.3f}" if compile_s else None)

    def val(self, step: int, loss: float, lr: float, tokens: int) -> None:
        """The "val" row of an evaluation after optimizer step `step`."""
        self.write(step=step, split="val", loss=f"{loss:.8f}", lr=f"{lr:.6e}", tokens=tokens,
                   time_s=f"{time.time():.3f}")
