"""pretrain.finetune: SFT, continued pretraining and MRPC classification from a real (short) tiny
pretraining run on the test token shards, exported with pretrain.export."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pretrain.classifier import SequenceClassifier, classification_metrics, last_token_index
from pretrain.codec import LosslessTokenizer
from pretrain.export import EOS_ID, load_state_dict_safely, model_config_from_hf
from pretrain.finetune_data import (
    PAD_ID,
    classify_example,
    collate,
    read_classify,
    read_labelled,
    read_sft,
    sft_example,
    text_windows,
)
from pretrain.model import IGNORE_INDEX, CausalLM, ModelConfig, next_token_loss

from .pretrain_data import news_sft

pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
MRPC = {split: DATA / "finetune" / f"msr_paraphrase_{split}.txt" for split in ("train", "test")}
NEWS = DATA / "text" / "lee-news-background.txt"
TINY = ROOT / "configs" / "pretrain" / "tiny.yaml"
ZERO1 = ROOT / "configs" / "deepspeed" / "zero1.json"
SEQ = 128


def run_finetune(*flags: str) -> dict:
    """`python pretrain/finetune.py ...` (one process); its results.json line."""
    done = subprocess.run([sys.executable, "pretrain/finetune.py", "--seq_len", str(SEQ),
                           *flags], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pretrained(tokens_dir, tokenizer_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(CKPT, exported HF directory) of a 16-step single-process tiny pretraining run."""
    from pretrain.export import export_checkpoint

    ckpt = tmp_path_factory.mktemp("ft-pretrain") / "ckpt"
    command = [sys.executable, "pretrain/train.py", "--config", str(TINY), "--deepspeed_config",
               str(ZERO1), "--data", str(tokens_dir), "--output", str(ckpt), "--tokenizer",
               str(tokenizer_dir), "--max_steps", "16", "--warmup_steps", "2", "--lr", "3e-3",
               "--min_lr", "3e-4", "--micro_batch_size", "4", "--grad_accum", "1",
               "--eval_every", "16", "--eval_steps", "1", "--checkpoint_every", "16"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    hf = export_checkpoint(ckpt, ckpt.parent / "hf", tokenizer_dir=tokenizer_dir)
    return ckpt, hf


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


def test_help_explains_the_cli():
    done = subprocess.run([sys.executable, "pretrain/finetune.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert "--task" in done.stdout and "LlamaForSequenceClassification" in done.stdout


# --- slow: real fine-tuning runs -------------------------------------------------------------

@pytest.mark.slow
def test_sft_from_the_export_lowers_the_loss_and_loads_in_transformers(pretrained, tmp_path):
    transformers = pytest.importorskip("transformers")
    from pretrain.export import load_hf_model

    _, hf_dir = pretrained
    out = tmp_path / "sft"
    result = run_finetune("--init", str(hf_dir), "--data", str(news_sft(tmp_path / "sft.jsonl")),
                          "--task", "sft", "--output", str(out), "--steps", "30", "--lr", "2e-3",
                          "--micro_batch_size", "8")
    assert result["after"]["loss"] < result["before"]["loss"] - 0.5, result
    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ours = load_hf_model(out)
    ids = torch.tensor([[5, 17, 200, 31, 9, 2]])
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max().item() <= 1e-4
    assert (out / "tokenizer.model").read_bytes() == (hf_dir / "tokenizer.model").read_bytes()
    with open(out / "metrics.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["step"]) for row in rows] == list(range(1, 31))
    assert float(rows[0]["loss"]) == pytest.approx(result["train_loss_first"])
    assert float(rows[-1]["loss"]) == pytest.approx(result["train_loss_last"])


@pytest.mark.slow
def test_text_from_the_deepspeed_checkpoint_lowers_the_loss(pretrained, tmp_path):
    ckpt, _ = pretrained
    docs = tmp_path / "news.txt"
    docs.write_text("\n".join(NEWS.read_text().splitlines()[100:140]) + "\n")
    result = run_finetune("--init", str(ckpt), "--data", str(docs), "--task", "text",
                          "--output", str(tmp_path / "text"), "--steps", "30", "--lr", "2e-3")
    assert result["after"]["loss"] < result["before"]["loss"] - 0.3, result
    assert result["train_loss_last"] < result["train_loss_first"]


@pytest.mark.slow
def test_mrpc_classification_end_to_end_and_transformers_parity(pretrained, tmp_path):
    transformers = pytest.importorskip("transformers")
    _, hf_dir = pretrained
    out = tmp_path / "mrpc"
    result = run_finetune("--init", str(hf_dir), "--data", str(MRPC["train"]), "--eval_data",
                          str(MRPC["test"]), "--task", "classify", "--output", str(out),
                          "--steps", "40", "--lr", "5e-4", "--micro_batch_size", "16")
    after = result["after"]
    print("MRPC sample:", json.dumps(result["before"]), json.dumps(after))
    assert after["examples"] == 200 and after["majority_class"] == 1
    assert after["majority_accuracy"] == pytest.approx(134 / 200)
    assert after["majority_f1"] == pytest.approx(2 * 134 / (2 * 134 + 66))
    # A 16-step tiny model does not beat the majority class on MRPC; fine-tuning must at least
    # learn the label prior (measured: loss 0.751 -> 0.609, accuracy 0.33 -> 0.67 = majority).
    # 0.02 = 4 of 200 pairs: room for a few flipped predictions, not for a worse classifier.
    assert after["loss"] < result["before"]["loss"] - 0.05, result
    assert after["accuracy"] >= after["majority_accuracy"] - 0.02, result

    hf = transformers.LlamaForSequenceClassification.from_pretrained(
        out, dtype=torch.float32).eval()
    assert hf.config.num_labels == 2 and hf.config.pad_token_id == PAD_ID
    config = json.loads((out / "config.json").read_text())
    ours = SequenceClassifier(model_config_from_hf(config), 2, PAD_ID)
    ours.load_state_dict(load_state_dict_safely(out))
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    rows = read_labelled(MRPC["test"])[:6]
    examples = [classify_example([tokenizer(t).input_ids for t in texts], label, SEQ)
                for texts, label in rows]
    ids, _ = collate(examples)
    with torch.no_grad():
        expected, got = ours.eval()(ids).logits, hf(ids).logits
    assert (got - expected).abs().max().item() <= 1e-4

    # The reported metrics are the exported classifier's on the 200 test pairs: recomputed from
    # its predictions, with the text encoded as fine-tuning encodes it and the same batches.
    test = read_classify(MRPC["test"], LosslessTokenizer.load(out).encode, SEQ)
    predictions, loss_sum = [], 0.0
    with torch.no_grad():
        for start in range(0, len(test), 16):
            ids, labels = collate(test[start:start + 16])
            output = ours(ids, labels=labels)
            predictions += output.logits.argmax(-1).tolist()
            loss_sum += output.loss.item() * len(ids)
    recomputed = classification_metrics(predictions, [int(e.labels) for e in test], 1)
    assert recomputed == {key: after[key] for key in recomputed}, (recomputed, after)
    assert loss_sum / len(test) == pytest.approx(after["loss"], rel=1e-5)


@pytest.mark.slow
def test_two_ranks_under_zero3_through_the_deepspeed_launcher(pretrained, tmp_path):
    """`deepspeed --num_gpus 2 pretrain/finetune.py` (CPU, gloo), ZeRO-3: the export gathers
    the partitioned weights and loads back."""
    from pretrain.export import load_hf_model

    _, hf_dir = pretrained
    out = tmp_path / "sft3"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2",
               "--master_port", str(port), "pretrain/finetune.py", "--init", str(hf_dir),
               "--data", str(news_sft(tmp_path / "sft.jsonl", count=32)), "--task", "sft",
               "--output", str(out), "--steps", "12", "--lr", "2e-3", "--micro_batch_size", "4",
               "--seq_len", str(SEQ), "--deepspeed_config",
               str(ROOT / "configs" / "deepspeed" / "zero3.json")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    result = json.loads((out / "results.json").read_text())
    assert result["ranks"] == 2 and result["after"]["loss"] < result["before"]["loss"]
    model = load_hf_model(out)
    assert all(p.abs().sum() > 0 for p in model.parameters())  # gathered, not empty partitions
