"""Pretrain `pretrain.model.CausalLM` on TOKENS with DeepSpeed ZeRO (stage 1, 2 or 3).

    deepspeed [--num_gpus N] pretrain/train.py --config configs/pretrain/SIZE.yaml \
        --deepspeed_config configs/deepspeed/zeroN.json --data TOKENS --output CKPT [--steps N]
    python pretrain/train.py ...      (one process: rank 0 of 1, no launcher needed)

On a CPU-only machine the launcher runs N ranks with `DS_ACCELERATOR=cpu deepspeed
--num_gpus N ...` (gloo collectives, fp32).

The split of responsibilities: the YAML (`pretrain.config`) says *what* to train (model, batch,
lr schedule, eval/checkpoint cadence); the DeepSpeed JSON says *how* (ZeRO stage, precision).
Keys both could hold (batch sizes, clipping, optimizer) are `"auto"` in the JSON and filled here
from the YAML; `"bf16": {"enabled": "auto"}` means bf16 where the accelerator supports it, else
fp32 (CPU). Under bf16 gradients accumulate in fp32 (`data_types.grad_accum_dtype`, unless the
JSON says otherwise; under ZeRO-1 DeepSpeed then uses its BF16_Optimizer); fp32 on CUDA uses
TF32 tensor cores. Flags such as `--lr` override the YAML. configs/deepspeed/zeroN.json are
for CPU and tests (no communication overlap); configs/deepspeed/gpu/zeroN.json add DeepSpeed's
usual GPU settings (overlap_comm, buckets, ZeRO-3 prefetch and a parameter persistence
threshold that keeps norms gathered).

One optimizer step = grad_accum micro-batches of micro_batch_size sequences on every rank. The
learning rate is a pure function of the step (linear warmup, cosine decay to min_lr at
max_steps), set by hand before each step, so resuming needs no scheduler state. The data order
is TokenDataset's: a seeded permutation read from `consumed_samples` on, so a resumed run sees
exactly the batches an uninterrupted one would. A thread reads the next batches ahead (into
pinned memory on CUDA, copied with non_blocking=True), and the loss stays on the device until
the step ends (one host sync per step).

metrics.csv's tokens_per_s and mfu leave out torch.compile's time (the first step, or a
recompile), which is its own column, compile_s. MFU needs the device's peak FLOP/s: a table of
GPUs (PEAK_FLOPS: bf16, or TF32 for fp32) or --peak_flops.

CKPT/ holds DeepSpeed checkpoints `global_step{N}/` (client state: step, consumed_samples,
config, token manifest hash, world size, absolute paths of TOKENS and --tokenizer, which
pretrain.export and pretrain.finetune read; plus `train_state.json`, the same as JSON, written
before DeepSpeed's files), `latest` (DeepSpeed writes it after every file of the tag, so an
interrupted save never becomes latest) and `metrics.csv` (one row per step and per evaluation).
A rerun with the same CKPT resumes from `latest`. With training.keep_latest_k = K (or
--keep_latest_k K) only the newest K tags stay: older ones are deleted after each successful
save, never the one `latest` names.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # a script (`deepspeed pretrain/train.py`): sys.path[0] is
    # pretrain/, whose modules (config, dataset, model, ...) would shadow any top-level modules
    # of those names; use the repo root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402 (after the path fix above)
import csv
import hashlib
import json
import logging
import math
import random
import re
import socket
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from pretrain.config import ConfigError, PretrainConfig, TrainingConfig, load_config, parse
from pretrain.dataset import MAKE_TOKENS, MANIFEST, TokenDataset, TokensError, read_manifest
from pretrain.host_memory import keep_freed_memory
from pretrain.model import CausalLM, ModelConfig, compile_layers
from refine.atomic_file import write_json_atomic as write_json  # = pretrain.files'

log = logging.getLogger("pretrain.train")

STATE_FILE = "train_state.json"  # in each checkpoint tag: the client state as JSON
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


# --- arguments and configs -------------------------------------------------------------------

OVERRIDES = {  # TrainingConfig fields settable by flag (help text)
    "max_steps": "optimizer steps of the whole run: the lr schedule ends here",
    "micro_batch_size": "sequences per rank per forward",
    "grad_accum": "micro-batches per optimizer step",
    "seq_len": "tokens per sequence",
    "lr": "peak learning rate (after warmup)",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_steps": "linear warmup steps",
    "weight_decay": "AdamW weight decay of matrices (norms get none)",
    "grad_clip": "max global gradient norm (0 = no clipping)",
    "eval_every": "validate every K steps",
    "eval_steps": "validation micro-batches per rank",
    "checkpoint_every": "checkpoint every K steps",
    "log_every": "console log every K steps (metrics.csv gets every step)",
    "seed": "seed of initialisation and data order",
    "keep_latest_k": "keep only the newest K checkpoints (older tags are deleted after a save)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pretrain a Llama-style model on token shards with DeepSpeed ZeRO. Launch "
                    "with `deepspeed [--num_gpus N] pretrain/train.py ...` (on CPU prefix "
                    "DS_ACCELERATOR=cpu) or run as one process with `python pretrain/train.py`. "
                    "Resumes from OUTPUT/latest when it exists.")
    parser.add_argument("--config", type=Path, required=True,
                        help="model + training YAML (configs/pretrain/SIZE.yaml)")
    parser.add_argument("--deepspeed_config", type=Path, required=True,
                        help="DeepSpeed JSON (configs/deepspeed/zeroN.json): ZeRO stage, bf16")
    parser.add_argument("--data", type=Path, required=True,
                        help="TOKENS directory (python -m pretrain.encode)")
    parser.add_argument("--output", type=Path, required=True,
                        help="checkpoint directory (CKPT): checkpoints, latest, metrics.csv")
    parser.add_argument("--steps", type=int, default=None,
                        help="stop this launch once the global step reaches N (default: "
                             "max_steps); the lr schedule still runs to max_steps")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="TOK directory: vocab size from it (else from TOKENS' manifest), "
                             "checked against the tokenizer TOKENS was made with")
    parser.add_argument("--peak_flops", type=float, default=None,
                        help="peak FLOP/s of one device for MFU (default: a table of GPUs; "
                             "on CPU MFU is left empty unless this is given)")
    parser.add_argument("--universal", action="store_true",
                        help="resume from a universal checkpoint (after ds_to_universal), e.g. "
                             "on a different number of ranks")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile each decoder layer (default: the YAML's "
                             "training.compile; ZeRO 0-2)")
    parser.add_argument("--local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)  # passed by the deepspeed launcher; env wins
    group = parser.add_argument_group("overrides of the YAML's training section")
    for name, text in OVERRIDES.items():
        kind = TrainingConfig.model_fields[name].annotation
        group.add_argument(f"--{name}", type=float if kind is float else int, default=None,
                           help=text)
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> PretrainConfig:
    """The YAML with flag overrides, validated again (so an override can be refused)."""
    config = load_config(args.config)
    overrides = {k: getattr(args, k) for k in [*OVERRIDES, "compile"]
                 if getattr(args, k, None) is not None}
    training = config.training.model_dump() | overrides
    return parse(PretrainConfig, {"model": config.model.model_dump(), "training": training},
                 f"{args.config} with overrides {overrides}")


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


def lr_at(step: int, training: TrainingConfig) -> float:
    """Learning rate of optimizer step `step` (1-based): linear warmup to lr over warmup_steps,
    cosine decay to min_lr at max_steps, min_lr after."""
    if step <= training.warmup_steps:
        return training.lr * step / training.warmup_steps
    if step >= training.max_steps:
        return training.min_lr
    progress = (step - training.warmup_steps) / (training.max_steps - training.warmup_steps)
    return training.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (
        training.lr - training.min_lr)


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


# --- distributed setup -----------------------------------------------------------------------

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def all_mean(value: float | torch.Tensor, device: torch.device) -> float:
    """The mean of `value` (a float or a one-element tensor, e.g. a loss sum still on the
    device) over all ranks; the only host sync is the final .item()."""
    import deepspeed.comm as dist

    if isinstance(value, torch.Tensor):
        tensor = value.detach().to(device=device, dtype=torch.float64).reshape(1)
    else:
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


# --- data ------------------------------------------------------------------------------------

def host_batches(dataset: TokenDataset, micro_batch_size: int, pin: bool):
    """This rank's micro-batches on the host, in order: (micro_batch_size, seq_len + 1) int64
    tensors, in page-locked memory when `pin` (so that the copy to the GPU is asynchronous)."""
    for start in range(0, len(dataset) - micro_batch_size + 1, micro_batch_size):
        rows = [dataset[i] for i in range(start, start + micro_batch_size)]
        batch = torch.from_numpy(np.stack(rows))
        yield batch.pin_memory() if pin else batch


def batches(dataset: TokenDataset, micro_batch_size: int, device: torch.device,
            prefetch: int = 2):
    """This rank's micro-batches on `device`, in order: (micro_batch_size, seq_len + 1) int64
    tensors. A thread reads the next `prefetch` batches from the memmaps ahead of the training
    loop (into pinned memory on CUDA), and each is copied with non_blocking=True, so neither the
    read nor the copy waits for the GPU, nor the GPU for them. prefetch=0: no thread."""
    pin = device.type == "cuda" and torch.cuda.is_available()
    source = host_batches(dataset, micro_batch_size, pin)
    if prefetch > 0:
        source = prefetched(source, prefetch)
    for batch in source:
        yield batch.to(device, non_blocking=pin)


def prefetched(items, depth: int):
    """`items` produced by a daemon thread up to `depth` ahead; in order; its exception is
    raised here. The thread stops when the consumer goes away (it checks between items)."""
    import queue
    import threading

    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def offer(item: Any) -> bool:
        """Put `item` once there is room; False when the consumer has gone."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(done)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            offer(error)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def epochs_for(tokens: Path, split: str, seq_len: int, world_size: int, samples: int) -> int:
    """Epochs a dataset needs so that `samples` global samples exist."""
    per_epoch = TokenDataset(tokens, seq_len, split, world_size=world_size).samples_per_epoch
    return max(1, math.ceil(samples / per_epoch))


