"""Fine-tune a pretrained model with DeepSpeed: SFT, continued pretraining, or classification.

    deepspeed [--num_gpus N] pretrain/finetune.py --init INIT --data FILE \
        --task {sft,text,classify} --output OUT [--steps N] [--eval_data FILE] ...
    python pretrain/finetune.py ...      (one process: rank 0 of 1, no launcher needed)

INIT is an exported directory (`python -m pretrain.export`: config.json, model.safetensors,
tokenizer files) or a pretrain.train checkpoint directory CKPT (consolidated from its ZeRO
shards in memory by pretrain.export's `consolidated_state_dict`; its tokenizer from
--tokenizer or the one it recorded, as pretrain.export finds it). The tokenizer is the
SentencePiece model (tokenizer.model) of INIT (or --tokenizer), encoding as pretrain.encode
does (`pretrain.codec.LosslessTokenizer`): the pretraining ids. Data formats: see
pretrain.finetune_data.

The engine is pretrain.train's (same DeepSpeed JSON filling, AdamW groups, warmup + cosine lr),
built from this command's flags instead of a YAML. Before and after training the model is
evaluated on --eval_data (default: the training data): mean token loss (sft, text), or
accuracy, F1 of class 1, macro-F1 and the majority-class baseline (classify). OUT/ receives the
export (sft, text: a transformers LlamaForCausalLM directory; classify:
LlamaForSequenceClassification with num_labels and pad_token_id), the tokenizer files,
metrics.csv (loss and lr per step) and results.json (also printed as one JSON line; INIT, the
data files and the tokenizer directory in it as absolute paths, so they hold from any working
directory). Under bf16 the export holds the optimizer's fp32 master weights, not the module's
bf16 copy: they are saved as a DeepSpeed checkpoint in a scratch directory beside OUT and
consolidated as pretrain.export consolidates a pretraining checkpoint (see `export_state_dict`).

Length of training: --steps N optimizer steps (default 100), or --epochs E passes over the
training data, not both. An epoch is one seeded shuffle of the training examples cut into
micro-batches of micro_batch_size x ranks examples (a last partial batch is left out; each
epoch reshuffles), so --epochs E runs ceil(E x micro-batches per epoch / grad_accum) steps;
results.json records "steps" and "steps_per_epoch". Warmup: --warmup_steps, or --warmup_ratio
(a fraction of the steps; default 0.1), not both.

--eval_every N also evaluates on --eval_data every N optimizer steps during training. Every
evaluation after a training step (those and the one after the last step, which is "after") is
logged and kept in results.json's "evals": step, epoch (micro-batches consumed / micro-batches
per epoch) and the metrics.
"""

from __future__ import annotations

import os
import shutil
import sys

if __package__ in (None, ""):  # a script: use the repo root, not pretrain/ (see train.py)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402 (after the path fix above)
import csv
import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from pretrain.classifier import SequenceClassifier, classification_metrics, save_classifier
from pretrain.codec import LosslessTokenizer
from pretrain.config import ConfigError, TrainingConfig, parse
from pretrain.export import (
    CONFIG_FILE,
    hf_state_dict,
    load_hf_model,
    recorded_tokenizer,
    save_hf_model,
)
from pretrain.files import describe, write_json
from pretrain.finetune_data import PAD_ID, READERS, Example, collate
from pretrain.model import CausalLM, ModelConfig
from pretrain.training.checkpoints import latest, read_train_state
from pretrain.training.engine import (
    EngineStepper,
    bf16_supported,
    build_engine,
    consolidated_state_dict,
    deepspeed_config,
    exit_process,
    export_state_dict,
    init_distributed,
    log_from_rank_zero,
    quiet_deepspeed,
    run_command,
)
from pretrain.training.loop import Batch, Step, every, run_steps, seed_everything

