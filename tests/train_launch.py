"""What the pretrain.train tests share: the tiny config, the DeepSpeed JSONs, the flags of a short
run, and `launch`: `DS_ACCELERATOR=cpu deepspeed --num_gpus 2 pretrain/train.py ...`."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "pretrain" / "tiny.yaml"
ZERO = {stage: ROOT / "configs" / "deepspeed" / f"zero{stage}.json" for stage in (1, 2, 3)}
DEEPSPEED = Path(sys.executable).parent / "deepspeed"
RANKS, STEPS, MICRO, ACCUM = 2, 24, 4, 2
# a short run that learns visibly; eval and checkpoint at the middle and the end
FLAGS = ["--max_steps", str(STEPS), "--warmup_steps", "4", "--lr", "3e-3", "--min_lr", "3e-4",
         "--micro_batch_size", str(MICRO), "--grad_accum", str(ACCUM), "--eval_every", "12",
         "--checkpoint_every", "12", "--log_every", "6", "--eval_steps", "2"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(tokens: Path, out: Path, stage: int, *flags: str) -> str:
    """`DS_ACCELERATOR=cpu deepspeed --num_gpus 2 pretrain/train.py ...`; its output."""
    env = os.environ | {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    port = free_port()
    command = [str(DEEPSPEED), "--num_gpus", str(RANKS), "--master_port", str(port),
               "pretrain/train.py", "--config", str(TINY), "--deepspeed_config", str(ZERO[stage]),
               "--data", str(tokens), "--output", str(out), *FLAGS, *flags]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    # DeepSpeed's CPU all-reduce buffers are released, not left in /dev/shm
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    return output


def metrics(out: Path, split: str = "train") -> dict[int, float]:
    with open(out / "metrics.csv", newline="") as stream:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(stream)
                if row["split"] == split}


def consolidated(out: Path, tag: str | None = None) -> dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(out), tag=tag)