# --- checkpoints -----------------------------------------------------------------------------

def checkpoint_world_size(tag_dir: Path) -> int:
    """Data-parallel ranks a ZeRO checkpoint was written by (its optimizer-state shards)."""
    return len(list(tag_dir.glob("*zero_pp_rank_*_mp_rank_00_optim_states.pt")))


def tag_step(output: Path, pointer: str) -> int | None:
    """The step of the tag that OUTPUT/`pointer` (latest, latest_universal) names, if any."""
    path = output / pointer
    if not path.is_file():
        return None
    match = re.fullmatch(r"global_step(\d+)(_universal)?", path.read_text().strip())
    if match is None:
        raise SystemExit(f"{path} names {path.read_text()!r}, not a tag of pretrain.train")
    return int(match[1])


def resume_mode(output: Path, world_size: int, universal: bool) -> str | None:
    """Which pointer to resume from: "latest", "latest_universal" or None (a fresh run).

    A ZeRO checkpoint's optimizer shards only load on as many ranks as wrote them: on another
    number of ranks stop with the exact ds_to_universal command, unless --universal was given.
    --universal loads latest_universal unless a newer regular checkpoint exists (one saved
    after resuming from it), which it then ignores."""
    regular, converted = tag_step(output, "latest"), tag_step(output, "latest_universal")
    if universal and converted is not None and (regular is None or converted >= regular):
        return "latest_universal"
    if regular is None:
        if universal:
            raise SystemExit(f"--universal but {output}/latest_universal does not exist")
        return None
    tag = (output / "latest").read_text().strip()
    saved = checkpoint_world_size(output / tag)
    if saved != world_size:
        command = (f"python -m deepspeed.checkpoint.ds_to_universal --input_folder "
                   f"{output / tag} --output_folder {output / (tag + '_universal')} "
                   "--inject_missing_state")
        raise SystemExit(
            f"{output / tag} was written by {saved} ranks, this run has {world_size}. Convert "
            f"it to a universal checkpoint, then rerun this command with --universal:\n"
            f"  {command}")
    return "latest"


