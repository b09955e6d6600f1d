"""pretrain.finetune's data and metrics, without a model run: SFT labels and masks, loss masking,
text windows and classification examples, macro-F1, and micro-batches over epochs.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from pretrain.classifier import classification_metrics, last_token_index
from pretrain.export import EOS_ID
from pretrain.finetune_data import (
    PAD_ID,
    classify_example,
    collate,
    read_labelled,
    read_sft,
    sft_example,
    text_windows,
)
from pretrain.model import IGNORE_INDEX, CausalLM, ModelConfig, next_token_loss

from .finetune_inputs import MRPC, SEQ
from .pretrain_data import news_sft

pytest.importorskip("deepspeed")


# --- fast: labels, batches, metrics ----------------------------------------------------------

def test_sft_labels_cover_the_response_and_eos_only():
    example = sft_example([5, 6, 7], [8, 9], seq_len=16)
    assert example.input_ids == [5, 6, 7, 8, 9, EOS_ID]
    assert example.labels == [IGNORE_INDEX] * 3 + [8, 9, EOS_ID]
    cut = sft_example([5, 6, 7], [8, 9], seq_len=4)
    assert cut.input_ids == [5, 6, 7, 8] and cut.labels == [IGNORE_INDEX] * 3 + [8]
    assert sft_example([5, 6, 7], [8, 9], seq_len=3) is None  # no response token left
    ids, labels = collate([example, cut])
    assert ids[1].tolist() == [5, 6, 7, 8, PAD_ID, PAD_ID]
    assert labels[1].tolist() == [IGNORE_INDEX] * 3 + [8] + [IGNORE_INDEX] * 2


def word_encoder() -> Callable[[str], list[int]]:
    """A deterministic word-level encoder (ids from 3 on: never PAD_ID or EOS_ID)."""
    vocab: dict[str, int] = {}
    return lambda text: [vocab.setdefault(word, len(vocab) + 3) for word in text.split()]


def test_sft_mask_counts_match_prompt_and_response_lengths(tmp_path):
    """Counted over real prompt/response pairs read from JSONL: exactly len(prompt) masked
    positions and len(response) + 1 (EOS) targets per example, in the batch too; a mask one
    token too short or too long, or a lost EOS target, changes a count."""
    encode = word_encoder()
    path = news_sft(tmp_path / "sft.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows += [{"prompt": rows[0]["prompt"], "response": "Yes."},  # 1 token, and none at all
             {"prompt": rows[1]["prompt"], "response": ""}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pairs = [(encode(row["prompt"]), encode(row["response"])) for row in rows]
    assert {len(prompt) for prompt, _ in pairs} == {13}  # "Continue:" + 12 words
    assert {len(response) for _, response in pairs} == {16, 1, 0}
    examples = read_sft(path, encode, SEQ)
    assert len(examples) == len(rows)
    for (prompt, response), example in zip(pairs, examples, strict=True):
        assert example.input_ids == prompt + response + [EOS_ID]
        assert len(example.labels) == len(example.input_ids)
        assert sum(label == IGNORE_INDEX for label in example.labels) == len(prompt)
        assert sum(label != IGNORE_INDEX for label in example.labels) == len(response) + 1
        assert example.labels[len(prompt):] == response + [EOS_ID]
    ids, labels = collate(examples)
    targets = [len(response) + 1 for _, response in pairs]
    assert (labels != IGNORE_INDEX).sum(1).tolist() == targets
    assert (labels[:, 1:] != IGNORE_INDEX).sum().item() == sum(targets)  # the loss's targets
    assert (ids != PAD_ID).sum(1).tolist() == [len(p) + len(r) + 1 for p, r in pairs]
    # cut 3 tokens after the prompt: 3 targets (fewer if the response and EOS are shorter)
    cut = read_sft(path, encode, 13 + 3)
    assert [sum(label != IGNORE_INDEX for label in e.labels) for e in cut] == [
        min(3, len(response) + 1) for _, response in pairs]
    assert all(e.labels[:13] == [IGNORE_INDEX] * 13 for e in cut)
    assert read_sft(path, encode, 13) == []  # only prompt tokens left: no example


def test_prompt_token_logits_do_not_change_the_loss():
    torch.manual_seed(0)
    model = CausalLM(ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=2)).eval()
    ids, labels = collate([sft_example([3, 4, 5, 6], [7, 8, 9], 16),
                           sft_example([10, 11], [12, 13, 14, 15], 16)])
    with torch.no_grad():
        logits = model(ids).logits
        loss = model(ids, labels=labels).loss
    assert next_token_loss(logits[:, :-1], labels[:, 1:]) == pytest.approx(loss.item())
    changed = logits.clone()
    predicts_prompt = labels[:, 1:] == IGNORE_INDEX  # logits at t predict labels[t + 1]
    changed[:, :-1][predicts_prompt] = torch.randn_like(changed[:, :-1][predicts_prompt]) * 50
    assert next_token_loss(changed[:, :-1], labels[:, 1:]).item() == pytest.approx(loss.item())
    changed[0, 3, 0] += 50  # position 3 predicts the first response token: the loss moves
    assert next_token_loss(changed[:, :-1], labels[:, 1:]).item() != pytest.approx(loss.item())


def test_text_windows_and_classification_examples():
    windows = text_windows([[5, 6, 7], [8]], seq_len=4)
    assert [w.input_ids for w in windows] == [[5, 6, 7, EOS_ID], [8, EOS_ID]]
    assert all(w.labels == w.input_ids for w in windows)
    assert classify_example([[5, 6], [7]], 1, 16).input_ids == [5, 6, EOS_ID, 7, EOS_ID]
    assert classify_example([[5, 6, 7, 8], [9]], 0, 4).input_ids == [5, 6, 7, EOS_ID]
    rows = read_labelled(MRPC["train"])
    assert len(rows) == 300 and {label for _, label in rows} == {0, 1}
    assert rows[0][0][0].startswith("Amrozi accused his brother")
    ids, labels = collate([classify_example([[5, 6], [7]], 1, 16), classify_example([[5]], 0, 16)])
    assert last_token_index(ids, PAD_ID).tolist() == [4, 1] and labels.tolist() == [1, 0]


def test_classification_metrics_and_majority_baseline():
    metrics = classification_metrics([1, 0, 1, 1], [1, 0, 0, 1], majority_class=1)
    assert metrics["accuracy"] == 0.75 and metrics["f1"] == pytest.approx(0.8)
    assert metrics["majority_accuracy"] == 0.5 and metrics["majority_f1"] == pytest.approx(2 / 3)


def test_macro_f1_on_a_hand_computed_confusion():
    """3 classes. Confusion (rows: label, columns: prediction):
        0: [2, 1, 0]      class 0: tp 2, fp 1, fn 1 -> F1 4 / 6
        1: [0, 1, 1]      class 1: tp 1, fp 2, fn 1 -> F1 2 / 5
        2: [1, 1, 2]      class 2: tp 2, fp 1, fn 2 -> F1 4 / 7
    """
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predictions = [0, 1, 0, 1, 2, 2, 2, 0, 1]
    metrics = classification_metrics(predictions, labels, majority_class=2)
    assert metrics["macro_f1"] == pytest.approx((4 / 6 + 2 / 5 + 4 / 7) / 3)
    assert metrics["f1"] == pytest.approx(2 / 5)  # class 1's
    assert metrics["accuracy"] == pytest.approx(5 / 9)
    # always 2: class 2 F1 = 2 * 4 / (2 * 4 + 5) = 8 / 13; classes 0 and 1 never predicted: 0
    assert metrics["majority_macro_f1"] == pytest.approx(8 / 13 / 3)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert metrics["macro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(labels, predictions, average="macro"))
    # a class in neither labels nor predictions counts (F1 0) when num_labels includes it
    four = classification_metrics(predictions, labels, majority_class=2, num_labels=4)
    assert four["macro_f1"] == pytest.approx((4 / 6 + 2 / 5 + 4 / 7) / 4)
    binary = classification_metrics([1, 0, 1, 1], [1, 0, 0, 1], majority_class=1)
    assert binary["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)  # class 0: tp 1, fn 1
    assert binary["majority_macro_f1"] == pytest.approx((0 + 2 / 3) / 2)


def test_epochs_count_steps_as_micro_batches_covers_the_data():
    """--epochs E runs ceil(E x micro-batches per epoch / grad_accum) steps, and an epoch's
    micro-batches are one pass over distinct examples before the next shuffle begins."""
    from pretrain.finetune import batches_per_epoch, micro_batches, steps_for_epochs
    from pretrain.finetune_data import Example

    assert batches_per_epoch(300, 32, 1) == 9  # 288 examples; the last 12 left out
    assert steps_for_epochs(2, 300, 32, 1, 1) == 18
    assert steps_for_epochs(2, 300, 32, 1, 4) == 5  # 18 micro-batches in steps of 4
    assert steps_for_epochs(3, 300, 16, 2, 1) == 27  # 9 global batches of 32 per epoch
    assert batches_per_epoch(5, 8, 1) == 1  # fewer examples than a batch: repeated to fill one
    examples = [Example([3, 4, EOS_ID], i) for i in range(70)]
    stream = micro_batches(examples, 16, 0, 1, seed=7)
    per_epoch = batches_per_epoch(70, 16, 1)
    for epoch in range(2):
        seen = [i for _ in range(per_epoch) for i in next(stream)[1].tolist()]
        assert len(set(seen)) == len(seen) == per_epoch * 16
        order = torch.randperm(70, generator=torch.Generator().manual_seed(7 + epoch)).tolist()
        assert seen == order[:per_epoch * 16]  # epoch `epoch`'s shuffle, then the next one
