"""Pretraining configs: `configs/pretrain/<size>.yaml` with a `model:` and a `training:` section.

    model:      ModelConfig's fields (`pretrain.model`); `vocab_size: auto` (the default) is
                filled from the tokenizer by `PretrainConfig.model_for(vocab_size)`.
    training:   TrainingConfig's fields below.

Unknown keys are errors; every error names its key (`training.lr: ...`). The global batch is
micro_batch_size * grad_accum * world_size sequences of seq_len tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pretrain.model import ModelConfig
from refine.configfile import ConfigError, parse, read_yaml

__all__ = ["ConfigError", "PretrainConfig", "TrainingConfig", "load_config", "parse",
           "parse_config", "tokenizer_vocab_size"]



class ModelSection(ModelConfig):
    """ModelConfig whose vocab_size may still be `auto` (taken from the tokenizer)."""

    vocab_size: int | Literal["auto"] = Field("auto")  # type: ignore[assignment]


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq_len: int = Field(ge=1)
    micro_batch_size: int = Field(ge=1)  # sequences per rank per forward
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(gt=0)  # peak, after linear warmup
    min_lr: float = Field(ge=0)  # end of the cosine decay
    warmup_steps: int = Field(ge=0)
    max_steps: int = Field(ge=1)  # optimizer steps
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0)  # max global grad norm; 0 = off
    eval_every: int = Field(ge=1)  # optimizer steps
    eval_steps: int = Field(ge=1)  # micro-batches per evaluation
    checkpoint_every: int = Field(ge=1)
    log_every: int = Field(10, ge=1)
    seed: int = 0
    # torch.compile each decoder layer (pretrain.model.compile_layers); ZeRO 0-2 only
    compile: bool = False
    # after each successful save, delete all but the newest K checkpoint tags (never the one
    # `latest` names); None keeps every checkpoint
    keep_latest_k: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} > lr {self.lr}")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} > max_steps {self.max_steps}")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas {self.betas} must lie in [0, 1)")
        return self


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSection
    training: TrainingConfig

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if self.training.seq_len > self.model.max_position_embeddings:
            raise ValueError(f"training.seq_len {self.training.seq_len} > "
                             f"model.max_position_embeddings {self.model.max_position_embeddings}")
        return self

    def model_for(self, vocab_size: int | None = None) -> ModelConfig:
        """The ModelConfig, `auto` vocab_size replaced by the tokenizer's `vocab_size`."""
        fields = self.model.model_dump()
        if fields["vocab_size"] == "auto":
            if vocab_size is None:
                raise ConfigError("model.vocab_size is `auto`: pass the tokenizer's vocab size")
            fields["vocab_size"] = vocab_size
        elif vocab_size is not None and vocab_size > fields["vocab_size"]:
            raise ConfigError(f"model.vocab_size {fields['vocab_size']} < the tokenizer's "
                              f"{vocab_size}")
        return parse(ModelConfig, fields, "model section", prefix="model")


def parse_config(data: Any, source: str = "config") -> PretrainConfig:
    return parse(PretrainConfig, data, source)


def load_config(path: str | Path) -> PretrainConfig:
    return parse_config(read_yaml(path), str(path))


def tokenizer_vocab_size(tokenizer_dir: str | Path) -> int:
    """Pieces in `tokenizer_dir`/tokenizer.model (a TOK or HF_TOKENIZER directory)."""
    import sentencepiece as spm

    model_file = Path(tokenizer_dir) / "tokenizer.model"
    return spm.SentencePieceProcessor(model_file=str(model_file)).get_piece_size()
