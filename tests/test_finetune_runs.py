"""pretrain.finetune end to end (slow): SFT, continued pretraining and MRPC classification from a
real (short) tiny pretraining run on the test token shards, exported with pretrain.export;
ZeRO-3 over two ranks, epochs and evaluations, bf16 master weights, recorded paths.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain.classifier import SequenceClassifier, classification_metrics
from pretrain.codec import LosslessTokenizer
from pretrain.export import load_state_dict_safely, model_config_from_hf
from pretrain.finetune_data import (
    PAD_ID,
    classify_example,
    collate,
    read_classify,
    read_labelled,
    read_sft,
)
from pretrain.model import IGNORE_INDEX

from .conftest import DATA, ROOT
from .finetune_inputs import MRPC, SEQ
from .pretrain_data import news_sft
from .tiny_lm import news_tokenizer, tiny_export

pytest.importorskip("deepspeed")

NEWS = DATA / "text" / "lee-news-background.txt"
TINY = ROOT / "configs" / "pretrain" / "tiny.yaml"
ZERO1 = ROOT / "configs" / "deepspeed" / "zero1.json"


def run_finetune(*flags: str, cwd: Path = ROOT) -> dict:
    """`python pretrain/finetune.py ...` (one process, in `cwd`); its results.json line."""
    done = subprocess.run([sys.executable, str(ROOT / "pretrain" / "finetune.py"), "--seq_len",
                           str(SEQ), *flags], cwd=cwd, capture_output=True, text=True, timeout=600,
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


def mrpc_subset(path: Path, out: Path, rows: int) -> Path:
    """The header and the first `rows` pairs of an MRPC TSV."""
    out.write_text("\n".join(path.read_text(encoding="utf-8-sig").splitlines()[:rows + 1]) + "\n")
    return out


@pytest.mark.slow
def test_epochs_and_eval_every_record_the_evaluations_and_change_no_step(tmp_path):
    """--epochs 2 on 64 pairs in micro-batches of 16: 2 x 4 = 8 steps; --eval_every 3
    evaluates after steps 3, 6 and the last (8), each kept with its epoch; evaluating during
    training changes no training step (same losses as --steps 8 without it)."""
    init = tiny_export(tmp_path / "hf", news_tokenizer(tmp_path / "tok"), steps=20)
    train = mrpc_subset(MRPC["train"], tmp_path / "train.tsv", 64)
    held_out = mrpc_subset(MRPC["test"], tmp_path / "test.tsv", 32)
    common = ["--init", str(init), "--task", "classify", "--data", str(train), "--eval_data",
              str(held_out), "--micro_batch_size", "16", "--lr", "1e-3"]
    result = run_finetune(*common, "--output", str(tmp_path / "epochs"), "--epochs", "2",
                          "--eval_every", "3")
    assert result["steps"] == 8 and result["epochs"] == 2 and result["steps_per_epoch"] == 4
    assert result["hyperparameters"]["warmup_steps"] == 0  # 10% of 8, rounded down
    evals = result["evals"]
    assert [(e["step"], e["epoch"]) for e in evals] == [(3, 0.75), (6, 1.5), (8, 2.0)]
    assert {k: v for k, v in evals[-1].items() if k not in ("step", "epoch")} == result["after"]
    assert all(e["examples"] == 32 and 0 <= e["macro_f1"] <= 1 for e in evals)
    assert len({e["loss"] for e in evals}) == 3  # three different models evaluated
    saved = json.loads((tmp_path / "epochs" / "results.json").read_text())
    assert saved["evals"] == evals

    steps = run_finetune(*common, "--output", str(tmp_path / "steps"), "--steps", "8")
    assert steps["after"] == result["after"] and [e["step"] for e in steps["evals"]] == [8]
    with open(tmp_path / "epochs" / "metrics.csv", newline="") as a, \
            open(tmp_path / "steps" / "metrics.csv", newline="") as b:
        assert list(csv.DictReader(a)) == list(csv.DictReader(b))


@pytest.mark.slow
def test_bf16_exports_the_fp32_master_weights_not_the_bf16_module(tmp_path):
    """bf16 fine-tuning (ZeRO-1: DeepSpeed's BF16_Optimizer; the JSON forces bf16 on, as on
    CPU "auto" means off): the module trains in bf16, the optimizer keeps fp32 master weights,
    and the export holds those, consolidated from a checkpoint as pretrain.export does. The
    master weights start as the bf16 module's (DeepSpeed casts the model first) and leave bf16's
    grid with the first updates, so an export of the bf16 module would hold only values a bf16
    holds exactly; their bf16 rounding is the module that was evaluated ("after")."""
    from pretrain.export import load_hf_model

    init = tiny_export(tmp_path / "hf", news_tokenizer(tmp_path / "tok"), steps=20)
    ds = json.loads(ZERO1.read_text()) | {"bf16": {"enabled": True}}
    (tmp_path / "zero1-bf16.json").write_text(json.dumps(ds))
    data = news_sft(tmp_path / "sft.jsonl", count=16)
    result = run_finetune("--init", str(init), "--data", str(data), "--task", "sft", "--output",
                          str(tmp_path / "out"), "--steps", "3", "--warmup_steps", "0", "--lr",
                          "1e-3", "--micro_batch_size", "4", "--deepspeed_config",
                          str(tmp_path / "zero1-bf16.json"))
    weights = load_state_dict_safely(tmp_path / "out")
    for name, tensor in weights.items():
        assert tensor.dtype == torch.float32, name
        off_grid = (tensor.to(torch.bfloat16).float() != tensor).float().mean().item()
        assert off_grid > 0.5, (name, off_grid)  # the bf16 module's: 0.0
    # the evaluation after training ran the bf16 module: the export rounded to bf16 is it
    model = load_hf_model(tmp_path / "out").to(torch.bfloat16)
    examples = read_sft(data, LosslessTokenizer.load(tmp_path / "out").encode, SEQ)
    loss_sum, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), 4):
            ids, labels = collate(examples[start:start + 4])
            targets = int((labels[:, 1:] != IGNORE_INDEX).sum())
            loss_sum += model(ids, labels=labels).loss.item() * targets
            count += targets
    assert loss_sum / count == pytest.approx(result["after"]["loss"], rel=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "hf", "out", "sft.jsonl", "tok", "zero1-bf16.json"]  # the scratch checkpoint is gone


@pytest.mark.slow
def test_results_record_absolute_paths_that_rerun_from_another_directory(tmp_path,
                                                                          monkeypatch):
    """INIT, the data and the tokenizer given relative to one working directory are recorded
    in results.json resolved, so the run can be repeated from another directory with them
    (recorded as given, "hf" and "sft.jsonl" would name nothing there)."""
    here, elsewhere = (tmp_path / "here").resolve(), (tmp_path / "elsewhere").resolve()
    elsewhere.mkdir()
    tiny_export(here / "hf", news_tokenizer(here / "tok"), steps=5)
    news_sft(here / "sft.jsonl", count=8)
    monkeypatch.chdir(here)
    first = run_finetune("--init", "hf", "--data", "sft.jsonl", "--tokenizer", "tok", "--task",
                         "sft", "--output", "out", "--steps", "2", "--micro_batch_size", "4",
                         cwd=here)
    saved = json.loads((here / "out" / "results.json").read_text())
    assert saved == first
    recorded = {key: first[key] for key in ("init", "data", "eval_data", "tokenizer")}
    assert recorded == {"init": str(here / "hf"), "data": str(here / "sft.jsonl"),
                        "eval_data": str(here / "sft.jsonl"), "tokenizer": str(here / "tok")}
    monkeypatch.chdir(elsewhere)
    again = run_finetune("--init", first["init"], "--data", first["data"], "--eval_data",
                         first["eval_data"], "--tokenizer", first["tokenizer"], "--task", "sft",
                         "--output", "out", "--steps", "2", "--micro_batch_size", "4",
                         cwd=elsewhere)
    assert again["after"] == first["after"] and again["before"] == first["before"]
    assert {key: again[key] for key in recorded} == recorded
