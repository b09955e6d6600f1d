"""Everything that touches DeepSpeed (the only module under pretrain/ that imports it): the
filled DeepSpeed config, the process group, the engine and its optimizer step, collectives,
and the one way to whole fp32 weights, from a live engine or from a checkpoint on disk."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor

from pretrain.config import ConfigError, TrainingConfig
from pretrain.host_memory import keep_freed_memory
from pretrain.training.loop import param_groups
from refine import LOG_FORMAT


def deepspeed_config(path: Path, training: TrainingConfig, world_size: int,
                     bf16_supported: bool) -> dict[str, Any]:
    """The DeepSpeed JSON with its `"auto"` values filled from the YAML. A value the YAML
    owns may only be "auto" or absent in the JSON: two sources of truth would disagree."""
    ds = json.loads(path.read_text())
    owned = {
        "train_micro_batch_size_per_gpu": training.micro_batch_size,
        "gradient_accumulation_steps": training.grad_accum,
        "train_batch_size": training.micro_batch_size * training.grad_accum * world_size,
        "gradient_clipping": training.grad_clip,
        "optimizer": {"type": "AdamW", "params": {
            "lr": training.lr, "betas": list(training.betas), "eps": 1e-8,
            "weight_decay": training.weight_decay,
            # torch's AdamW, not DeepSpeed's (whose fused kernel is a 4-minute JIT build), with
            # its fused kernel (CPU and CUDA): no per-step temporaries as big as the model
            "torch_adam": True, "fused": True}},
    }
    for key, value in owned.items():
        if ds.get(key, "auto") != "auto":
            raise ConfigError(f"{path}: {key!r} comes from the training YAML; set it to \"auto\" "
                              "there and use the YAML or a flag instead")
        ds[key] = value
    bf16 = ds.setdefault("bf16", {"enabled": "auto"})
    if bf16.get("enabled") == "auto":
        bf16["enabled"] = bf16_supported
    if bf16["enabled"]:
        # gradients accumulate over grad_accum micro-batches in fp32, not bf16 (under ZeRO-1
        # this is DeepSpeed's BF16_Optimizer; pretrain.export reads its checkpoints too)
        ds.setdefault("data_types", {}).setdefault("grad_accum_dtype", "fp32")
    if ds.get("fp16", {}).get("enabled") is True:
        raise ConfigError(f"{path}: fp16 is not supported (use bf16)")
    if training.compile and ds.get("zero_optimization", {}).get("stage", 0) == 3:
        # tried: same losses, but ZeRO-3's parameter-gathering hooks make dynamo recompile
        # the layers up to its recompile limit and then run them eager, with a page of warnings
        raise ConfigError(f"{path}: training.compile works with ZeRO stages 0-2 (ZeRO-3's "
                          "parameter-gathering hooks defeat it); use --no-compile with ZeRO-3")
    return ds


def bf16_supported(device: torch.device) -> bool:
    """Whether "bf16": {"enabled": "auto"} means bf16 on `device` (never on CPU)."""
    from deepspeed.accelerator import get_accelerator

    return device.type != "cpu" and get_accelerator().is_bf16_supported()


def quiet_deepspeed() -> None:
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # we log what happened ourselves
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated")


def log_from_rank_zero(rank: int, *quiet: logging.Logger) -> None:
    """INFO logs on rank 0; on the other ranks the `quiet` loggers only warn."""
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT,
                            force=True)
        return
    for logger in quiet:
        logger.setLevel(logging.WARNING)


# --- the process group -----------------------------------------------------------------------

def single_process_env() -> None:
    """When not started by a launcher, be rank 0 of 1 (torch.distributed needs these)."""
    if "RANK" in os.environ:
        return
    with socket.socket() as probe:  # a free port, so parallel single-process runs never clash
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_SIZE": "1",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the process group (gloo on CPU); (rank, world_size, this rank's device)."""
    single_process_env()
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name())
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device(accelerator.device_name(int(os.environ.get("LOCAL_RANK", 0))))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if device.type == "cpu":
        keep_freed_memory()  # before the model and optimizer allocate
        release_shm_name(rank)
    return rank, world_size, device


