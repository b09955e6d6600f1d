"""pretrain.train through the real `deepspeed` launcher (2 ranks on CPU, gloo) and
pretrain.export's CLI, on the tiny config and the real token shards of the test refine run."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.config import load_config

from .train_launch import (
    ACCUM,
    DEEPSPEED,
    FLAGS,
    MICRO,
    RANKS,
    ROOT,
    STEPS,
    TINY,
    ZERO,
    consolidated,
    free_port,
    launch,
    metrics,
)

pytest.importorskip("deepspeed")


@pytest.fixture(scope="module")
def runs(tokens_dir, tmp_path_factory) -> dict[int, Path]:
    """One 24-step, 2-rank run per ZeRO stage."""
    out = {}
    for stage in (1, 2, 3):
        out[stage] = tmp_path_factory.mktemp(f"zero{stage}") / "ckpt"
        log = launch(tokens_dir, out[stage], stage)
        assert f"rank 0 of {RANKS} on cpu: ZeRO stage {stage}, fp32" in log
    return out

# --- slow: the real launcher -----------------------------------------------------------------

@pytest.mark.slow
def test_a_rank_leaves_the_process_group_and_exits_without_finalizing():
    """The end of every pretrain.train / pretrain.finetune process: shutdown_distributed
    destroys the process group, exit_process ends the process with the code, its buffered
    output flushed and no interpreter finalization (the atexit hook never runs), so gloo
    threads DeepSpeed keeps alive cannot abort the exit (see exit_process)."""
    script = "\n".join([
        "import atexit, torch, torch.distributed as dist",
        "from pretrain.training.engine import exit_process, init_distributed, shutdown_distributed",
        "atexit.register(print, 'finalized')",
        "init_distributed()",
        "total = torch.ones(3)",
        "dist.all_reduce(total)",
        "print('sum', total.sum().item())",  # stdout is a pipe: this stays in the buffer
        "shutdown_distributed(succeeded=True)",
        "print('initialized', dist.is_initialized())",
        "exit_process(3)"])
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=environ | {"DS_ACCELERATOR": "cpu"})
    assert done.returncode == 3, done.stderr[-3000:]
    assert done.stdout.splitlines()[-2:] == ["sum 3.0", "initialized False"], done.stdout
    assert "finalized" not in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_loss_falls_under_every_zero_stage(runs, stage, tokenizer_dir):
    train, val = metrics(runs[stage]), metrics(runs[stage], "val")
    assert sorted(train) == list(range(1, STEPS + 1)) and sorted(val) == [12, STEPS]
    first, last = sum(train[s] for s in (1, 2, 3)) / 3, sum(train[s] for s in (22, 23, 24)) / 3
    assert first > math.log(3000) - 0.5  # starts near uniform over the vocabulary
    assert last < first - 0.5, (first, last)
    assert val[STEPS] < first - 0.5 and val[12] < first - 0.5
    assert (runs[stage] / "latest").read_text() == f"global_step{STEPS}"
    state = json.loads((runs[stage] / f"global_step{STEPS}" / "train_state.json").read_text())
    assert state["step"] == STEPS and state["zero_stage"] == stage
    assert state["consumed_samples"] == STEPS * MICRO * ACCUM * RANKS
    assert state["world_size"] == RANKS and state["training"]["lr"] == 3e-3
    with open(runs[stage] / "metrics.csv", newline="") as stream:
        row = next(csv.DictReader(stream))
    assert float(row["tokens_per_s"]) > 0 and row["mfu"] == ""  # CPU: no known peak


@pytest.mark.slow
def test_rerun_resumes_from_latest_and_matches_a_straight_run(runs, tokens_dir, tmp_path):
    """24 steps straight == 12 steps, stop, resume to 24: losses and final weights."""
    stage = 3
    out = tmp_path / "ckpt"
    launch(tokens_dir, out, stage, "--steps", "12")
    assert (out / "latest").read_text() == "global_step12" and max(metrics(out)) == 12
    # a save that died mid-write: its directory exists, `latest` never named it
    (out / "global_step18").mkdir()
    (out / "global_step18" / "mp_rank_00_model_states.pt").write_bytes(b"truncated")
    log = launch(tokens_dir, out, stage)
    assert f"resumed from {out / 'global_step12'} at step 12" in log
    straight, resumed = metrics(runs[stage]), metrics(out)
    assert sorted(resumed) == sorted(straight)
    for step in straight:
        assert abs(resumed[step] - straight[step]) <= 1e-6, step
    assert metrics(out, "val") == pytest.approx(metrics(runs[stage], "val"), abs=1e-6)
    a, b = consolidated(runs[stage]), consolidated(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 3])
def test_exported_checkpoint_loads_in_transformers_with_the_training_models_logits(
        runs, stage, tokens_dir, tokenizer_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    from pretrain.dataset import TokenDataset
    from pretrain.model import CausalLM, ModelConfig

    out = tmp_path / "hf"
    done = subprocess.run([sys.executable, "-m", "pretrain.export", str(runs[stage]), str(out),
                           "--tokenizer", str(tokenizer_dir)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert transformers.AutoTokenizer.from_pretrained(out).eos_token_id == 2

    # the validation batches the training run evaluated on (rank r: its first eval_steps
    # micro-batches), real text tokens; the run logged their mean loss at the last step
    seq_len, seed = load_config(TINY).training.seq_len, load_config(TINY).training.seed
    losses, windows = [], []
    for rank in range(RANKS):
        val = TokenDataset(tokens_dir, seq_len, "val", seed, rank, RANKS, epochs=50)
        for start in (0, MICRO):
            batch = torch.from_numpy(np.stack([val[i] for i in range(start, start + MICRO)]))
            windows.append(batch)
            with torch.no_grad():
                losses.append(hf(batch, labels=batch).loss.item())
    assert sum(losses) / len(losses) == pytest.approx(metrics(runs[stage], "val")[STEPS],
                                                      abs=1e-5)
    if stage == 3:
        return  # ZeRO-3's module states hold no weights: the loss above is the reference
    # ZeRO-1: the checkpoint's module state is the training model's own fp32 weights
    states = torch.load(runs[stage] / f"global_step{STEPS}" / "mp_rank_00_model_states.pt",
                        map_location="cpu", weights_only=False)
    model_config = ModelConfig(**json.loads(
        (runs[stage] / f"global_step{STEPS}" / "train_state.json").read_text())["model"])
    ours = CausalLM(model_config)
    ours.load_state_dict(states["module"])
    with torch.no_grad():
        for batch in windows:
            expected, got = ours.eval()(batch).logits, hf(batch).logits
            assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.slow
def test_two_rank_checkpoint_resumes_on_one_rank_through_a_universal_checkpoint(
        runs, tokens_dir, tmp_path):
    """ZeRO-3, 2 ranks to step 12 -> ds_to_universal -> plain `python pretrain/train.py` (1 rank,
    twice the grad_accum: the same global batch of the same samples) to step 24 == the 2-rank
    run: step 13's loss exactly (weights restored), later ones up to the rounding of another
    reduction order, which Adam amplifies a little (measured: <= 2.4e-4 nats)."""
    import shutil

    out = tmp_path / "ckpt"
    shutil.copytree(runs[3], out)
    (out / "latest").write_text("global_step12")  # as if the 2-rank run had stopped there
    command = [sys.executable, "pretrain/train.py", "--config", str(TINY), "--deepspeed_config",
               str(ZERO[3]), "--data", str(tokens_dir), "--output", str(out), *FLAGS,
               "--grad_accum", str(ACCUM * RANKS)]
    env = os.environ | {"OMP_NUM_THREADS": "2"}
    refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    convert = (f"python -m deepspeed.checkpoint.ds_to_universal --input_folder "
               f"{out / 'global_step12'} --output_folder {out / 'global_step12_universal'} "
               "--inject_missing_state")
    assert convert in refused.stderr
    subprocess.run([sys.executable, *convert.split()[1:]], cwd=ROOT, check=True,
                   capture_output=True)
    done = subprocess.run([*command, "--universal"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "resumed from" in done.stderr and "global_step12_universal at step 12" in done.stderr
    straight, resumed = metrics(runs[3]), metrics(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert resumed[13] == pytest.approx(straight[13], abs=1e-6)
    for step in range(14, STEPS + 1):
        assert resumed[step] == pytest.approx(straight[step], abs=1e-3), step


@pytest.mark.slow
def test_a_killed_rank_is_relaunched_from_the_last_complete_checkpoint(runs, tokens_dir,
                                                                      tmp_path):
    """SIGKILL one of the two ranks after the step-12 checkpoint: the launcher fails the job;
    the same command again resumes from step 12 and the later losses equal a straight run's."""
    import signal
    import time

    import psutil

    stage, out = 1, tmp_path / "ckpt"
    env = os.environ | {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    # many more steps than the straight run, so that the kill surely lands mid-run
    command = [str(DEEPSPEED), "--num_gpus", str(RANKS), "--master_port", str(free_port()),
               "pretrain/train.py", "--config", str(TINY), "--deepspeed_config", str(ZERO[stage]),
               "--data", str(tokens_dir), "--output", str(out), *FLAGS, "--steps", "400"]
    launcher = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ((out / "latest").exists() and (out / "latest").read_text() == "global_step12"):
        assert launcher.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    def command_line(proc: psutil.Process) -> str:
        try:
            return " ".join(proc.cmdline())
        except psutil.Error:
            return ""

    ranks = [p for p in psutil.Process(launcher.pid).children(recursive=True)
             if "--local_rank" in command_line(p)]  # not deepspeed.launcher.launch
    assert len(ranks) == RANKS
    max(ranks, key=lambda p: p.pid).send_signal(signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0
    assert (out / "latest").read_text() == "global_step12"
    log = launch(tokens_dir, out, stage)
    assert f"resumed from {out / 'global_step12'} at step 12" in log
    straight, resumed = metrics(runs[stage]), metrics(out)
    for step in range(13, STEPS + 1):
        assert abs(resumed[step] - straight[step]) <= 1e-6, step