log = logging.getLogger("pretrain.finetune")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STEPS = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", type=Path, required=True,
                        help="exported HF directory or pretrain.train checkpoint directory")
    parser.add_argument("--data", type=Path, required=True, help="training file")
    parser.add_argument("--task", choices=sorted(READERS), required=True,
                        help="sft: prompt/response JSONL, loss on responses only; text: plain "
                             "text or JSONL 'text'; classify: MRPC TSV or JSONL text[/text_pair]"
                             "/label")
    parser.add_argument("--output", type=Path, required=True, help="export directory (OUT)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it holds an earlier fine-tuning export")
    parser.add_argument("--eval_data", type=Path, default=None,
                        help="evaluation file (default: --data)")
    parser.add_argument("--deepspeed_config", type=Path,
                        default=ROOT / "configs" / "deepspeed" / "zero1.json",
                        help="DeepSpeed JSON (default: configs/deepspeed/zero1.json)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer directory (default: INIT, or the checkpoint's)")
    parser.add_argument("--tag", default=None, help="checkpoint tag (default: CKPT/latest)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default: {DEFAULT_STEPS}; not with --epochs)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="passes over the training data instead of --steps: ceil(epochs x "
                             "micro-batches per epoch / grad_accum) steps (see above)")
    parser.add_argument("--seq_len", type=int, default=256,
                        help="max tokens per example / text window (default: 256)")
    parser.add_argument("--micro_batch_size", type=int, default=8, help="per rank (default: 8)")
    parser.add_argument("--grad_accum", type=int, default=1, help="(default: 1)")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak lr (default: 1e-4)")
    parser.add_argument("--min_lr", type=float, default=None, help="(default: lr / 10)")
    parser.add_argument("--warmup_steps", type=int, default=None,
                        help="linear warmup steps (default: --warmup_ratio of the steps)")
    parser.add_argument("--warmup_ratio", type=float, default=None,
                        help="warmup as a fraction of the steps, in [0, 1], rounded down "
                             "(default: 0.1; not with --warmup_steps)")
    parser.add_argument("--weight_decay", type=float, default=0.0, help="(default: 0)")
    parser.add_argument("--grad_clip", type=float, default=1.0, help="(default: 1.0)")
    parser.add_argument("--num_labels", type=int, default=None,
                        help="classify: classes (default: max training label + 1)")
    parser.add_argument("--seed", type=int, default=0, help="head init and data order")
    parser.add_argument("--log_every", type=int, default=10, help="(default: 10)")
    parser.add_argument("--eval_every", type=int, default=None,
                        help="also evaluate on --eval_data every N optimizer steps; kept in "
                             "results.json's \"evals\" (default: only before and after)")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def check_flags(args: argparse.Namespace) -> None:
    """Refuse contradictory or out-of-range flags, naming the flag and why, before any work."""
    if args.steps is not None and args.epochs is not None:
        raise ConfigError(f"--steps {args.steps} and --epochs {args.epochs} are both given: "
                          "--steps counts optimizer steps, --epochs passes over the data "
                          "(and sets the steps); give one")
    if args.warmup_steps is not None and args.warmup_ratio is not None:
        raise ConfigError(f"--warmup_steps {args.warmup_steps} and --warmup_ratio "
                          f"{args.warmup_ratio} are both given: give one")
    for flag in ("steps", "epochs", "eval_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag} {value}: must be >= 1")
    if args.warmup_ratio is not None and not 0 <= args.warmup_ratio <= 1:
        raise ConfigError(f"--warmup_ratio {args.warmup_ratio}: must lie in [0, 1]")
    # the other values (seq_len, micro_batch_size, lr, ...), with the steps known or a stand-in
    training_config(args, args.steps or max(1, args.warmup_steps or 0))


def batches_per_epoch(examples: int, micro: int, world_size: int) -> int:
    """Micro-batches per rank in one epoch of `micro_batches` (its last partial global batch
    left out; fewer examples than one global batch are repeated to fill one)."""
    per_step = micro * world_size
    return examples * math.ceil(per_step / examples) // per_step


def steps_for_epochs(epochs: int, examples: int, micro: int, world_size: int,
                     grad_accum: int) -> int:
    """Optimizer steps of `epochs` passes over `examples` training examples."""
    return math.ceil(epochs * batches_per_epoch(examples, micro, world_size) / grad_accum)


def training_config(args: argparse.Namespace, steps: int) -> TrainingConfig:
    """The flags as pretrain.train's TrainingConfig, for `steps` optimizer steps."""
    ratio = 0.1 if args.warmup_ratio is None else args.warmup_ratio
    fields = {"seq_len": args.seq_len, "micro_batch_size": args.micro_batch_size,
              "grad_accum": args.grad_accum, "lr": args.lr,
              "min_lr": args.lr / 10 if args.min_lr is None else args.min_lr,
              "warmup_steps": (math.floor(steps * ratio + 1e-9) if args.warmup_steps is None
                               else args.warmup_steps),
              "max_steps": steps, "weight_decay": args.weight_decay,
              "grad_clip": args.grad_clip, "eval_every": args.eval_every or steps,
              "eval_steps": 1, "checkpoint_every": steps, "log_every": args.log_every,
              "seed": args.seed}
    return parse(TrainingConfig, fields, "fine-tuning flags")


def checkpoint_state(init: Path, tag: str | None) -> tuple[str, dict[str, Any]]:
    """(tag, train_state.json) of the checkpoint directory INIT (tag: given, or INIT/latest)."""
    if tag is None and latest(init) is None:
        raise ConfigError(f"{init} holds neither config.json (export) nor latest (CKPT)")
    return read_train_state(init, tag)


def init_tokenizer(init: Path, tokenizer: Path | None, tag: str | None) -> Path:
    """The tokenizer directory load_init would return, without loading the weights."""
    if tokenizer is not None or (init / CONFIG_FILE).is_file():
        return tokenizer or init
    tag, state = checkpoint_state(init, tag)
    try:
        return recorded_tokenizer(state, init / tag)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error)) from error