def release_shm_name(rank: int) -> None:
    """Unlink this rank's /dev/shm all-reduce buffer of DeepSpeed's CPU backend once every rank
    has mapped it: the memory lives on while mapped and goes when the last rank exits. Left
    linked, every run leaves 69 MB per rank behind in /dev/shm until the machine's memory is
    gone (seen here: 16 GB after a day of tests)."""
    import torch.distributed as dist

    name = Path("/dev/shm") / (f"deepspeed_allreduce_buffer_{os.getuid()}_"
                               f"{os.environ['MASTER_ADDR']}_{os.environ['MASTER_PORT']}_{rank}")
    if not name.exists():
        return
    dist.barrier()  # every peer has opened it (shm_initialize waits for all peers' buffers)
    name.unlink(missing_ok=True)


def shutdown_distributed(succeeded: bool) -> None:
    """Leave the process group at the end of a run: when every rank succeeded, wait until all
    are past their last collective, then destroy DeepSpeed's and torch's process groups (a
    local operation, also done after a failure, without the barrier that could then hang)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    import deepspeed.comm  # init_distributed joined through it: it holds references to release

    if succeeded:
        dist.barrier()
    deepspeed.comm.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End a distributed script's process (after `shutdown_distributed`) without interpreter
    finalization: flush the logs and streams, then os._exit(code).

    Why: destroy_process_group() joins no gloo thread while something still holds its group,
    and DeepSpeed does (the engine, ZeRO-3 parameters' ds_process_group, a module-level stack
    holding the model), so the groups die during interpreter finalization. A gloo worker
    thread releases a collective's tensors after the caller's wait() returned; when it does so
    while CPython finalizes, the release needs the GIL, CPython ends the thread with
    pthread_exit, and the forced unwind through a noexcept C++ destructor aborts the process:
    "terminate called without an active exception", exit -6 after all the work was done (the
    core: ProcessGroupGloo::runLoop -> ~AsyncWork -> TensorImpl::decref_pyobject -> take_gil
    -> PyThread_exit_thread -> std::terminate). A race, rarer or more frequent with the
    machine's load. Not finalizing leaves no thread a GIL to wait for; everything the run
    writes is closed before this point."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def run_command(work: Callable[[], int]) -> int:
    """A distributed command's exit code: `work`'s, 2 after a ConfigError (printed), 1 after
    any other error; the process group left either way."""
    code = 1
    try:
        code = work()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    finally:
        shutdown_distributed(succeeded=code == 0)
    return code


def all_mean(value: float | Tensor, device: torch.device) -> float:
    """The mean of `value` (a float or a one-element tensor, e.g. a loss sum still on the
    device) over all ranks; the only host sync is the final .item()."""
    import deepspeed.comm as dist

    if isinstance(value, Tensor):
        tensor = value.detach().to(device=device, dtype=torch.float64).reshape(1)
    else:
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


# --- the engine ------------------------------------------------------------------------------

def build_engine(model: torch.nn.Module, ds_config: dict[str, Any], weight_decay: float) -> Any:
    """The DeepSpeed engine of `model` under a filled DeepSpeed config (`deepspeed_config`)."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model,
                                           model_parameters=param_groups(model, weight_decay),
                                           config=ds_config)
    return engine


class EngineStepper:
    """pretrain.training.loop's optimizer step on a DeepSpeed engine, which accumulates the
    gradients and applies the update after the last micro-batch itself."""

    def __init__(self, engine: Any):
        self.engine = engine

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.engine.optimizer.param_groups

    def loss(self, inputs: Tensor, labels: Tensor) -> Tensor:
        return self.engine(inputs, labels=labels).loss

    def backward(self, loss: Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()  # applies the update after the last micro-batch only

    def finish(self) -> float | None:
        grad_norm = self.engine.get_global_grad_norm()
        return float(grad_norm) if grad_norm is not None else None


# --- whole fp32 weights ----------------------------------------------------------------------

def full_state_dict(engine: Any) -> dict[str, Tensor]:
    """The whole module's weights on CPU (ZeRO-3: gathered from the ranks first)."""
    module = engine.module
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters())):
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def export_state_dict(engine: Any, scratch: Path, rank: int) -> dict[str, Tensor]:
    """The weights to export, on CPU; a collective (every rank calls it). fp32: the module's
    own (`full_state_dict`). bf16: the module holds a bf16 copy of the optimizer's fp32 master
    weights, which are exported instead: saved as a DeepSpeed checkpoint in `scratch` (a
    directory every rank sees; rank 0 removes it after) and consolidated there by
    `consolidated_state_dict`, on rank 0 (the other ranks get {})."""
    if not engine.bfloat16_enabled():
        return full_state_dict(engine)
    import deepspeed.comm as dist

    if rank == 0:  # a scratch directory left by a run that died while exporting
        shutil.rmtree(scratch, ignore_errors=True)
    dist.barrier()
    engine.save_checkpoint(str(scratch), tag="master")  # ends with a barrier: all files there
    if rank != 0:
        return {}
    try:
        return consolidated_state_dict(scratch, "master")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


