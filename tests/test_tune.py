"""pretrain.tune: Ray Tune over fine-tuning hyperparameters, the best trial exported. The flag
checks run in-process (no Ray); the search runs 4 tiny trials on MRPC pairs on a local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain import finetune, tune
from pretrain.classifier import SequenceClassifier, classification_metrics
from pretrain.codec import LosslessTokenizer
from pretrain.export import load_state_dict_safely, model_config_from_hf
from pretrain.finetune_data import PAD_ID, collate, read_classify

from .tiny_lm import news_tokenizer, tiny_export

pytest.importorskip("deepspeed")
pytest.importorskip("ray.tune")

ROOT = Path(__file__).resolve().parent.parent
MRPC = {split: Path(__file__).parent / "data" / "finetune" / f"msr_paraphrase_{split}.txt"
        for split in ("train", "test")}
SEQ = 128


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> Path:
    """A tiny news LM (max_position_embeddings 128), exported as pretrain.export writes it."""
    root = tmp_path_factory.mktemp("tune")
    return tiny_export(root / "hf", news_tokenizer(root / "tok"), steps=20)


def mrpc_subset(split: str, out: Path, rows: int) -> Path:
    """The header and the first `rows` pairs of MRPC's TSV."""
    lines = MRPC[split].read_text(encoding="utf-8-sig").splitlines()[:rows + 1]
    out.write_text("\n".join(lines) + "\n")
    return out


# --- fast: the command line, no Ray ----------------------------------------------------------

def test_help_explains_the_search():
    done = subprocess.run([sys.executable, "-m", "pretrain.tune", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    for words in ("--samples", "log-uniform", "ASHA", "macro_f1", "--grace_period",
                  "tune.json", "trial.json", "1 CPU", "--warmup_ratio", "--weight_decay"):
        assert words in done.stdout, words


@pytest.mark.parametrize(("flags", "expected"), [
    (["--samples", "0"], "argument --samples: 0 must be >= 1"),
    (["--lr", "1e-3", "1e-4"], "--lr 0.001 0.0001: LOW must be below HIGH"),
    (["--lr", "1e-4", "1e-3", "1e-2"], "give LOW HIGH"),
    (["--lr", "-0.001", "1e-3"], "argument --lr: -0.001 must be > 0"),
    (["--micro_batch_size", "8", "0"], "argument --micro_batch_size: 0 must be >= 1"),
    (["--epochs", "two"], "argument --epochs: 'two' is not an integer"),
    (["--warmup_ratio", "1.5"], "argument --warmup_ratio: 1.5 must be <= 1"),
    (["--warmup_ratio", "0.1", "--warmup_steps", "2"], "both given"),
    (["--warmup_steps", "50", "--epochs", "1", "--micro_batch_size", "32"],
     "--warmup_steps 50 > the 2 steps of the shortest trial"),
    (["--weight_decay", "nan"], "argument --weight_decay: 'nan' is not a finite number"),
    (["--metric", "bleu"], "--metric bleu: --task classify reports macro_f1, accuracy, f1"),
    (["--task", "sft", "--metric", "accuracy"], "--task sft reports loss"),
    (["--grace_period", "4"], "--grace_period 4.0 > the largest --epochs 3"),
    (["--reduction_factor", "1"], "argument --reduction_factor: 1 must be > 1"),
    (["--cpus_per_trial", "3", "--num_cpus", "2"], "--cpus_per_trial 3 > the 2 CPUs"),
    (["--seq_len", "4096"], "--seq_len 4096 > the model's max_position_embeddings 128"),
    (["--num_labels", "2", "--data", "LABEL3"], "--num_labels 2: the data has label 3"),
    (["--eval_data", "MISSING"], "--eval_data"),
    (["--task", "sft"], "not a JSON object"),  # the MRPC TSV is no SFT JSONL
])
def test_a_bad_flag_fails_before_any_work(init, tmp_path, capsys, monkeypatch, flags, expected):
    """Exit status 2 with the flag and the reason; no Ray started, no OUT made."""
    import ray

    import refine.dag

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a bad flag")

    # (the suite's own local Ray may be up already: watch for a start, not for a Ray)
    monkeypatch.setattr(refine.dag, "init_ray", no_ray)
    monkeypatch.setattr(ray, "init", no_ray)
    data = mrpc_subset("train", tmp_path / "train.tsv", 64)
    if "LABEL3" in flags:
        data.write_text(data.read_text().replace("\n1\t", "\n3\t", 1))
        flags = [f for f in flags if f != "LABEL3"]
        flags.remove("--data")
    flags = [str(tmp_path / "missing.tsv") if f == "MISSING" else f for f in flags]
    defaults = {"--task": "classify", "--init": str(init), "--data": str(data),
                "--samples": "2", "--output": str(tmp_path / "out"), "--seq_len": str(SEQ)}
    argv = [x for key, value in defaults.items() if key not in flags for x in (key, value)]
    try:
        code = tune.main(argv + flags)
    except SystemExit as exit_:  # argparse's errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_existing_output_is_refused(init, tmp_path, capsys, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = tune.main(["--task", "classify", "--init", str(init), "--data", str(MRPC["train"]),
                      "--samples", "1", "--output", str(out)] + (["--overwrite"] * overwrite))
    err = capsys.readouterr().err
    assert code == 2
    assert ("not an earlier pretrain.tune result" if overwrite else "--overwrite") in err
    assert (out / "keep.txt").read_text() == "mine"


