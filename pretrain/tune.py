"""Ray Tune over fine-tuning hyperparameters; the best trial's model exported.

    python -m pretrain.tune --task {classify,sft,text} --init MODEL --data FILE \\
        [--eval_data FILE] --samples N --output OUT [search space] [fixed flags]

Each trial is a pretrain.finetune run (its functions, in a Ray Tune trial on one CPU) with
hyperparameters drawn from the search space; a flag given one value fixes that hyperparameter:

  --lr LOW HIGH           peak learning rate, log-uniform (default 1e-5 1e-3); min_lr is lr / 10
  --micro_batch_size N..  choice (default 8 16 32)
  --epochs N..            passes over the training data, choice (default 1 2 3)
  --warmup_ratio R..      warmup as a fraction of the steps, choice (default 0 0.1), or
  --warmup_steps N..      warmup steps, choice (not with --warmup_ratio)
  --weight_decay W..      AdamW weight decay, choice (default 0 0.01 0.1)

--samples trials are drawn by a generator seeded with --seed (the same command draws the same
configs), and every trial fine-tunes with --seed (head init, data order). Each trial evaluates on
--eval_data (default: --data) --evals_per_epoch times per epoch and after its last step, and
reports each evaluation to Tune with a checkpoint: the model as it was then. The metric is
--metric: classify: macro_f1 (default), accuracy or f1 (maximized), or loss (minimized); sft
and text: loss, the mean token loss (minimized). ASHA (ray.tune.schedulers.ASHAScheduler)
stops the trials that fall behind: its time is the epoch (examples consumed / training
examples, comparable across batch sizes), its max_t the largest --epochs, with --grace_period
(epochs) and --reduction_factor. Its decisions depend on the order in which trials running at
the same time reach a rung, so which trials it stops may differ between runs of one command.

The best trial is the one whose last report (where it finished, or where ASHA stopped it) has
the best metric; ties go to the lower eval loss, then to the earlier trial. The checkpoint of
that report is exported to OUT: the model as pretrain.finetune exports it (config.json,
model.safetensors, the tokenizer files), trial.json (that trial's hyperparameters and the
scores of that evaluation) and tune.json (metric, mode, search space, scheduler, the best
trial, and every trial's hyperparameters, status, last scores and evaluations). Tune's own
files (per-trial params.json, result.json, checkpoints) are under OUT/tune/. --overwrite
replaces an earlier result (OUT with a tune.json), removed once the checks have passed.

Trials run on CPU (DS_ACCELERATOR=cpu, even where a GPU is), each on 1 CPU (--cpus_per_trial),
on a new local Ray with --num_cpus CPUs (default: all of this machine's): as many trials run
at once as fit. Every flag is checked, and the data files read once, before Ray starts: a bad
flag or value fails with the flag and the reason, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pretrain import finetune
from pretrain.config import ConfigError
from pretrain.export import CONFIG_FILE, model_config_from_hf
from pretrain.files import write_json
from pretrain.finetune_data import READERS
from refine import LOG_FORMAT

log = logging.getLogger("pretrain.tune")

METRICS = {"classify": {"macro_f1": "max", "accuracy": "max", "f1": "max", "loss": "min"},
           "sft": {"loss": "min"}, "text": {"loss": "min"}}
DEFAULT_METRIC = {"classify": "macro_f1", "sft": "loss", "text": "loss"}
SEARCHED = ("lr", "micro_batch_size", "epochs", "warmup_ratio", "warmup_steps", "weight_decay")
RESULTS_FILE = "tune.json"
TRIAL_FILE = "trial.json"


def _number(kind: type, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> Callable[[str], Any]:
    """An argparse type: `kind` in [low, high] (low excluded when low_open)."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high}")
        return value
    return convert


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pretrain.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(READERS), required=True,
                        help="as pretrain.finetune's --task")
    parser.add_argument("--init", type=Path, required=True,
                        help="exported HF directory or pretrain.train checkpoint directory")
    parser.add_argument("--data", type=Path, required=True, help="training file")
    parser.add_argument("--eval_data", type=Path, default=None,
                        help="validation file the trials report on (default: --data)")
    parser.add_argument("--samples", type=_number(int, 1), required=True,
                        help="trials to draw from the search space")
    parser.add_argument("--output", type=Path, required=True,
                        help="OUT: the best trial's export, trial.json, tune.json, tune/")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it holds an earlier pretrain.tune result")
    space = parser.add_argument_group("search space (one value fixes a hyperparameter)")
    space.add_argument("--lr", type=_number(float, 0, low_open=True), nargs="+",
                       default=[1e-5, 1e-3], metavar="LR",
                       help="LOW HIGH: log-uniform peak lr (default: 1e-5 1e-3)")
    space.add_argument("--micro_batch_size", type=_number(int, 1), nargs="+",
                       default=[8, 16, 32], metavar="N", help="choice (default: 8 16 32)")
    space.add_argument("--epochs", type=_number(int, 1), nargs="+", default=[1, 2, 3],
                       metavar="N", help="choice (default: 1 2 3)")
    space.add_argument("--warmup_ratio", type=_number(float, 0, 1), nargs="+", default=None,
                       metavar="R", help="choice of warmup fractions (default: 0 0.1)")
    space.add_argument("--warmup_steps", type=_number(int, 0), nargs="+", default=None,
                       metavar="N", help="choice of warmup steps (not with --warmup_ratio)")
    space.add_argument("--weight_decay", type=_number(float, 0), nargs="+",
                       default=[0.0, 0.01, 0.1], metavar="W",
                       help="choice (default: 0 0.01 0.1)")
    search = parser.add_argument_group("search")
    search.add_argument("--metric", default=None,
                        help="classify: macro_f1 (default), accuracy, f1 or loss; sft, text: "
                             "loss (the default)")
    search.add_argument("--evals_per_epoch", type=_number(int, 1), default=2,
                        help="evaluations (Tune reports) per epoch of a trial (default: 2)")
    search.add_argument("--grace_period", type=_number(float, 0, low_open=True), default=0.5,
                        help="ASHA: epochs before a trial can be stopped (default: 0.5)")
    search.add_argument("--reduction_factor", type=_number(float, 1, low_open=True),
                        default=2.0, help="ASHA: keep 1 / this of the trials per rung "
                                          "(default: 2)")
    search.add_argument("--num_cpus", type=_number(int, 1), default=None,
                        help="CPUs of the local Ray (default: all of this machine's)")
    search.add_argument("--cpus_per_trial", type=_number(int, 1), default=1,
                        help="CPUs (and torch threads) per trial (default: 1)")
    fixed = parser.add_argument_group("fixed fine-tuning flags (as pretrain.finetune's)")
    fixed.add_argument("--seq_len", type=_number(int, 1), default=256, help="(default: 256)")
    fixed.add_argument("--grad_accum", type=_number(int, 1), default=1, help="(default: 1)")
    fixed.add_argument("--grad_clip", type=_number(float, 0), default=1.0,
                       help="(default: 1.0)")
    fixed.add_argument("--num_labels", type=_number(int, 2), default=None,
                       help="classify: classes (default: max training label + 1)")
    fixed.add_argument("--seed", type=int, default=0,
                       help="draws the trials' configs; each trial's head init and data order")
    fixed.add_argument("--deepspeed_config", type=Path,
                       default=finetune.ROOT / "configs" / "deepspeed" / "zero1.json",
                       help="(default: configs/deepspeed/zero1.json)")
    fixed.add_argument("--tokenizer", type=Path, default=None,
                       help="tokenizer directory (default: INIT, or the checkpoint's)")
    fixed.add_argument("--tag", default=None, help="checkpoint tag (default: CKPT/latest)")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """The checks that need more than one flag, and the output directory."""
    metrics = METRICS[args.task]
    if args.metric is None:
        args.metric = DEFAULT_METRIC[args.task]
    if args.metric not in metrics:
        raise ConfigError(f"--metric {args.metric}: --task {args.task} reports "
                          f"{', '.join(metrics)}")
    if len(args.lr) > 2:
        raise ConfigError(f"--lr {' '.join(map(str, args.lr))}: give LOW HIGH (log-uniform) "
                          "or one value")
    if len(args.lr) == 2 and not args.lr[0] < args.lr[1]:
        raise ConfigError(f"--lr {args.lr[0]} {args.lr[1]}: LOW must be below HIGH")
    if args.warmup_ratio is not None and args.warmup_steps is not None:
        raise ConfigError("--warmup_ratio and --warmup_steps are both given: search one")
    if args.warmup_ratio is None and args.warmup_steps is None:
        args.warmup_ratio = [0.0, 0.1]
    if args.grace_period > max(args.epochs):
        raise ConfigError(f"--grace_period {args.grace_period} > the largest --epochs "
                          f"{max(args.epochs)}: no trial could ever be stopped")
    cpus = args.num_cpus or os.cpu_count() or 1
    if args.cpus_per_trial > cpus:
        raise ConfigError(f"--cpus_per_trial {args.cpus_per_trial} > the {cpus} CPUs of the "
                          "local Ray (--num_cpus): no trial could start")
    for flag in ("init", "data", "eval_data", "deepspeed_config", "tokenizer"):
        path = getattr(args, flag)
        if path is not None and not path.exists():
            raise ConfigError(f"--{flag} {path} does not exist")
    out = args.output
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not out.is_dir():
            raise ConfigError(f"--output {out} is a file: choose a directory")
        if not args.overwrite:
            raise ConfigError(f"--output {out} exists: pass --overwrite to replace it, or "
                              "choose another directory")
        if not (out / RESULTS_FILE).is_file():
            raise ConfigError(f"refusing to --overwrite {out}: it holds no {RESULTS_FILE}, so "
                              "it is not an earlier pretrain.tune result; delete it yourself "
                              "if you mean to")