BF16_OPTIM_FILES = "bf16_zero_pp_rank_*_mp_rank_00_optim_states.pt"


def consolidated_state_dict(checkpoint_dir: str | Path, tag: str) -> dict[str, Tensor]:
    """The fp32 master weights of checkpoint CKPT/`tag`, whole: from DeepSpeed's BF16_Optimizer
    files (ZeRO-1 with bf16 and fp32 gradient accumulation; `bf16_master_weights`), else
    through DeepSpeed's zero_to_fp32 (the ZeRO 1-3 optimizers, whose files under bf16 are
    also named `bf16_zero_pp_rank_*`, but record their `zero_stage`)."""
    tag_dir = Path(checkpoint_dir) / tag
    if is_bf16_optimizer_checkpoint(tag_dir):
        return bf16_master_weights(tag_dir)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)


def is_bf16_optimizer_checkpoint(tag_dir: Path) -> bool:
    """Whether a tag's optimizer files are BF16_Optimizer's (no `zero_stage` in its state)."""
    first = next(iter(sorted(tag_dir.glob(BF16_OPTIM_FILES))), None)
    if first is None:
        return False
    state = torch.load(first, map_location="cpu", mmap=True, weights_only=False)
    optimizer = state.get("optimizer_state_dict", {})
    return "zero_stage" not in optimizer and "param_slice_mappings" in optimizer


def bf16_master_weights(tag_dir: Path) -> dict[str, Tensor]:
    """Whole fp32 parameters from a checkpoint tag of DeepSpeed's BF16_Optimizer, which
    zero_to_fp32 does not read. Each rank's optimizer file holds, per parameter group, its flat
    fp32 partition and `param_slice_mappings` (name -> (numel, start) of the parameter's
    fragment in that partition); a parameter is its fragments in rank order. Shapes come from
    mp_rank_00_model_states.pt's `param_shapes`, and parameters the module shares (tied
    lm_head) from its `shared_params`. Unpickles the files (weights_only=False): trusted
    checkpoints only."""
    def rank_of(path: Path) -> int:
        return int(re.search(r"pp_rank_(\d+)_", path.name)[1])

    files = sorted(tag_dir.glob(BF16_OPTIM_FILES), key=rank_of)
    if [rank_of(f) for f in files] != list(range(len(files))):
        raise ValueError(f"{tag_dir}: BF16_Optimizer files of ranks {[rank_of(f) for f in files]}"
                         ": a rank's file is missing")
    model_states = torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu",
                              weights_only=False)
    shapes: dict[str, torch.Size] = {name: shape for group in model_states["param_shapes"]
                                     for name, shape in group.items()}
    fragments: dict[str, list[Tensor]] = {name: [] for name in shapes}
    for path in files:
        state = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        partitions, mappings = state["single_partition_of_fp32_groups"], state[
            "param_slice_mappings"]
        counts = state.get("partition_count", len(files))
        ranks = max(counts) if isinstance(counts, list) else counts
        if ranks != len(files):
            raise ValueError(f"{path} was written by one of {ranks} ranks, but {tag_dir} holds "
                             f"{len(files)} BF16_Optimizer files: an incomplete checkpoint")
        if len(partitions) != len(mappings):
            raise ValueError(f"{path}: {len(partitions)} fp32 groups, {len(mappings)} mappings")
        for partition, mapping in zip(partitions, mappings, strict=True):
            for name, fragment in mapping.items():
                if name not in fragments:
                    raise ValueError(f"{path}: parameter {name} is not in the model's "
                                     "param_shapes")
                fragments[name].append(
                    partition.narrow(0, fragment.start, fragment.numel).float())
    weights = {}
    for name, shape in shapes.items():
        flat = torch.cat(fragments[name]) if fragments[name] else torch.empty(0)
        if flat.numel() != shape.numel():
            raise ValueError(f"{tag_dir}: {name} has {flat.numel()} values in the optimizer "
                             f"files, its shape {tuple(shape)} needs {shape.numel()}")
        weights[name] = flat.reshape(shape).clone()
    for name, source in model_states.get("shared_params", {}).items():
        weights.setdefault(name, weights[source])
    return weights
