"""Write a trained model as a `transformers` LlamaForCausalLM directory, and read weights safely.

    save_hf_model(model_or_state_dict, model_config, OUT, tokenizer_dir=HF_TOKENIZER)

OUT/ holds config.json (loads in transformers 4 and 5: RoPE theta both as top-level
`rope_theta`, which v4 reads, and as `rope_parameters`, which v5 writes), generation_config.json,
model.safetensors (fp32; when the embeddings are tied `lm_head.weight` is left out and
transformers ties it back on load, as its own save_pretrained does) and, given a tokenizer
directory, the tokenizer files. `pretrain.model.CausalLM` already uses Llama's parameter names,
so the conversion is a dtype cast; it takes a plain state dict so that a consolidated DeepSpeed
ZeRO checkpoint (a fp32 state dict) plugs in unchanged. `load_hf_model(OUT)` reads it back.

`python -m pretrain.export CKPT OUT [--tokenizer TOK]` does this for a pretrain.train checkpoint
(consolidated from its ZeRO shards). Without --tokenizer it writes the tokenizer the checkpoint
recorded: pretrain.train's --tokenizer, else the one its token shards were made with
(`recorded_tokenizer`); when neither is recorded it fails, asking for --tokenizer.

Nothing here unpickles arbitrary objects: safetensors, or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pretrain.model import CausalLM, ModelConfig
from pretrain.training.checkpoints import read_train_state
from pretrain.training.engine import consolidated_state_dict
from refine.atomic_file import write_json_atomic as write_json  # = pretrain.files'

log = logging.getLogger("pretrain.export")

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BOS_ID, EOS_ID = 1, 2  # the tokenizer's (pretrain.tokenizer: unk/bos/eos = 0/1/2)
HF_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json", "added_tokens.json")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DeepSpeed engine, torch.compile


def hf_config(config: ModelConfig) -> dict[str, Any]:
    """config.json for LlamaForCausalLM (transformers 4 and 5)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "initializer_range": config.initializer_range,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,  # transformers 4
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},  # 5
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "torch_dtype": "float32",  # transformers 4
        "dtype": "float32",  # transformers 5
    }


def model_config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
    """The ModelConfig of a config.json written by `hf_config` (or any plain Llama's)."""
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or hf.get("rope_scaling"):
        raise ValueError(f"RoPE scaling is not supported: {rope or hf.get('rope_scaling')}")
    if hf.get("attention_bias") or hf.get("mlp_bias") or hf.get("hidden_act", "silu") != "silu":
        raise ValueError("only bias-free SiLU Llama models are supported")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
              "rms_norm_eps", "tie_word_embeddings", "initializer_range")
    config = ModelConfig(**{key: hf[key] for key in fields if key in hf}, rope_theta=theta)
    if hf.get("head_dim", config.head_dim) != config.head_dim:
        raise ValueError(f"head_dim {hf['head_dim']} != hidden_size / num_attention_heads")
    return config


def llama_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a LlamaForCausalLM checkpoint and its shape (lm_head even when tied)."""
    hidden, inner, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    q_out, kv_out = config.num_attention_heads * config.head_dim, config.kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden),
                                          "model.norm.weight": (hidden,),
                                          "lm_head.weight": (vocab, hidden)}
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}"
        shapes |= {f"{layer}.input_layernorm.weight": (hidden,),
                   f"{layer}.post_attention_layernorm.weight": (hidden,),
                   f"{layer}.self_attn.q_proj.weight": (q_out, hidden),
                   f"{layer}.self_attn.k_proj.weight": (kv_out, hidden),
                   f"{layer}.self_attn.v_proj.weight": (kv_out, hidden),
                   f"{layer}.self_attn.o_proj.weight": (hidden, q_out),
                   f"{layer}.mlp.gate_proj.weight": (inner, hidden),
                   f"{layer}.mlp.up_proj.weight": (inner, hidden),
                   f"{layer}.mlp.down_proj.weight": (hidden, inner)}
    return shapes


def _strip_prefix(name: str) -> str:
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


def hf_state_dict(state_dict: Mapping[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Checked fp32 CPU tensors under Llama's names, lm_head left out when tied.

    Raises ValueError naming missing, unexpected or mis-shaped keys, and a tied lm_head that
    differs from the embeddings."""
    weights = {_strip_prefix(name): tensor for name, tensor in state_dict.items()}
    expected = llama_shapes(config)
    tied = config.tie_word_embeddings
    if tied and "lm_head.weight" in weights:
        head = weights.pop("lm_head.weight")
        embed = weights.get("model.embed_tokens.weight")
        if embed is not None and not torch.equal(head.to(embed.dtype), embed):
            raise ValueError("tie_word_embeddings but lm_head.weight != model.embed_tokens.weight")
    if tied:
        expected.pop("lm_head.weight")
    missing, unexpected = sorted(expected.keys() - weights), sorted(weights.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"state dict does not match the config: missing {missing[:5]}"
                         f"{'...' * (len(missing) > 5)}, unexpected {unexpected[:5]}"
                         f"{'...' * (len(unexpected) > 5)}")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(f"{name}: shape {tuple(weights[name].shape)}, config says {shape}")
    return {name: weights[name].detach().to("cpu", torch.float32).contiguous()
            for name in sorted(weights)}