def load_init(init: Path, tokenizer: Path | None, tag: str | None) -> tuple[CausalLM, Path]:
    """The pretrained CausalLM and the tokenizer directory."""
    if (init / CONFIG_FILE).is_file():
        return load_hf_model(init), tokenizer or init
    tag, state = checkpoint_state(init, tag)
    config = ModelConfig(**state["model"])
    weights = hf_state_dict(consolidated_state_dict(init, tag), config)
    model = CausalLM(config)
    model.load_state_dict(weights, strict=not config.tie_word_embeddings)
    if tokenizer is not None:
        return model, tokenizer
    try:
        return model, recorded_tokenizer(state, init / tag)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error)) from error


def micro_batches(examples: list[Example], micro: int, rank: int, world_size: int,
                  seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (input_ids, labels) batches of this rank: a seeded shuffle per epoch, each global
    batch of micro * world_size examples split by rank."""
    per_step, epoch = micro * world_size, 0
    while True:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(examples), generator=generator).tolist()
        order *= math.ceil(per_step / len(order))
        for start in range(0, len(order) - per_step + 1, per_step):
            mine = order[start + rank * micro:start + (rank + 1) * micro]
            yield collate([examples[i] for i in mine])
        epoch += 1


@torch.no_grad()
def evaluate(engine: Any, examples: list[Example], micro: int, task: str,
             majority: int | None, device: torch.device,
             num_labels: int | None = None) -> dict[str, Any]:
    """Token-weighted mean loss (sft, text) or classification metrics, over all examples."""
    engine.eval()
    loss_sum, count, predictions, labels = 0.0, 0, [], []
    for start in range(0, len(examples), micro):
        ids, target = (t.to(device) for t in collate(examples[start:start + micro]))
        out = engine(ids, labels=target)
        if task == "classify":
            predictions += out.logits.argmax(-1).tolist()
            labels += target.tolist()
            loss_sum, count = loss_sum + out.loss.item() * len(ids), count + len(ids)
        else:
            targets = int((target[:, 1:] != -100).sum())
            loss_sum, count = loss_sum + out.loss.item() * targets, count + targets
    engine.train()
    result: dict[str, Any] = {"loss": loss_sum / count}
    if task == "classify":
        result |= classification_metrics(predictions, labels, majority_class=majority or 0,
                                         num_labels=num_labels)
    return result


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing OUT unless --overwrite, and then only an earlier export of ours."""
    if not output.exists():
        return
    if not output.is_dir():
        raise ConfigError(f"--output {output} is a file: choose a directory")
    if not any(output.iterdir()):
        return
    if not overwrite:
        raise ConfigError(f"--output {output} exists: pass --overwrite to replace it, or choose "
                          "another directory")
    if not (output / "results.json").is_file():
        raise ConfigError(f"refusing to --overwrite {output}: it holds no results.json, so it "
                          "is not an earlier fine-tuning export; delete it yourself if you mean to")


# on_eval(record, export): after each evaluation during training (see finetune)
EvalCallback = Callable[[dict[str, Any], Callable[[Path], None]], None]


def save_model(state: dict[str, torch.Tensor], task: str, config: ModelConfig,
               num_labels: int | None, out: Path, tokenizer_dir: Path) -> None:
    """The export of `state`: LlamaForSequenceClassification (classify) or LlamaForCausalLM."""
    if task == "classify":
        save_classifier(state, config, num_labels or 2, PAD_ID, out, tokenizer_dir)
    else:
        save_hf_model(state, config, out, tokenizer_dir)


def finetune(args: argparse.Namespace, on_eval: EvalCallback | None = None) -> dict[str, Any]:
    """Fine-tune as the flags say; the results (also OUT/results.json).

    `on_eval(record, export)` is called after each evaluation during training (every
    --eval_every steps and after the last), on every rank: `record` is the evaluation as kept
    in "evals" (step, epoch, metrics), `export(DIR)` writes the model as it is at that moment
    to DIR as OUT receives it (weights, config.json, tokenizer files; on rank 0; a collective
    under ZeRO-3, so call it on every rank or on none). pretrain.tune reports through it."""
    check_flags(args)
    check_output(args.output, args.overwrite)  # before any work
    rank, world_size, device = init_distributed()
    quiet_deepspeed()
    log_from_rank_zero(rank)
    lm, tokenizer_dir = load_init(args.init, args.tokenizer, args.tag)
    if args.seq_len > lm.config.max_position_embeddings:
        raise ConfigError(f"--seq_len {args.seq_len} > the model's max_position_embeddings "
                          f"{lm.config.max_position_embeddings}")
    tokenizer = LosslessTokenizer.load(tokenizer_dir)
    read = READERS[args.task]
    train_data = read(args.data, tokenizer.encode, args.seq_len)
    eval_data = read(args.eval_data or args.data, tokenizer.encode, args.seq_len)
    if not train_data or not eval_data:
        raise ConfigError(f"no usable examples in {args.data} or {args.eval_data}")
    per_epoch = batches_per_epoch(len(train_data), args.micro_batch_size, world_size)
    if args.epochs is not None:
        steps = steps_for_epochs(args.epochs, len(train_data), args.micro_batch_size,
                                 world_size, args.grad_accum)
    else:
        steps = DEFAULT_STEPS if args.steps is None else args.steps
    training = training_config(args, steps)
    majority, num_labels = None, None
    seed_everything(training.seed)
    model: torch.nn.Module = lm
    if args.task == "classify":
        classes = [int(e.labels) for e in train_data]  # type: ignore[arg-type]
        num_labels = args.num_labels or max(classes) + 1
        majority = max(range(num_labels), key=classes.count)
        model = SequenceClassifier.from_causal_lm(lm, num_labels, PAD_ID)
    ds = deepspeed_config(args.deepspeed_config, training, world_size, bf16_supported(device))
    engine = build_engine(model, ds, training.weight_decay)
    # beside OUT, not in it (--overwrite replaces OUT), on storage every rank sees as OUT's
    scratch = args.output.parent / f".{args.output.name}.fp32-master"
    engine.train()
    log.info("%s fine-tuning from %s: %d training examples, %d eval, %d steps (%.3g epochs) on "
             "%d rank(s), ZeRO stage %d", args.task, args.init, len(train_data), len(eval_data),
             training.max_steps, training.max_steps * training.grad_accum / per_epoch,
             world_size, engine.zero_optimization_stage())

    def evaluation() -> dict[str, Any]:
        return evaluate(engine, eval_data, training.micro_batch_size, args.task, majority,
                        device, num_labels)

    def export(out: Path) -> None:
        state = export_state_dict(engine, scratch, rank)
        if rank == 0:
            save_model(state, args.task, lm.config, num_labels, Path(out), tokenizer_dir)

    before = evaluation()
    log.info("before: %s", before)
    data: Iterator[Batch] = ((ids.to(device), labels.to(device)) for ids, labels
                             in micro_batches(train_data, training.micro_batch_size, rank,
                                              world_size, training.seed))
    rows: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []

    def keep_row(step: Step) -> None:
        rows.append({"step": step.number, "loss": step.loss, "lr": step.lr})

    def progress(step: Step) -> None:
        log.info("step %d/%d | loss %.4f | lr %.2e", step.number, training.max_steps, step.loss,
                 step.lr)

    def evaluate_now(step: Step) -> None:
        record = {"step": step.number, "epoch": step.number * training.grad_accum / per_epoch,
                  **evaluation()}
        evals.append(record)
        log.info("eval at step %d (epoch %.3g): %s", step.number, record["epoch"],
                 {k: v for k, v in record.items() if k not in ("step", "epoch")})
        if on_eval is not None:
            on_eval(record, export)

    run_steps(EngineStepper(engine), data, training, 0, training.max_steps, device,
              [keep_row, every(training.log_every, training.max_steps, progress),
               every(training.eval_every, training.max_steps, evaluate_now)])
    after = {k: v for k, v in evals[-1].items() if k not in ("step", "epoch")}
    state = export_state_dict(engine, scratch, rank)
    result = {"task": args.task, "init": describe(args.init), "data": describe(args.data),
              "eval_data": describe(args.eval_data or args.data),
              "tokenizer": describe(tokenizer_dir), "steps": training.max_steps,
              "epochs": args.epochs, "steps_per_epoch": per_epoch / training.grad_accum,
              "ranks": world_size, "train_examples": len(train_data),
              "hyperparameters": {
                  "lr": training.lr, "min_lr": training.min_lr,
                  "micro_batch_size": training.micro_batch_size,
                  "grad_accum": training.grad_accum, "warmup_steps": training.warmup_steps,
                  "weight_decay": training.weight_decay, "grad_clip": training.grad_clip,
                  "seq_len": training.seq_len, "seed": training.seed},
              "train_loss_first": rows[0]["loss"], "train_loss_last": rows[-1]["loss"],
              "before": before, "after": after, "evals": evals}
    if rank == 0:
        if args.overwrite:
            shutil.rmtree(args.output, ignore_errors=True)  # an earlier export (check_output)
        args.output.mkdir(parents=True, exist_ok=True)
        save_model(state, args.task, lm.config, num_labels, args.output, tokenizer_dir)
        with open(args.output / "metrics.csv", "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=["step", "loss", "lr"])
            writer.writeheader()
            writer.writerows(rows)
        write_json(args.output / "results.json", result)
        print(json.dumps(result), flush=True)
        log.info("after: %s; exported to %s", after, args.output)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> int:
        finetune(args)
        return 0

    return run_command(work)


if __name__ == "__main__":
    exit_process(main())  # not raise SystemExit: see exit_process (gloo threads at exit)