def prune_checkpoints(output: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoint tags `global_step{N}` of OUTPUT, and never
    the one `latest` names (nor universal checkpoints, nor anything else); the deleted ones.
    Called after a successful save, when `latest` names the new tag."""
    import shutil

    latest = tag_step(output, "latest")
    tags = sorted(((int(m[1]), path) for path in output.glob("global_step*")
                   if path.is_dir() and (m := re.fullmatch(r"global_step(\d+)", path.name))),
                  reverse=True)
    deleted = []
    for number, path in tags[keep:]:
        if number == latest:
            continue
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    return deleted


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


# --- training --------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(engine: Any, dataset: TokenDataset, training: TrainingConfig,
             device: torch.device) -> float:
    """Mean loss over eval_steps micro-batches per rank of the validation split (always the
    same batches), averaged over ranks."""
    engine.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for _, batch in zip(range(training.eval_steps),
                        batches(dataset, training.micro_batch_size, device, prefetch=0),
                        strict=False):
        total += engine(batch, labels=batch).loss.detach().double()  # no host sync
        count += 1
    engine.train()
    return all_mean(total / count, device)


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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices and embeddings decay, norms (1-d parameters) do not."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_engine(model: torch.nn.Module, ds_config: dict[str, Any], weight_decay: float) -> Any:
    """The DeepSpeed engine of `model` under a filled DeepSpeed config (`deepspeed_config`)."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model,
                                           model_parameters=param_groups(model, weight_decay),
                                           config=ds_config)
    return engine