def save_hf_model(model_or_state_dict: nn.Module | Mapping[str, Tensor], model_config: ModelConfig,
                  out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write OUT/{config.json, generation_config.json, model.safetensors} (+ tokenizer files).

    `tokenizer_dir`: an HF_TOKENIZER directory (`python -m pretrain.hf_export`), whose files
    are copied, or a TOK directory (`python -m pretrain.tokenizer`), which is exported here."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = (model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module)
             else model_or_state_dict)
    weights = hf_state_dict(state, model_config)
    if tokenizer_dir is not None:  # first: a mismatched tokenizer fails before the big write
        copy_tokenizer(Path(tokenizer_dir), out, model_config)
    temp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(weights, str(temp), metadata={"format": "pt"})
    os.replace(temp, out / WEIGHTS_FILE)
    write_json(out / CONFIG_FILE, hf_config(model_config))
    write_json(out / "generation_config.json",
               {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "_from_model_config": True})
    log.info("wrote %s (%d tensors, %.1fM parameters)", out, len(weights),
             sum(t.numel() for t in weights.values()) / 1e6)
    return out


def copy_tokenizer(tokenizer_dir: Path, out: Path, model_config: ModelConfig) -> None:
    """HF_TOKENIZER files into `out`, or a TOK directory exported into `out`; the tokenizer may
    not have more pieces than the model has embeddings."""
    model_file = tokenizer_dir / "tokenizer.model"
    if model_file.is_file():
        import sentencepiece as spm

        pieces = spm.SentencePieceProcessor(model_file=str(model_file)).get_piece_size()
        if pieces > model_config.vocab_size:
            raise ValueError(f"tokenizer {tokenizer_dir} has {pieces} pieces > model "
                             f"vocab_size {model_config.vocab_size}")
    if tokenizer_dir.resolve() == out.resolve():
        return
    if (tokenizer_dir / "tokenizer_config.json").is_file():
        for name in HF_TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, out / name)
    elif model_file.is_file():
        from pretrain.hf_export import export_hf_tokenizer

        export_hf_tokenizer(tokenizer_dir, out, model_config.max_position_embeddings)
    else:
        raise FileNotFoundError(f"{tokenizer_dir} holds neither tokenizer_config.json "
                                "(HF_TOKENIZER) nor tokenizer.model (TOK)")