def max_positions(init: Path, tag: str | None) -> int:
    """The context length of INIT (an export's config.json or a checkpoint's train state)."""
    if (init / CONFIG_FILE).is_file():
        return model_config_from_hf(json.loads((init / CONFIG_FILE).read_text())
                                    ).max_position_embeddings
    _, state = finetune.checkpoint_state(init, tag)
    return int(state["model"]["max_position_embeddings"])


def check_data(args: argparse.Namespace) -> int:
    """Read (tokenize) the data as the trials will, refusing what they would refuse; the number
    of training examples."""
    from pretrain.codec import LosslessTokenizer

    limit = max_positions(args.init, args.tag)
    if args.seq_len > limit:
        raise ConfigError(f"--seq_len {args.seq_len} > the model's max_position_embeddings "
                          f"{limit}")
    tokenizer = LosslessTokenizer.load(finetune.init_tokenizer(args.init, args.tokenizer,
                                                               args.tag))
    read = READERS[args.task]
    train = read(args.data, tokenizer.encode, args.seq_len)
    held_out = read(args.eval_data, tokenizer.encode, args.seq_len) if args.eval_data else train
    if not train or not held_out:
        raise ConfigError(f"no usable examples in {args.data if not train else args.eval_data}")
    if args.task == "classify":
        labels = {int(e.labels) for e in (*train, *held_out)}  # type: ignore[arg-type]
        if args.num_labels is not None and max(labels) >= args.num_labels:
            raise ConfigError(f"--num_labels {args.num_labels}: the data has label "
                              f"{max(labels)}")
    if args.warmup_steps is not None:
        fewest = min(finetune.steps_for_epochs(epochs, len(train), micro, 1, args.grad_accum)
                     for epochs in args.epochs for micro in args.micro_batch_size)
        if max(args.warmup_steps) > fewest:
            raise ConfigError(f"--warmup_steps {max(args.warmup_steps)} > the {fewest} steps of "
                              "the shortest trial (fewest --epochs, largest --micro_batch_size)")
    return len(train)