def vocab_size_for(data: Path, manifest: dict[str, Any], tokenizer: Path | None) -> int:
    """The vocab size: --tokenizer's (which must be the one TOKENS was made with), else the
    token manifest's."""
    if tokenizer is None:
        if not isinstance(manifest.get("vocab_size"), int):
            raise TokensError(f"{data / MANIFEST} is damaged: no 'vocab_size'; pass --tokenizer "
                              f"TOK or make TOKENS again with `{MAKE_TOKENS} --overwrite`")
        return manifest["vocab_size"]
    from pretrain.config import tokenizer_vocab_size
    from pretrain.files import sha256_file

    model_file = tokenizer / "tokenizer.model"
    if not model_file.is_file():
        raise ConfigError(f"--tokenizer {tokenizer} has no tokenizer.model: pass the TOK "
                          "directory of `python -m pretrain.tokenizer`")
    recorded = manifest.get("tokenizer")
    if not isinstance(recorded, dict) or sha256_file(model_file) != recorded.get("model_sha256"):
        raise ConfigError(f"{tokenizer} is not the tokenizer {data} was made with")
    return tokenizer_vocab_size(tokenizer)


def train(args: argparse.Namespace) -> int:
    single_process_env()
    config = resolve_config(args)
    training = config.training
    # TOKENS and the tokenizer are checked before DeepSpeed starts and OUTPUT is created
    manifest = read_manifest(args.data)
    manifest_sha256 = hashlib.sha256((args.data / MANIFEST).read_bytes()).hexdigest()
    model_config: ModelConfig = config.model_for(vocab_size_for(args.data, manifest,
                                                                args.tokenizer))
    from deepspeed.accelerator import get_accelerator

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # we log what happened ourselves
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated")

    rank, world_size, device = init_distributed()
    accelerator = get_accelerator()
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                            force=True)
    else:
        log.setLevel(logging.WARNING)
    resume = resume_mode(args.output, world_size, args.universal)
    bf16_supported = device.type != "cpu" and accelerator.is_bf16_supported()
    ds_config = deepspeed_config(args.deepspeed_config, training, world_size, bf16_supported)
    if resume == "latest_universal":
        ds_config.setdefault("checkpoint", {})["load_universal"] = True

    seed_everything(training.seed)  # the same initial weights on every rank
    model = CausalLM(model_config)
    num_params = model.num_params()  # before ZeRO-3 partitions the parameters away
    flops_per_token = model.flops_per_token(training.seq_len)
    if training.compile:
        compile_layers(model)  # compiles on the first step
    engine = build_engine(model, ds_config, training.weight_decay)
    stage = engine.zero_optimization_stage()
    bf16 = ds_config["bf16"]["enabled"]
    if device.type == "cuda" and not bf16:
        # fp32 training on CUDA: matmuls and convolutions on TF32 tensor cores (10-bit
        # mantissa products, fp32 accumulation), as the fp32 peaks in PEAK_FLOPS assume
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        log.info("fp32 on CUDA: TF32 tensor cores enabled for matmuls and convolutions")
    log.info("rank 0 of %d on %s: ZeRO stage %d, %s, %.2fM parameters, global batch %d x %d "
             "tokens", world_size, device, stage, "bf16" if bf16 else "fp32",
             num_params / 1e6, training.micro_batch_size * training.grad_accum
             * world_size, training.seq_len)
    if training.compile:
        log.info("decoder layers and loss compiled with torch.compile (the first step compiles)")

    step, consumed = 0, 0
    samples_per_step = training.micro_batch_size * training.grad_accum * world_size
    loaded, client = None, {}
    if resume is not None:
        loaded, client = engine.load_checkpoint(str(args.output), load_module_strict=True)
    if loaded is not None:
        step, consumed = client["step"], client["consumed_samples"]
        if client["model"] != model_config.model_dump():
            raise ConfigError(f"{loaded} was trained with model {client['model']}, the config "
                              f"says {model_config.model_dump()}")
        if client["tokens_manifest_sha256"] != manifest_sha256:
            log.warning("%s was trained on other tokens (manifest sha256 %s, now %s)", loaded,
                        client["tokens_manifest_sha256"][:12], manifest_sha256[:12])
        changed = {k: (v, client["training"].get(k)) for k, v in training.model_dump().items()
                   if client["training"].get(k) != v}
        if changed:
            log.warning("resuming with changed training settings (now, was): %s", changed)
        saved = client["training"]
        saved_batch = saved["micro_batch_size"] * saved["grad_accum"] * client["world_size"]
        if saved_batch != samples_per_step:
            log.warning("the global batch changes from %d sequences (%d ranks) to %d (%d ranks); "
                        "set --grad_accum to keep it", saved_batch, client["world_size"],
                        samples_per_step, world_size)
        if consumed % world_size:
            raise SystemExit(f"consumed_samples {consumed} is not a multiple of {world_size} "
                             "ranks: resume on a number of ranks that divides it")
        log.info("resumed from %s at step %d (%d samples consumed)", Path(loaded).parent, step,
                 consumed)
    elif rank == 0:
        args.output.mkdir(parents=True, exist_ok=True)
    metrics_path = args.output / METRICS_FILE
    if rank == 0:
        truncate_metrics(metrics_path, step)
    metrics = Metrics(metrics_path, enabled=rank == 0)

    last = min(args.steps or training.max_steps, training.max_steps)
    if step >= last:
        log.info("already at step %d >= %d: nothing to do", step, last)
        return 0
    needed = consumed + (last - step) * samples_per_step
    train_data = TokenDataset(args.data, training.seq_len, "train", training.seed, rank,
                              world_size, consumed, epochs_for(args.data, "train",
                                                               training.seq_len, world_size,
                                                               needed))
    val_data = TokenDataset(args.data, training.seq_len, "val", training.seed, rank, world_size,
                            0, epochs_for(args.data, "val", training.seq_len, world_size,
                                          training.eval_steps * training.micro_batch_size
                                          * world_size))
    data = batches(train_data, training.micro_batch_size, device)
    tokens_per_step = samples_per_step * training.seq_len
    peak = peak_flops(device, bf16, args.peak_flops)
    if peak is None:
        log.info("MFU: no peak FLOP/s known for %s (pass --peak_flops); left empty", device)

    def save(step: int) -> None:
        tag = f"global_step{step}"
        state = {"step": step, "consumed_samples": consumed, "model": model_config.model_dump(),
                 "training": training.model_dump(), "tokens": str(args.data.resolve()),
                 "tokens_manifest_sha256": manifest_sha256, "world_size": world_size,
                 "zero_stage": stage,
                 "tokenizer": str(args.tokenizer.resolve()) if args.tokenizer else None}
        if rank == 0:  # before DeepSpeed's files; `latest` comes after all of them
            (args.output / tag).mkdir(parents=True, exist_ok=True)
            write_json(args.output / tag / STATE_FILE, state)
        engine.save_checkpoint(str(args.output), tag=tag, client_state=state)
        log.info("step %d: saved checkpoint %s", step, args.output / tag)
        if training.keep_latest_k is not None and int(os.environ.get("LOCAL_RANK", 0)) == 0:
            # one rank per node: on storage the nodes share, they race harmlessly
            for old in prune_checkpoints(args.output, training.keep_latest_k):
                log.info("deleted checkpoint %s (keep_latest_k %d)", old,
                         training.keep_latest_k)

    log.info("training steps %d..%d of %d", step + 1, last, training.max_steps)
    engine.train()
    clock, compiled = time.perf_counter(), compile_seconds()
    while step < last:
        lr = lr_at(step + 1, training)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        # the losses stay on the device: one host sync per step (all_mean's .item()), not one
        # per micro-batch; float64 sums as Python's were, so the logged values are unchanged
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for _ in range(training.grad_accum):
            batch = next(data)
            loss = engine(batch, labels=batch).loss
            engine.backward(loss)
            engine.step()  # applies the update after the last micro-batch only
            loss_sum += loss.detach().double()
        step += 1
        consumed += samples_per_step
        loss = all_mean(loss_sum / training.grad_accum, device)
        grad_norm = engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else None
        now, compiled_now = time.perf_counter(), compile_seconds()
        # torch.compile's time (the first step; a recompile) is not training throughput
        compile_s = compiled_now - compiled
        tokens_per_s = tokens_per_step / max(now - clock - compile_s, 1e-9)
        clock, compiled = now, compiled_now
        mfu = flops_per_token * tokens_per_s / (peak * world_size) if peak else None
        metrics.write(step=step, split="train", loss=f"{loss:.8f}", lr=f"{lr:.6e}",
                      grad_norm=None if grad_norm is None else f"{grad_norm:.6f}",
                      tokens=consumed * training.seq_len, tokens_per_s=f"{tokens_per_s:.1f}",
                      mfu=None if mfu is None else f"{mfu:.4f}", time_s=f"{time.time():.3f}",
                      compile_s=f"{compile_s:.3f}" if compile_s else None)
        if compile_s:
            log.info("step %d: torch.compile took %.1f s (left out of tokens/s and MFU)", step,
                     compile_s)
        if step % training.log_every == 0 or step == last:
            log.info("step %d/%d | loss %.4f | lr %.2e | grad norm %s | %.0f tokens/s | MFU %s",
                     step, training.max_steps, loss, lr,
                     "n/a" if grad_norm is None else f"{grad_norm:.3f}", tokens_per_s,
                     "n/a" if mfu is None else f"{mfu:.1%}")
        if step % training.eval_every == 0 or step == last:
            val_loss = evaluate(engine, val_data, training, device)
            metrics.write(step=step, split="val", loss=f"{val_loss:.8f}", lr=f"{lr:.6e}",
                          tokens=consumed * training.seq_len, time_s=f"{time.time():.3f}")
            log.info("step %d: validation loss %.4f", step, val_loss)
            clock = time.perf_counter()  # evaluation time is not training throughput
        if step % training.checkpoint_every == 0 or step == last:
            save(step)
            clock = time.perf_counter()
    log.info("done at step %d; checkpoints in %s", step, args.output)
    if device.type == "cuda":
        log.info("peak device memory %.3f GiB (torch.cuda.max_memory_allocated)",
                 torch.cuda.max_memory_allocated(device) / 2**30)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    code = 1
    try:
        code = train(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    finally:
        shutdown_distributed(succeeded=code == 0)
    return code


if __name__ == "__main__":
    exit_process(main())  # not raise SystemExit: see exit_process (gloo threads at exit)
