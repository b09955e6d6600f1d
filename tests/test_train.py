"""pretrain.train through the real `deepspeed` launcher (2 ranks on CPU, gloo) and
pretrain.export's CLI, on the tiny config and the real token shards of the test refine run."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.config import load_config
from pretrain.train import (
    batches,
    deepspeed_config,
    lr_at,
    parse_args,
    peak_flops_of,
    prefetched,
    prune_checkpoints,
    resolve_config,
    resume_mode,
)

pytest.importorskip("deepspeed")

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


@pytest.fixture(scope="module")
def runs(tokens_dir, tmp_path_factory) -> dict[int, Path]:
    """One 24-step, 2-rank run per ZeRO stage."""
    out = {}
    for stage in (1, 2, 3):
        out[stage] = tmp_path_factory.mktemp(f"zero{stage}") / "ckpt"
        log = launch(tokens_dir, out[stage], stage)
        assert f"rank 0 of {RANKS} on cpu: ZeRO stage {stage}, fp32" in log
    return out


# --- fast: no launcher ---------------------------------------------------------------------

def test_lr_schedule_warms_up_then_decays_to_min_lr():
    training = load_config(TINY).training  # lr 1e-3, min 1e-4, warmup 10, 200 steps
    assert lr_at(1, training) == pytest.approx(1e-4) and lr_at(10, training) == 1e-3
    assert lr_at(105, training) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr_at(200, training) == lr_at(500, training) == 1e-4
    lrs = [lr_at(s, training) for s in range(10, 201)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_flags_override_the_yaml_and_fill_the_deepspeed_json(tmp_path):
    args = parse_args(["--config", str(TINY), "--deepspeed_config", str(ZERO[3]), "--data", "x",
                       "--output", "y", "--lr", "5e-4", "--grad_accum", "3"])
    config = resolve_config(args)
    assert config.training.lr == 5e-4 and config.training.grad_accum == 3
    ds = deepspeed_config(ZERO[3], config.training, world_size=2, bf16_supported=False)
    assert ds["train_batch_size"] == 8 * 3 * 2 and ds["gradient_accumulation_steps"] == 3
    assert ds["optimizer"]["params"]["lr"] == 5e-4 and ds["gradient_clipping"] == 1.0
    assert ds["bf16"] == {"enabled": False} and ds["zero_optimization"]["stage"] == 3
    assert deepspeed_config(ZERO[1], config.training, 1, True)["bf16"] == {"enabled": True}
    conflicting = tmp_path / "ds.json"
    conflicting.write_text(json.dumps({"gradient_accumulation_steps": 4}))
    with pytest.raises(ValueError, match="gradient_accumulation_steps.*training YAML"):
        deepspeed_config(conflicting, config.training, 1, False)
    with pytest.raises(ValueError, match="min_lr"):
        resolve_config(parse_args(["--config", str(TINY), "--deepspeed_config", str(ZERO[1]),
                                   "--data", "x", "--output", "y", "--lr", "1e-5"]))


def test_compile_flag_overrides_the_yaml_and_is_refused_with_zero3():
    base = ["--config", str(TINY), "--data", "x", "--output", "y"]
    assert resolve_config(parse_args(base + ["--deepspeed_config", str(ZERO[1])])
                          ).training.compile is False  # tiny.yaml: eager
    compiled = resolve_config(parse_args(base + ["--deepspeed_config", str(ZERO[2]),
                                                 "--compile"])).training
    assert compiled.compile is True
    assert deepspeed_config(ZERO[2], compiled, 1, False)["zero_optimization"]["stage"] == 2
    with pytest.raises(ValueError, match="training.compile.*ZeRO stages 0-2.*--no-compile"):
        deepspeed_config(ZERO[3], compiled, 1, False)
    assert not resolve_config(parse_args(base + ["--deepspeed_config", str(ZERO[3]),
                                                 "--no-compile"])).training.compile


def test_resuming_on_another_number_of_ranks_names_the_conversion_command(tmp_path):
    assert resume_mode(tmp_path, 2, universal=False) is None
    tag = tmp_path / "global_step12"
    tag.mkdir()
    for rank in range(2):
        (tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").touch()
    (tmp_path / "latest").write_text("global_step12")
    assert resume_mode(tmp_path, 2, universal=False) == "latest"
    with pytest.raises(SystemExit, match="written by 2 ranks, this run has 1") as stop:
        resume_mode(tmp_path, 1, universal=False)
    assert (f"python -m deepspeed.checkpoint.ds_to_universal --input_folder {tag} "
            f"--output_folder {tag}_universal --inject_missing_state") in str(stop.value)
    (tmp_path / "latest_universal").write_text("global_step12_universal")
    assert resume_mode(tmp_path, 1, universal=True) == "latest_universal"


def test_help_explains_the_cli():
    done = subprocess.run([sys.executable, "pretrain/train.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert "--deepspeed_config" in done.stdout and "DS_ACCELERATOR=cpu" in done.stdout


def test_bf16_accumulates_gradients_in_fp32():
    training = load_config(TINY).training
    for stage in (1, 2, 3):
        ds = deepspeed_config(ZERO[stage], training, world_size=2, bf16_supported=True)
        assert ds["bf16"] == {"enabled": True}
        assert ds["data_types"] == {"grad_accum_dtype": "fp32"}
    assert "data_types" not in deepspeed_config(ZERO[1], training, 2, bf16_supported=False)


def test_peak_flops_table_tells_the_h100_variants_apart():
    names = {  # torch.cuda.get_device_name() -> (bf16, fp32 via TF32)
        "NVIDIA H100 80GB HBM3": (989e12, 494e12),  # SXM
        "NVIDIA H100 PCIe": (756e12, 378e12),
        "NVIDIA H100 NVL": (835e12, 418e12),
        "NVIDIA H200": (989e12, 494e12),
        "NVIDIA H200 NVL": (835e12, 418e12),
        "NVIDIA A100-SXM4-80GB": (312e12, 156e12),
        "NVIDIA A100 80GB PCIe": (312e12, 156e12),
        "NVIDIA A100-PCIE-40GB": (312e12, 156e12),
        "NVIDIA L40S": (362e12, 183e12),
        "NVIDIA A10": (125e12, 62.5e12),
    }
    for name, (bf16, tf32) in names.items():
        assert (peak_flops_of(name, True), peak_flops_of(name, False)) == (bf16, tf32), name
    for unknown in ("NVIDIA L40", "NVIDIA GeForce RTX 4090", "Tesla T4", "NVIDIA A1000",
                    "NVIDIA A10G"):
        assert peak_flops_of(unknown, True) is None, unknown


def test_keep_latest_k_deletes_older_tags_but_never_latest(tmp_path):
    for step in (10, 20, 30, 40):
        (tmp_path / f"global_step{step}").mkdir()
        (tmp_path / f"global_step{step}" / "x.pt").write_bytes(b"x")
    (tmp_path / "global_step20_universal").mkdir()
    (tmp_path / "latest").write_text("global_step40")
    assert prune_checkpoints(tmp_path, 2) == [tmp_path / "global_step20",
                                              tmp_path / "global_step10"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["global_step20_universal", "global_step30", "global_step40", "latest"]
    # a newer tag that `latest` does not name (a save that died) never pushes latest out
    (tmp_path / "global_step50").mkdir()
    assert prune_checkpoints(tmp_path, 1) == [tmp_path / "global_step30"]
    assert sorted(p.name for p in tmp_path.glob("global_step??")) == ["global_step40",
                                                                       "global_step50"]
    assert resolve_config(parse_args(["--config", str(TINY), "--deepspeed_config", str(ZERO[1]),
                                      "--data", "x", "--output", "y", "--keep_latest_k", "3"])
                          ).training.keep_latest_k == 3


def test_batches_are_prefetched_in_order_and_errors_surface(tmp_path):
    from pretrain.dataset import TokenDataset, write_synthetic_tokens

    tokens = write_synthetic_tokens(tmp_path / "tokens", vocab_size=500, train_tokens=20_000,
                                    val_tokens=1000)
    dataset = TokenDataset(tokens, 32, seed=1)
    plain = list(batches(dataset, 4, torch.device("cpu"), prefetch=0))
    ahead = list(batches(dataset, 4, torch.device("cpu"), prefetch=2))
    assert len(plain) == len(dataset) // 4 and len(ahead) == len(plain)
    assert all(torch.equal(a, b) for a, b in zip(plain, ahead, strict=True))
    assert plain[0].dtype == torch.int64 and plain[0].shape == (4, 33)

    def failing():
        yield 1
        raise OSError("disk gone")

    source = prefetched(failing(), 2)
    assert next(source) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(source)
    endless = prefetched(iter(range(10**9)), 2)
    assert [next(endless) for _ in range(3)] == [0, 1, 2]
    endless.close()  # stops its thread


def test_gpu_deepspeed_configs_overlap_communication_and_keep_small_params_resident():
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    training = load_config(ROOT / "configs" / "pretrain" / "125m.yaml").training
    for stage in (1, 2, 3):
        path = ROOT / "configs" / "deepspeed" / "gpu" / f"zero{stage}.json"
        ds = deepspeed_config(path, training.model_copy(update={"compile": stage < 3}), 8, True)
        zero = DeepSpeedZeroConfig(**ds["zero_optimization"])  # DeepSpeed's own validation
        assert zero.stage == stage and zero.overlap_comm and zero.contiguous_gradients
        assert ds["data_types"] == {"grad_accum_dtype": "fp32"} and ds["bf16"]["enabled"]
        if stage == 3:
            assert zero.param_persistence_threshold >= 1e4  # norms stay gathered
            assert zero.prefetch_bucket_size > 0


# --- slow: the real launcher -----------------------------------------------------------------

@pytest.mark.slow
def test_a_rank_leaves_the_process_group_and_exits_without_finalizing():
    """The end of every pretrain.train / pretrain.finetune process: shutdown_distributed
    destroys the process group, exit_process ends the process with the code, its buffered
    output flushed and no interpreter finalization (the atexit hook never runs), so gloo
    threads DeepSpeed keeps alive cannot abort the exit (see exit_process)."""
    script = "\n".join([
        "import atexit, torch, torch.distributed as dist",
        "from pretrain.train import exit_process, init_distributed, shutdown_distributed",
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


# --- slow: bf16 on CPU (DeepSpeed's CPU accelerator runs bf16; the JSON forces it on) -------

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
    from pretrain.export import consolidated_state_dict, save_hf_model
    from pretrain.model import ModelConfig

    straight = tmp_path / "straight" / "ckpt"
    straight.parent.mkdir()
    log = launch_bf16(synthetic_tokens, straight, stage)
    assert f"rank 0 of {RANKS} on cpu: ZeRO stage {stage}, bf16" in log
    tag = straight / f"global_step{BF16_STEPS}"
    from pretrain.export import is_bf16_optimizer_checkpoint

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
def test_gpu_check_script_runs_on_cpu_and_leaves_nothing_behind(tmp_path):
    """bench/gpu_check.sh with GPU_CHECK_CPU=1 (tiny config, 3 steps, CPU) against the wheels
    of `make gpu-bundle`: one JSON line, its temporary directory removed."""
    bundle = ROOT / "build" / "gpu-bundle"
    if not list(bundle.glob("deepspeed-*.whl")):
        pytest.skip("no build/gpu-bundle: run `make gpu-bundle`")
    env = os.environ | {"GPU_CHECK_CPU": "1", "PYTHON": sys.executable, "TMPDIR": str(tmp_path),
                        "GPU_CHECK_BUDGET_S": "900"}  # a shared 2-core CPU, not a GPU's 8 min
    done = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["steps"] == 3
    assert result["tokens_per_s"] > 0 and result["mfu"] is None
    assert result["loss_first"] > result["loss_last"] > 0
    assert result["export_bf16_logits_max_abs_diff"] < 0.5  # bf16 rounding of logits ~10
    assert list(tmp_path.iterdir()) == []  # TMPDIR: every file it wrote was in one directory


@pytest.mark.slow
def test_logged_loss_is_the_mean_of_the_micro_batch_losses(synthetic_tokens, tmp_path):
    """The step's loss, summed on the device and synced once per step, is what one
    .item() per micro-batch gave: the mean over the grad_accum micro-batches, here
    recomputed from the same initial weights and batches outside DeepSpeed."""
    from pretrain.dataset import TokenDataset
    from pretrain.model import CausalLM
    from pretrain.train import seed_everything

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
