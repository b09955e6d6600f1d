"""A training run's checkpoint directory CKPT: DeepSpeed tags `global_step{N}/` (each with
train_state.json, the client state as JSON, written before DeepSpeed's files), `latest`
(DeepSpeed writes it after every file of the tag, so an interrupted save never becomes latest),
resuming from it, and pruning old tags."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pretrain.config import ConfigError
from refine.atomic_file import write_json_atomic as write_json  # = pretrain.files'

log = logging.getLogger("pretrain.train")

STATE_FILE = "train_state.json"  # in each checkpoint tag: the client state as JSON
LATEST = "latest"


def tag_of(step: int) -> str:
    return f"global_step{step}"


def latest(output: Path) -> str | None:
    """The tag OUTPUT/latest names, or None when there is none."""
    path = output / LATEST
    return path.read_text().strip() if path.is_file() else None


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
    regular, converted = tag_step(output, LATEST), tag_step(output, "latest_universal")
    if universal and converted is not None and (regular is None or converted >= regular):
        return "latest_universal"
    if regular is None:
        if universal:
            raise SystemExit(f"--universal but {output}/latest_universal does not exist")
        return None
    tag = latest(output)
    saved = checkpoint_world_size(output / tag)
    if saved != world_size:
        command = (f"python -m deepspeed.checkpoint.ds_to_universal --input_folder "
                   f"{output / tag} --output_folder {output / (tag + '_universal')} "
                   "--inject_missing_state")
        raise SystemExit(
            f"{output / tag} was written by {saved} ranks, this run has {world_size}. Convert "
            f"it to a universal checkpoint, then rerun this command with --universal:\n"
            f"  {command}")
    return LATEST


def prune_checkpoints(output: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoint tags `global_step{N}` of OUTPUT, and never
    the one `latest` names (nor universal checkpoints, nor anything else); the deleted ones.
    Called after a successful save, when `latest` names the new tag."""
    newest = tag_step(output, LATEST)
    tags = sorted(((int(m[1]), path) for path in output.glob("global_step*")
                   if path.is_dir() and (m := re.fullmatch(r"global_step(\d+)", path.name))),
                  reverse=True)
    deleted = []
    for number, path in tags[keep:]:
        if number == newest:
            continue
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    return deleted


def save_checkpoint(engine: Any, output: Path, state: dict[str, Any], rank: int,
                    keep_latest_k: int | None) -> None:
    """Tag global_step{state["step"]}: train_state.json (rank 0, first), DeepSpeed's files and
    `latest` (a collective), then the tags beyond keep_latest_k deleted."""
    tag = tag_of(state["step"])
    if rank == 0:  # before DeepSpeed's files; `latest` comes after all of them
        (output / tag).mkdir(parents=True, exist_ok=True)
        write_json(output / tag / STATE_FILE, state)
    engine.save_checkpoint(str(output), tag=tag, client_state=state)
    log.info("step %d: saved checkpoint %s", state["step"], output / tag)
    if keep_latest_k is not None and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        # one rank per node: on storage the nodes share, they race harmlessly
        for old in prune_checkpoints(output, keep_latest_k):
            log.info("deleted checkpoint %s (keep_latest_k %d)", old, keep_latest_k)


def check_resumed(loaded: str, client: dict[str, Any], now: dict[str, Any],
                  world_size: int) -> None:
    """Compare a loaded checkpoint's client state with this run's (`now`: model, training,
    tokens_manifest_sha256): another model is refused; other tokens, changed settings and
    another global batch are warned about; a sample count the ranks do not divide stops."""
    if client["model"] != now["model"]:
        raise ConfigError(f"{loaded} was trained with model {client['model']}, the config "
                          f"says {now['model']}")
    if client["tokens_manifest_sha256"] != now["tokens_manifest_sha256"]:
        log.warning("%s was trained on other tokens (manifest sha256 %s, now %s)", loaded,
                    client["tokens_manifest_sha256"][:12], now["tokens_manifest_sha256"][:12])
    training = now["training"]
    changed = {k: (v, client["training"].get(k)) for k, v in training.items()
               if client["training"].get(k) != v}
    if changed:
        log.warning("resuming with changed training settings (now, was): %s", changed)
    saved = client["training"]
    saved_batch = saved["micro_batch_size"] * saved["grad_accum"] * client["world_size"]
    samples_per_step = training["micro_batch_size"] * training["grad_accum"] * world_size
    if saved_batch != samples_per_step:
        log.warning("the global batch changes from %d sequences (%d ranks) to %d (%d ranks); "
                    "set --grad_accum to keep it", saved_batch, client["world_size"],
                    samples_per_step, world_size)
    if client["consumed_samples"] % world_size:
        raise SystemExit(f"consumed_samples {client['consumed_samples']} is not a multiple of "
                         f"{world_size} ranks: resume on a number of ranks that divides it")


def read_train_state(checkpoint_dir: Path, tag: str | None) -> tuple[str, dict[str, Any]]:
    """The tag (default: the one CKPT/latest names) and its train_state.json."""
    if tag is None:
        tag = latest(checkpoint_dir)
        if tag is None:
            raise FileNotFoundError(f"{checkpoint_dir / LATEST} does not exist: pass --tag")
    state_file = checkpoint_dir / tag / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{state_file} does not exist: not a pretrain.train checkpoint")
    return tag, json.loads(state_file.read_text())
