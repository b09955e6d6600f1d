"""pretrain.train under bf16 on CPU (DeepSpeed's CPU accelerator runs bf16; the JSON forces it
on), and the logged loss recomputed outside DeepSpeed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.config import load_config
from pretrain.train import parse_args, resolve_config

from .train_launch import DEEPSPEED, FLAGS, MICRO, RANKS, ROOT, TINY, ZERO, free_port, metrics

pytest.importorskip("deepspeed")

BF16_STEPS = 12


@pytest.fixture(scope="module")
def synthetic_tokens(tmp_path_factory) -> Path:
    from pretrain.dataset import write_synthetic_tokens

    return write_synthetic_tokens(tmp_path_factory.mktemp("bf16") / "tokens", vocab_size=3000,
                                  train_tokens=200_000, val_tokens=20_000)


def bf16_json(stage: int, where: Path) -> Path:
    """configs/deepspeed/zero{stage}.json with bf16 on (its "auto" means off on CPU)."""
    ds = json.loads(ZERO[stage].read_text()) | {"bf16": {"enabled": True}}
    path = where / f"zero{stage}-bf16.json"
    path.write_text(json.dumps(ds))
    return path


def launch_bf16(tokens: Path, out: Path, stage: int, *flags: str) -> str:
    env = os.environ | {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    command = [str(DEEPSPEED), "--num_gpus", str(RANKS), "--master_port", str(free_port()),
               "pretrain/train.py", "--config", str(TINY), "--deepspeed_config",
               str(bf16_json(stage, out.parent)), "--data", str(tokens), "--output", str(out),
               *FLAGS, "--max_steps", str(BF16_STEPS), "--checkpoint_every", "6",
               "--eval_every", "6", *flags]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_bf16_trains_resumes_exactly_and_exports_under_every_zero_stage(
        stage, synthetic_tokens, tmp_path):
    """bf16 with fp32 gradient accumulation (ZeRO-1: DeepSpeed's BF16_Optimizer): the loss
    falls; stopping at step 6 and resuming gives the straight run's losses; the export holds
    the fp32 master weights (whose bf16 rounding is the module's weights), loads in
    transformers and scores the validation batches as training did (bf16 vs fp32 compute)."""
    transformers = pytest.importorskip("transformers")
    import shutil

    from pretrain.dataset import TokenDataset
    from pretrain.export import save_hf_model
    from pretrain.model import ModelConfig
    from pretrain.training.engine import consolidated_state_dict, is_bf16_optimizer_checkpoint

    straight = tmp_path / "straight" / "ckpt"
    straight.parent.mkdir()
    log = launch_bf16(synthetic_tokens, straight, stage)
    assert f"rank 0 of {RANKS} on cpu: ZeRO stage {stage}, bf16" in log
    tag = straight / f"global_step{BF16_STEPS}"
    assert is_bf16_optimizer_checkpoint(tag) == (stage == 1)  # ZeRO-1: BF16_Optimizer
    train = metrics(straight)
    assert sorted(train) == list(range(1, BF16_STEPS + 1))
    first, last = sum(train[s] for s in (1, 2, 3)) / 3, sum(train[s] for s in (10, 11, 12)) / 3
    assert last < first - 0.3, (first, last)

    # resume: the step-6 checkpoint alone, with an older leftover tag keep_latest_k deletes
    resumed = tmp_path / "resumed" / "ckpt"
    resumed.mkdir(parents=True)
    shutil.copytree(straight / "global_step6", resumed / "global_step6")
    (resumed / "global_step3").mkdir()
    (resumed / "latest").write_text("global_step6")
    shutil.copyfile(straight / "metrics.csv", resumed / "metrics.csv")
    log = launch_bf16(synthetic_tokens, resumed, stage, "--keep_latest_k", "1")
    assert f"resumed from {resumed / 'global_step6'} at step 6" in log
    again = metrics(resumed)
    for step in range(7, BF16_STEPS + 1):
        assert abs(again[step] - train[step]) <= 1e-6, (step, again[step], train[step])
    assert metrics(resumed, "val") == pytest.approx(metrics(straight, "val"), abs=1e-6)
    assert sorted(p.name for p in resumed.glob("global_step*")) == [f"global_step{BF16_STEPS}"]

    # export: fp32 master weights, equal for the straight and the resumed run
    weights = consolidated_state_dict(straight, f"global_step{BF16_STEPS}")
    other = consolidated_state_dict(resumed, f"global_step{BF16_STEPS}")
    assert all(torch.equal(weights[name], other[name]) for name in weights)
    assert all(w.dtype == torch.float32 for w in weights.values())
    if stage < 3:  # ZeRO-3's module states hold no weights
        module = torch.load(tag / "mp_rank_00_model_states.pt", map_location="cpu",
                            weights_only=False)["module"]
        for name, tensor in module.items():
            assert tensor.dtype == torch.bfloat16
            assert torch.equal(weights[name].to(torch.bfloat16), tensor), name
    model_config = ModelConfig(**json.loads((tag / "train_state.json").read_text())["model"])
    out = save_hf_model(weights, model_config, tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    losses = []
    seq_len, seed = load_config(TINY).training.seq_len, load_config(TINY).training.seed
    for rank in range(RANKS):
        val = TokenDataset(synthetic_tokens, seq_len, "val", seed, rank, RANKS, epochs=50)
        for start in (0, MICRO):
            batch = torch.from_numpy(np.stack([val[i] for i in range(start, start + MICRO)]))
            with torch.no_grad():
                losses.append(hf(batch, labels=batch).loss.item())
    logged = metrics(straight, "val")[BF16_STEPS]
    assert sum(losses) / len(losses) == pytest.approx(logged, abs=0.05)


@pytest.mark.slow
def test_compiled_bf16_training_under_zero2_on_two_ranks_follows_eager(synthetic_tokens,
                                                                       tmp_path):
    """--compile under ZeRO-2, bf16, two ranks (as the 125m/350m configs train on GPUs): the
    losses follow the eager run's within bf16's rounding, the first step's compile time is
    logged apart (compile_s) and the checkpoint's weights keep their names."""
    import csv

    from pretrain.training.engine import consolidated_state_dict

    runs = {}
    for mode in ("--compile", "--no-compile"):
        out = tmp_path / mode.strip("-") / "ckpt"
        out.parent.mkdir()
        log = launch_bf16(synthetic_tokens, out, 2, mode)
        assert ("decoder layers and loss compiled" in log) == (mode == "--compile")
        runs[mode] = out
    compiled, eager = metrics(runs["--compile"]), metrics(runs["--no-compile"])
    assert sorted(compiled) == list(range(1, BF16_STEPS + 1))
    for step in compiled:
        assert compiled[step] == pytest.approx(eager[step], abs=0.03), step
    assert sum(compiled[s] for s in (10, 11, 12)) < sum(compiled[s] for s in (1, 2, 3)) - 0.9
    with open(runs["--compile"] / "metrics.csv", newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row["split"] == "train"]
    # compiling for validation (eval mode) at step 6 is neither step 7's compile_s nor
    # subtracted from its time (which gave 2e12 tokens/s)
    assert float(rows[0]["compile_s"]) > 1 and not any(row["compile_s"] for row in rows[1:])
    speeds = sorted(float(row["tokens_per_s"]) for row in rows)
    assert speeds[-1] < 10 * speeds[len(speeds) // 2], speeds
    tag = f"global_step{BF16_STEPS}"
    weights = consolidated_state_dict(runs["--compile"], tag)
    assert sorted(weights) == sorted(consolidated_state_dict(runs["--no-compile"], tag))


@pytest.mark.slow
def test_logged_loss_is_the_mean_of_the_micro_batch_losses(synthetic_tokens, tmp_path):
    """The step's loss, summed on the device and synced once per step, is what one
    .item() per micro-batch gave: the mean over the grad_accum micro-batches, here
    recomputed from the same initial weights and batches outside DeepSpeed."""
    from pretrain.dataset import TokenDataset
    from pretrain.model import CausalLM
    from pretrain.training.loop import seed_everything

    out, accum, micro = tmp_path / "ckpt", 3, 4
    command = [sys.executable, "pretrain/train.py", "--config", str(TINY), "--deepspeed_config",
               str(ZERO[1]), "--data", str(synthetic_tokens), "--output", str(out), *FLAGS,
               "--steps", "1", "--grad_accum", str(accum), "--micro_batch_size", str(micro)]
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run(command, cwd=ROOT, env=environ | {"OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    config = resolve_config(parse_args(["--config", str(TINY), "--deepspeed_config",
                                        str(ZERO[1]), "--data", "x", "--output", "y"]))
    training = config.training
    seed_everything(training.seed)
    model = CausalLM(config.model_for(3000)).eval()
    data = TokenDataset(synthetic_tokens, training.seq_len, "train", training.seed)
    losses = []
    with torch.no_grad():
        for k in range(accum):
            batch = torch.from_numpy(np.stack([data[i] for i in range(k * micro,
                                                                      (k + 1) * micro)]))
            losses.append(model(batch, labels=batch).loss.item())
    assert metrics(out)[1] == pytest.approx(sum(losses) / accum, abs=1e-6)
