"""A sequence classifier on the pretrained decoder, as transformers' LlamaForSequenceClassification.

`SequenceClassifier`: `model` (pretrain.model.Decoder) and `score` (Linear hidden -> num_labels,
no bias); the logits of the rightmost token that is not pad_token_id (transformers' rule; our
examples end with EOS). Its state dict is a LlamaForSequenceClassification checkpoint:
`save_classifier(...)` writes config.json (architectures, num_labels, pad_token_id, id2label),
model.safetensors and the tokenizer files. `classification_metrics` gives accuracy, F1 of the
positive class, macro-F1 and the majority-class baseline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from pretrain.export import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    _strip_prefix,
    copy_tokenizer,
    hf_config,
)
from pretrain.files import write_json
from pretrain.model import CausalLM, Decoder, ModelConfig


class ClassifierOutput(NamedTuple):
    logits: Tensor  # (batch, num_labels)
    loss: Tensor | None


def last_token_index(input_ids: Tensor, pad_token_id: int) -> Tensor:
    """The rightmost position whose token is not pad_token_id (0 if all are pad), per row."""
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
    return (positions * (input_ids != pad_token_id)).argmax(-1)


class SequenceClassifier(nn.Module):
    def __init__(self, config: ModelConfig, num_labels: int, pad_token_id: int):
        super().__init__()
        self.config, self.num_labels, self.pad_token_id = config, num_labels, pad_token_id
        self.model = Decoder(config)
        self.score = nn.Linear(config.hidden_size, num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=config.initializer_range)

    @classmethod
    def from_causal_lm(cls, lm: CausalLM, num_labels: int, pad_token_id: int,
                       ) -> SequenceClassifier:
        """The pretrained decoder under a fresh `score` head (the LM head is dropped)."""
        classifier = cls(lm.config, num_labels, pad_token_id)
        classifier.model.load_state_dict(lm.model.state_dict())
        return classifier

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> ClassifierOutput:
        hidden = self.model(input_ids)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        logits = self.score(hidden[rows, last_token_index(input_ids, self.pad_token_id)])
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return ClassifierOutput(logits, loss)


def save_classifier(state_dict: Mapping[str, Tensor], config: ModelConfig, num_labels: int,
                    pad_token_id: int, out_dir: str | Path,
                    tokenizer_dir: str | Path | None = None) -> Path:
    """A transformers LlamaForSequenceClassification directory (fp32 safetensors)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = {_strip_prefix(k): v.detach().to("cpu", torch.float32).contiguous()
               for k, v in state_dict.items()}
    expected = {f"model.{k}" for k in Decoder(config).state_dict()} | {"score.weight"}
    if weights.keys() != expected:
        raise ValueError(f"not a classifier state dict: missing {sorted(expected - weights.keys())}"
                         f", unexpected {sorted(weights.keys() - expected)}")
    if tokenizer_dir is not None:
        copy_tokenizer(Path(tokenizer_dir), out, config)
    temp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(weights, str(temp), metadata={"format": "pt"})
    os.replace(temp, out / WEIGHTS_FILE)
    hf = hf_config(config) | {
        "architectures": ["LlamaForSequenceClassification"], "num_labels": num_labels,
        "id2label": {str(i): f"LABEL_{i}" for i in range(num_labels)},
        "label2id": {f"LABEL_{i}": i for i in range(num_labels)},
        "pad_token_id": pad_token_id, "tie_word_embeddings": False,  # no lm_head to tie
        "problem_type": "single_label_classification"}
    write_json(out / CONFIG_FILE, hf)
    return out


def classification_metrics(predictions: Sequence[int], labels: Sequence[int],
                           majority_class: int, positive: int = 1,
                           num_labels: int | None = None) -> dict[str, Any]:
    """Accuracy, F1 (of `positive`) and macro-F1 of the predictions and of always predicting the
    majority class (of the training labels).

    Macro-F1 is the unweighted mean of the per-class F1 over the classes 0 .. num_labels - 1
    (default: every class seen among the labels and predictions, and `positive`); a class
    never predicted nor present scores F1 0, as in scikit-learn's f1_score(average="macro",
    labels=range(num_labels), zero_division=0)."""
    if num_labels is None:
        num_labels = max([*labels, *predictions, positive, majority_class]) + 1

    def f1_of(pairs: list[tuple[int, int]], cls: int) -> float:
        tp = sum(p == cls and y == cls for p, y in pairs)
        fp = sum(p == cls and y != cls for p, y in pairs)
        fn = sum(p != cls and y == cls for p, y in pairs)
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0

    def scores(predicted: Sequence[int]) -> tuple[float, float, float]:
        pairs = list(zip(predicted, labels, strict=True))
        accuracy = sum(p == y for p, y in pairs) / len(pairs)
        macro = sum(f1_of(pairs, cls) for cls in range(num_labels)) / num_labels
        return accuracy, f1_of(pairs, positive), macro

    accuracy, f1, macro_f1 = scores(predictions)
    base_accuracy, base_f1, base_macro_f1 = scores([majority_class] * len(labels))
    return {"examples": len(labels), "accuracy": accuracy, "f1": f1, "macro_f1": macro_f1,
            "majority_class": majority_class, "majority_accuracy": base_accuracy,
            "majority_f1": base_f1, "majority_macro_f1": base_macro_f1}
