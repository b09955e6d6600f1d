"""pretrain.train's pieces without a launcher: flags and configs, the lr schedule, the peak
FLOP/s table, checkpoint tags and the batch prefetching."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pretrain.config import load_config
from pretrain.train import parse_args, resolve_config
from pretrain.training.checkpoints import prune_checkpoints, resume_mode
from pretrain.training.engine import deepspeed_config
from pretrain.training.loop import batches, lr_at, prefetched
from pretrain.training.metrics import peak_flops_of

from .train_launch import ROOT, TINY, ZERO

pytest.importorskip("deepspeed")


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


def test_throughput_leaves_compile_time_out_and_evaluation_with_its_compiling(monkeypatch):
    """A step's compile seconds are reported apart and left out of its tokens/s; time and
    compiling (eval mode recompiles) between a step and `restart` count in no step."""
    from types import SimpleNamespace

    from pretrain.training import metrics

    now, compiled = [100.0], [0.0]
    monkeypatch.setattr(metrics, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(metrics, "compile_seconds", lambda: compiled[0])
    throughput = metrics.Throughput(1000, flops_per_token=6.0, peak=12000.0)
    now[0], compiled[0] = 101.0, 0.5  # the first step: 1 s, half of it compiling
    assert throughput.lap() == (2000.0, 1.0, 0.5)
    now[0], compiled[0] = 105.0, 3.5  # validation: 4 s, 3 of them compiling
    throughput.restart()
    now[0] = 106.0
    assert throughput.lap() == (1000.0, 0.5, 0.0)


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