def test_trial_flags_are_finetune_flags(tmp_path):
    """A trial's hyperparameters become pretrain.finetune flags: its --epochs, an --eval_every
    of steps per epoch / evals_per_epoch, and the fixed flags."""
    fixed = {"task": "classify", "init": "/m", "data": "/d.tsv", "eval_data": "/e.tsv",
             "tokenizer": None, "deepspeed_config": "/ds.json", "tag": None, "num_labels": None,
             "seq_len": 64, "grad_accum": 1, "grad_clip": 1.0, "seed": 3,
             "evals_per_epoch": 2, "train_examples": 300, "cpus_per_trial": 1}
    config = {"lr": 3.1e-4, "micro_batch_size": 32, "epochs": 2, "warmup_ratio": 0.1,
              "weight_decay": 0.01}
    args = finetune.parse_args(tune.trial_flags(config, fixed, tmp_path / "export"))
    finetune.check_flags(args)
    assert (args.lr, args.micro_batch_size, args.epochs, args.warmup_ratio, args.weight_decay,
            args.steps) == (3.1e-4, 32, 2, 0.1, 0.01, None)
    assert args.eval_every == 4  # 9 steps per epoch (300 // 32), 2 evaluations each
    assert (args.seed, args.seq_len, args.eval_data, args.output) == (
        3, 64, Path("/e.tsv"), tmp_path / "export")
    steps = {**config, "warmup_steps": 2}
    del steps["warmup_ratio"]
    args = finetune.parse_args(tune.trial_flags(steps, fixed, tmp_path / "export"))
    assert (args.warmup_steps, args.warmup_ratio) == (2, None)


def test_ties_go_to_the_lower_loss_then_the_earlier_trial():
    key = tune.score_key("macro_f1", "max")
    reports = [{"trial_id": "a_00000", "macro_f1": 0.4, "loss": 0.7},
               {"trial_id": "a_00001", "macro_f1": 0.5, "loss": 0.9},
               {"trial_id": "a_00002", "macro_f1": 0.5, "loss": 0.6},
               {"trial_id": "a_00003", "macro_f1": 0.5, "loss": 0.6},
               {"trial_id": "a_00004", "macro_f1": float("nan"), "loss": 0.1}]
    assert [r["trial_id"] for r in sorted(reports, key=key)] == [
        "a_00002", "a_00003", "a_00001", "a_00000", "a_00004"]
    assert min(reports, key=tune.score_key("loss", "min"))["trial_id"] == "a_00004"


# --- slow: a real search ---------------------------------------------------------------------

def tune_reports(trial_dir: Path) -> list[dict]:
    """The reports Tune recorded for a trial (its result.json, one JSON object per line)."""
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()
            if line.strip()]