def search_space(args: argparse.Namespace) -> dict[str, Any]:
    """Tune's param_space: a domain per searched hyperparameter, a constant per fixed one."""
    from refine.dag import search_choice, search_loguniform

    def choice(values: list[Any]) -> Any:
        return values[0] if len(set(values)) == 1 else search_choice(sorted(set(values)))

    space = {"lr": args.lr[0] if len(args.lr) == 1 else search_loguniform(*args.lr),
             "micro_batch_size": choice(args.micro_batch_size), "epochs": choice(args.epochs),
             "weight_decay": choice(args.weight_decay)}
    if args.warmup_steps is not None:
        space["warmup_steps"] = choice(args.warmup_steps)
    else:
        space["warmup_ratio"] = choice(args.warmup_ratio)
    return space


def describe_space(args: argparse.Namespace) -> dict[str, Any]:
    warmup = ("warmup_steps", args.warmup_steps) if args.warmup_steps is not None else (
        "warmup_ratio", args.warmup_ratio)
    return {"lr": {"loguniform": args.lr} if len(args.lr) == 2 else args.lr[0],
            "micro_batch_size": args.micro_batch_size, "epochs": args.epochs,
            warmup[0]: warmup[1], "weight_decay": args.weight_decay}


def trial_flags(config: dict[str, Any], fixed: dict[str, Any], output: Path) -> list[str]:
    """pretrain.finetune's flags for a trial's hyperparameters."""
    per_epoch = finetune.steps_for_epochs(1, fixed["train_examples"], config["micro_batch_size"],
                                          1, fixed["grad_accum"])
    flags = ["--task", fixed["task"], "--init", fixed["init"], "--data", fixed["data"],
             "--output", str(output), "--overwrite", "--seq_len", str(fixed["seq_len"]),
             "--grad_accum", str(fixed["grad_accum"]), "--grad_clip", str(fixed["grad_clip"]),
             "--seed", str(fixed["seed"]), "--deepspeed_config", fixed["deepspeed_config"],
             "--lr", repr(float(config["lr"])),
             "--micro_batch_size", str(config["micro_batch_size"]),
             "--epochs", str(config["epochs"]),
             "--weight_decay", repr(float(config["weight_decay"])),
             "--eval_every", str(max(1, per_epoch // fixed["evals_per_epoch"])),
             "--log_every", str(max(1, per_epoch))]
    if "warmup_steps" in config:
        flags += ["--warmup_steps", str(config["warmup_steps"])]
    else:
        flags += ["--warmup_ratio", repr(float(config["warmup_ratio"]))]
    for key in ("eval_data", "num_labels", "tokenizer", "tag"):
        if fixed[key] is not None:
            flags += [f"--{key}", str(fixed[key])]
    return flags


def run_trial(config: dict[str, Any], fixed: dict[str, Any]) -> None:
    """A Tune trial: pretrain.finetune with the trial's hyperparameters, reporting each
    evaluation with a checkpoint of the model at that point."""
    os.environ["DS_ACCELERATOR"] = "cpu"  # trials run on CPU, whatever the machine has
    import torch

    from pretrain.train import shutdown_distributed
    from refine.dag import report_trial, trial_id

    torch.set_num_threads(fixed["cpus_per_trial"])
    this_trial = trial_id()
    # finetune's own OUT (its final export and results.json): the reports and their
    # checkpoints already hold all of it, so it goes when the trial ends
    workdir = tempfile.TemporaryDirectory(prefix="tune-trial-")
    args = finetune.parse_args(trial_flags(config, fixed, Path(workdir.name) / "export"))
    planned = finetune.steps_for_epochs(config["epochs"], fixed["train_examples"],
                                        config["micro_batch_size"], 1, fixed["grad_accum"])

    def report(record: dict[str, Any], export: Callable[[Path], None]) -> None:
        scores = {**record, "final": record["step"] == planned}
        with tempfile.TemporaryDirectory() as tmp:
            export(Path(tmp))
            write_json(Path(tmp) / TRIAL_FILE, {"trial_id": this_trial,
                                                "hyperparameters": config, "scores": scores})
            report_trial(scores, tmp)

    succeeded = False
    try:
        finetune.finetune(args, on_eval=report)
        succeeded = True
    finally:
        shutdown_distributed(succeeded)
        workdir.cleanup()


def trial_dirname(trial_id: str) -> str:
    """OUT/tune/trials/trial_ID: short, and the trial_id of its reports."""
    return f"trial_{trial_id}"


def score_key(metric: str, mode: str) -> Callable[[dict[str, Any]], tuple]:
    """Sort key of a trial's last scores: best first (NaN last), then lower loss, then the
    earlier trial."""
    def key(scores: dict[str, Any]) -> tuple:
        value = float(scores[metric])
        value = math.inf if math.isnan(value) else (-value if mode == "max" else value)
        loss = float(scores.get("loss", math.inf))
        return value, math.inf if math.isnan(loss) else loss, scores["trial_id"]
    return key


def tune_run(args: argparse.Namespace) -> dict[str, Any]:
    check_args(args)
    train_examples = check_data(args)
    mode = METRICS[args.task][args.metric]

    os.environ["DS_ACCELERATOR"] = "cpu"  # inherited by the local Ray's workers
    from refine.dag import tune_fit

    if args.output.exists():
        shutil.rmtree(args.output)  # empty, or an earlier result with --overwrite (check_args)
    args.output.mkdir(parents=True)
    storage = args.output.resolve() / "tune"

    def absolute(path: Path | None) -> str | None:
        return None if path is None else str(path.resolve())

    fixed = {"task": args.task, "init": absolute(args.init), "data": absolute(args.data),
             "eval_data": absolute(args.eval_data), "tokenizer": absolute(args.tokenizer),
             "deepspeed_config": absolute(args.deepspeed_config), "tag": args.tag,
             "num_labels": args.num_labels, "seq_len": args.seq_len,
             "grad_accum": args.grad_accum, "grad_clip": args.grad_clip, "seed": args.seed,
             "evals_per_epoch": args.evals_per_epoch, "train_examples": train_examples,
             "cpus_per_trial": args.cpus_per_trial}
    scheduler = {"time_attr": "epoch", "max_t": max(args.epochs),
                 "grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
    results = tune_fit(run_trial, {"fixed": fixed}, search_space(args), samples=args.samples,
                       metric=args.metric, mode=mode, seed=args.seed, storage=storage,
                       name="trials", trial_dirname=trial_dirname,
                       cpus_per_trial=args.cpus_per_trial, num_cpus=args.num_cpus, **scheduler)

    trials, reported = [], []
    for result in results:
        scores = result.metrics
        keys = ("step", "epoch", "loss", args.metric)
        trial = {"trial_id": scores.get("trial_id") or Path(result.path).name,
                 "hyperparameters": result.config,
                 "status": ("error" if result.error is not None
                            else "no report" if args.metric not in scores
                            else "completed" if scores.get("final") else "stopped by ASHA"),
                 "scores": {k: v for k, v in scores.items() if k in RECORD_KEYS},
                 "evals": [{k: row[k] for k in keys if k in row} for row in result.history],
                 "path": result.path}
        if result.error is not None:
            trial["error"] = result.error.strip().splitlines()[-1][:1000]
            log.warning("trial %s failed: %s", trial["trial_id"], trial["error"])
        trials.append(trial)
        if args.metric in scores and result.checkpoint is not None:
            reported.append((scores, result.checkpoint))
    trials.sort(key=lambda t: t["trial_id"])
    if not reported:
        errors = "; ".join(f"{t['trial_id']}: {t.get('error', t['status'])}" for t in trials)
        raise TuneError(f"no trial reported {args.metric} ({errors})")
    best_scores, checkpoint = min(reported, key=lambda r: score_key(args.metric, mode)(r[0]))
    for item in Path(checkpoint).iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, args.output / item.name)
    best = next(t for t in trials if t["trial_id"] == best_scores["trial_id"])
    summary = {"task": args.task, "init": absolute(args.init), "data": absolute(args.data),
               "eval_data": absolute(args.eval_data or args.data), "metric": args.metric,
               "mode": mode, "samples": args.samples, "seed": args.seed,
               "search_space": describe_space(args), "fixed": fixed,
               "scheduler": {"name": "ASHA", **scheduler},
               "best": {"trial_id": best["trial_id"], "hyperparameters": best["hyperparameters"],
                        "scores": best["scores"]},
               "trials": trials, "tune_dir": str(storage / "trials")}
    write_json(args.output / RESULTS_FILE, summary)
    print(json.dumps({"output": str(args.output), "metric": args.metric, "mode": mode,
                      "best": summary["best"],
                      "trials": {t["trial_id"]: t["status"] for t in trials}}), flush=True)
    return summary


# what tune.json keeps of a report (Tune adds timing and bookkeeping fields)
RECORD_KEYS = {"step", "epoch", "final", "loss", "examples", "accuracy", "f1", "macro_f1",
               "majority_class", "majority_accuracy", "majority_f1", "majority_macro_f1"}


class TuneError(RuntimeError):
    """No trial produced a result."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        tune_run(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