def load_state_dict_safely(path: str | Path) -> dict[str, Tensor]:
    """Tensors from a .safetensors file, an exported directory (its model.safetensors) or a
    torch.save file of tensors (`weights_only=True`: no arbitrary object is unpickled)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(t, Tensor) for t in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    return dict(state)


def load_hf_model(path: str | Path) -> CausalLM:
    """A CausalLM (fp32, eval mode) from a directory written by `save_hf_model`."""
    path = Path(path)
    config = model_config_from_hf(json.loads((path / CONFIG_FILE).read_text()))
    weights = load_state_dict_safely(path)
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    model = CausalLM(config)
    result = model.load_state_dict(weights, strict=False)
    missing = set(result.missing_keys) - ({"lm_head.weight"} if config.tie_word_embeddings
                                          else set())
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: missing {sorted(missing)}, unexpected "
                         f"{sorted(result.unexpected_keys)}")
    return model.eval()


def _tokens_manifest(train_state: Mapping[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """The token manifest the checkpoint trained on (its path and content; {} if unreadable)."""
    from pretrain.dataset import MANIFEST

    if not train_state.get("tokens"):
        return None, {}
    path = Path(train_state["tokens"]) / MANIFEST
    try:
        return path, json.loads(path.read_text())
    except (OSError, ValueError):
        return path, {}


def recorded_tokenizer(train_state: Mapping[str, Any], where: Path) -> Path:
    """The tokenizer directory a checkpoint's train_state.json names: pretrain.train's
    --tokenizer, else the one its token manifest (TOKENS/manifest.json, pretrain.encode)
    was made with. Both are recorded as absolute paths, so they hold from any working
    directory. The first that holds tokenizer.model wins, and must have the sha256 the
    manifest recorded. Raises FileNotFoundError or ValueError, naming --tokenizer, when none
    is recorded, none exists any more, or it is not the tokenizer of the token shards."""
    from pretrain.files import sha256_file

    manifest_path, manifest = _tokens_manifest(train_state)
    recorded = manifest.get("tokenizer") or {}  # null: synthetic tokens (no tokenizer)
    candidates = [Path(p) for p in (train_state.get("tokenizer"), recorded.get("path")) if p]
    for candidate in candidates:
        model_file = candidate / "tokenizer.model"
        if not model_file.is_file():
            continue
        expected = recorded.get("model_sha256")
        if expected and sha256_file(model_file) != expected:
            raise ValueError(f"{candidate}, the tokenizer recorded by {where}, is not the one "
                             f"{manifest_path} was made with (sha256 differs): pass --tokenizer")
        return candidate
    if not candidates:
        raise FileNotFoundError(f"{where} recorded no tokenizer (trained without --tokenizer; "
                                f"no tokenizer path in the token manifest {manifest_path}): "
                                "pass --tokenizer TOK")
    named = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"the tokenizer {where} recorded ({named}) holds no "
                            "tokenizer.model: pass --tokenizer TOK")


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, tag: str | None = None,
                      tokenizer_dir: str | Path | None = None) -> Path:
    """Consolidate a DeepSpeed ZeRO checkpoint (stage 1, 2 or 3, fp32 or bf16, including
    ZeRO-1's BF16_Optimizer; CKPT as written by `pretrain.train`) into its fp32 master weights
    and write them with `save_hf_model`. `tag`: a `global_step{N}` directory of CKPT (default:
    the one CKPT/latest names). The model config comes from the tag's train_state.json, and so
    does the tokenizer when `tokenizer_dir` is None (see `recorded_tokenizer`). Note: the
    consolidation unpickles the checkpoint files (torch.load of the optimizer shards), so only
    export checkpoints you trust."""
    checkpoint_dir = Path(checkpoint_dir)
    tag, train_state = read_train_state(checkpoint_dir, tag)
    model_config = ModelConfig(**train_state["model"])
    if tokenizer_dir is None:
        tokenizer_dir = recorded_tokenizer(train_state, checkpoint_dir / tag)
        log.info("tokenizer: %s (recorded by the checkpoint)", tokenizer_dir)
    log.info("consolidating %s (ZeRO stage %s, step %s)", checkpoint_dir / tag,
             train_state.get("zero_stage"), train_state.get("step"))
    state_dict = consolidated_state_dict(checkpoint_dir, tag)
    return save_hf_model(state_dict, model_config, out_dir, tokenizer_dir)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pretrain.files import setup_logging

    parser = argparse.ArgumentParser(
        prog="python -m pretrain.export",
        description="Export a pretrain.train DeepSpeed checkpoint (any ZeRO stage) as a "
                    "transformers LlamaForCausalLM directory: config.json, model.safetensors "
                    "(fp32) and the tokenizer files.")
    parser.add_argument("checkpoint", type=Path, help="CKPT: the --output of pretrain.train")
    parser.add_argument("out", type=Path, help="directory to write")
    parser.add_argument("--tag", default=None,
                        help="checkpoint tag, e.g. global_step200 (default: CKPT/latest)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="TOK or HF_TOKENIZER directory whose tokenizer is written along "
                             "(default: the one the checkpoint recorded: pretrain.train's "
                             "--tokenizer, else the one its token shards were made with)")
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    try:
        export_checkpoint(args.checkpoint, args.out, args.tag, args.tokenizer)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