@pytest.mark.slow
def test_tune_exports_the_trial_with_the_best_reported_metric(init, tmp_path):
    train = mrpc_subset("train", tmp_path / "train.tsv", 96)
    held_out = mrpc_subset("test", tmp_path / "test.tsv", 64)
    out = tmp_path / "best"
    command = [sys.executable, "-m", "pretrain.tune", "--task", "classify", "--init", str(init),
               "--data", str(train), "--eval_data", str(held_out), "--samples", "4",
               "--output", str(out), "--lr", "1e-4", "1e-2", "--micro_batch_size", "16", "32",
               "--epochs", "1", "2", "--weight_decay", "0", "0.1", "--seq_len", str(SEQ),
               "--num_cpus", "2", "--seed", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    summary = json.loads((out / "tune.json").read_text())
    assert (summary["metric"], summary["mode"]) == ("macro_f1", "max")
    assert summary["scheduler"]["name"] == "ASHA" and summary["scheduler"]["max_t"] == 2

    # Tune's own record of the trials: their configs and every report
    trial_dirs = sorted((out / "tune" / "trials").glob("trial_*"))
    assert len(trial_dirs) == 4
    trials = {}
    for trial_dir in trial_dirs:
        config = json.loads((trial_dir / "params.json").read_text())
        reports = tune_reports(trial_dir)
        assert reports, f"{trial_dir.name} reported nothing"
        epochs = [r["epoch"] for r in reports]
        assert epochs == sorted(epochs) and epochs[-1] <= config["epochs"]
        assert all(0 <= r["macro_f1"] <= 1 and r["examples"] == 64 for r in reports)
        trials[reports[-1]["trial_id"]] = (config, reports)
        # each report came with a checkpoint; Tune keeps the last (the model of the last report)
        checkpoint, = trial_dir.glob("checkpoint_*")
        kept = json.loads((checkpoint / "trial.json").read_text())
        assert kept["scores"]["step"] == reports[-1]["step"] and kept["hyperparameters"] == config
    # every trial's hyperparameters drawn from the space the flags gave, four different ones
    drawn = [trials[t][0] for t in sorted(trials)]
    for config in drawn:
        assert 1e-4 <= config["lr"] <= 1e-2 and config["micro_batch_size"] in (16, 32)
        assert config["epochs"] in (1, 2) and config["weight_decay"] in (0, 0.1)
    assert len({json.dumps(c, sort_keys=True) for c in drawn}) == 4
    # reported as it trains: one report per half epoch (those ASHA let go on), then the last
    assert max(len(reports) for _, reports in trials.values()) >= 3
    status = {t["trial_id"]: t["status"] for t in summary["trials"]}
    for trial_id, (config, reports) in trials.items():
        assert status[trial_id] == ("completed" if reports[-1]["final"] else "stopped by ASHA")
        if reports[-1]["final"]:
            assert reports[-1]["epoch"] == config["epochs"]

    # the best: the best macro-F1 of a trial's last report, then the lower loss, then the id
    best_id = min(trials, key=lambda t: (-trials[t][1][-1]["macro_f1"],
                                         trials[t][1][-1]["loss"], t))
    best_config, best_reports = trials[best_id]
    assert summary["best"]["trial_id"] == best_id
    exported = json.loads((out / "trial.json").read_text())
    assert exported["trial_id"] == best_id
    assert exported["hyperparameters"] == best_config == summary["best"]["hyperparameters"]
    last = best_reports[-1]
    assert exported["scores"]["macro_f1"] == last["macro_f1"]
    assert exported["scores"]["step"] == last["step"]
    assert summary["best"]["scores"]["macro_f1"] == last["macro_f1"]

    # the exported classifier, evaluated again, scores what the trial reported
    hf = json.loads((out / "config.json").read_text())
    assert hf["architectures"] == ["LlamaForSequenceClassification"] and hf["num_labels"] == 2
    model = SequenceClassifier(model_config_from_hf(hf), 2, PAD_ID)
    model.load_state_dict(load_state_dict_safely(out))
    model.eval()
    examples = read_classify(held_out, LosslessTokenizer.load(out).encode, SEQ)
    micro = best_config["micro_batch_size"]
    predictions, loss_sum = [], 0.0
    with torch.no_grad():
        for start in range(0, len(examples), micro):
            ids, labels = collate(examples[start:start + micro])
            output = model(ids, labels=labels)
            predictions += output.logits.argmax(-1).tolist()
            loss_sum += output.loss.item() * len(ids)
    labels = [int(e.labels) for e in examples]
    recomputed = classification_metrics(predictions, labels, last["majority_class"],
                                        num_labels=2)
    for key in ("macro_f1", "accuracy", "f1"):
        assert recomputed[key] == last[key], (key, recomputed, last)
    assert loss_sum / len(examples) == pytest.approx(last["loss"], rel=1e-5)
