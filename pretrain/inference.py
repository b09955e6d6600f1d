"""A trained causal LM and its tokenizer, ready for inference, from either thing training leaves:

- an exported `transformers` directory (`python -m pretrain.export`, or pretrain.finetune's
  sft/text output): config.json, model.safetensors and the tokenizer files;
- a pretrain.train checkpoint directory CKPT: its DeepSpeed ZeRO shards consolidated in memory
  (as pretrain.export does), the tokenizer the checkpoint recorded (or `tokenizer`).

Both give the same fp32 weights, so evaluating or sampling one or the other gives the same
numbers. Used by `pretrain.evaluate` and `pretrain.generate`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from pretrain.codec import LosslessTokenizer
from pretrain.config import ConfigError
from pretrain.export import CONFIG_FILE
from pretrain.model import CausalLM
from pretrain.tokenizer import MODEL_FILE

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(ConfigError):
    """MODEL is missing, is not a causal LM, or has no usable tokenizer."""


@dataclass
class LoadedModel:
    model: CausalLM  # in eval mode, on its device and dtype
    tokenizer: LosslessTokenizer
    kind: str  # "export" or "checkpoint"
    path: Path
    tokenizer_dir: Path

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_model_arguments(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """The options of `load_model` as command-line flags: --tokenizer, --tag, --device, --dtype."""
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory (default: the export's, or the one the "
                             "checkpoint recorded)")
    parser.add_argument("--tag", default=None, help="checkpoint tag (default: CKPT/latest)")
    if device:
        parser.add_argument("--device", default=None,
                            help=f"torch device (default: {default_device()} here)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="weights and activations (default: float32)")


def _check_export(path: Path) -> None:
    """An exported directory must hold a causal LM (not pretrain.finetune's classifier)."""
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"{path / CONFIG_FILE} is not readable JSON: {error}") from None
    architectures = config.get("architectures") or ["LlamaForCausalLM"]
    if "LlamaForCausalLM" not in architectures:
        raise ModelError(f"{path} holds a {', '.join(architectures)}, not a causal language "
                         "model (LlamaForCausalLM)")


def load_model(path: str | Path, tokenizer: str | Path | None = None, tag: str | None = None,
               device: str | torch.device | None = None, dtype: str = "float32") -> LoadedModel:
    """The model at `path` (an export or a checkpoint) and its tokenizer, on `device`
    (default: CUDA when there is one) in `dtype` (a DTYPES name). Raises ModelError with a
    message naming what is wrong."""
    from pretrain.finetune import load_init  # the loader fine-tuning starts from

    path = Path(path)
    if not path.exists():
        raise ModelError(f"MODEL {path} does not exist")
    if not path.is_dir():
        raise ModelError(f"MODEL {path} is not a directory (expected an exported transformers "
                         "directory or a pretrain.train checkpoint directory)")
    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    kind = "export" if (path / CONFIG_FILE).is_file() else "checkpoint"
    if kind == "export":
        _check_export(path)
    elif tag is None and not (path / "latest").is_file():
        raise ModelError(f"{path} holds neither config.json (an export) nor latest (a "
                         "pretrain.train checkpoint)")
    try:  # what DeepSpeed prints (it logs to stdout) goes to stderr: stdout is for results
        with contextlib.redirect_stdout(sys.stderr):
            model, tokenizer_dir = load_init(path, Path(tokenizer) if tokenizer else None, tag)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise ModelError(f"cannot load {path}: {error}") from None
    tokenizer_dir = Path(tokenizer_dir)
    if not (tokenizer_dir / MODEL_FILE).is_file():
        raise ModelError(f"{tokenizer_dir} holds no {MODEL_FILE}: pass --tokenizer TOK")
    codec = LosslessTokenizer.load(tokenizer_dir)
    if codec.piece_size() > model.config.vocab_size:
        raise ModelError(f"tokenizer {tokenizer_dir} has {codec.piece_size()} pieces > the "
                         f"model's vocab_size {model.config.vocab_size}")
    model = model.to(device=device or default_device(), dtype=DTYPES[dtype]).eval()
    return LoadedModel(model, codec, kind, path, tokenizer_dir)
