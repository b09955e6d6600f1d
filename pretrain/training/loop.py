"""The optimizer-step loop pretrain.train, pretrain.finetune and pretrain.ablate run, and what
it needs: the lr schedule, AdamW's parameter groups, seeding and the token batches.

One optimizer step = grad_accum micro-batches. The learning rate is a pure function of the step
(`lr_at`), set by hand before each step, so resuming needs no scheduler state. The micro-batch
losses stay on the device until the step ends (one host sync per step, in `reduce`). What
happens after a step (metrics, logs, evaluation, checkpoints) is the caller's `hooks`."""

from __future__ import annotations

import math
import queue
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pretrain.config import TrainingConfig
from pretrain.dataset import TokenDataset

Batch = tuple[torch.Tensor, torch.Tensor]  # (input ids, labels), on the device


def lr_at(step: int, training: TrainingConfig) -> float:
    """Learning rate of optimizer step `step` (1-based): linear warmup to lr over warmup_steps,
    cosine decay to min_lr at max_steps, min_lr after."""
    if step <= training.warmup_steps:
        return training.lr * step / training.warmup_steps
    if step >= training.max_steps:
        return training.min_lr
    progress = (step - training.warmup_steps) / (training.max_steps - training.warmup_steps)
    return training.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (
        training.lr - training.min_lr)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices and embeddings decay, norms (1-d parameters) do not."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- token batches ---------------------------------------------------------------------------

def host_batches(dataset: TokenDataset, micro_batch_size: int, pin: bool):
    """This rank's micro-batches on the host, in order: (micro_batch_size, seq_len + 1) int64
    tensors, in page-locked memory when `pin` (so that the copy to the GPU is asynchronous)."""
    for start in range(0, len(dataset) - micro_batch_size + 1, micro_batch_size):
        rows = [dataset[i] for i in range(start, start + micro_batch_size)]
        batch = torch.from_numpy(np.stack(rows))
        yield batch.pin_memory() if pin else batch


def batches(dataset: TokenDataset, micro_batch_size: int, device: torch.device,
            prefetch: int = 2):
    """This rank's micro-batches on `device`, in order: (micro_batch_size, seq_len + 1) int64
    tensors. A thread reads the next `prefetch` batches from the memmaps ahead of the training
    loop (into pinned memory on CUDA), and each is copied with non_blocking=True, so neither the
    read nor the copy waits for the GPU, nor the GPU for them. prefetch=0: no thread."""
    pin = device.type == "cuda" and torch.cuda.is_available()
    source = host_batches(dataset, micro_batch_size, pin)
    if prefetch > 0:
        source = prefetched(source, prefetch)
    for batch in source:
        yield batch.to(device, non_blocking=pin)


def language_modelling(tokens: Iterable[torch.Tensor]) -> Iterator[Batch]:
    """Token windows of seq_len + 1 as (inputs, labels): the first seq_len tokens, and the whole
    window (pretrain.model: labels one longer than the inputs score every input position)."""
    for batch in tokens:
        yield batch[:, :-1], batch


def prefetched(items, depth: int):
    """`items` produced by a daemon thread up to `depth` ahead; in order; its exception is
    raised here. The thread stops when the consumer goes away (it checks between items)."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def offer(item: Any) -> bool:
        """Put `item` once there is room; False when the consumer has gone."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(done)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            offer(error)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def epochs_for(tokens: Path, split: str, seq_len: int, world_size: int, samples: int) -> int:
    """Epochs a dataset needs so that `samples` global samples exist."""
    per_epoch = TokenDataset(tokens, seq_len, split, world_size=world_size).samples_per_epoch
    return max(1, math.ceil(samples / per_epoch))


@torch.no_grad()
def mean_loss(model: Any, data: Iterable[torch.Tensor], steps: int, device: torch.device,
              reduce: Callable[[torch.Tensor], float]) -> float:
    """Mean loss of the first `steps` token batches of `data` (model in eval mode meanwhile),
    `reduce`d (e.g. averaged over ranks)."""
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for _, (inputs, labels) in zip(range(steps), language_modelling(data), strict=False):
        total += model(inputs, labels=labels).loss.detach().double()  # no host sync
        count += 1
    model.train()
    return reduce(total / count)


# --- the step loop ---------------------------------------------------------------------------

class Stepper(Protocol):
    """How one optimizer step runs: DeepSpeed's engine (pretrain.training.engine.EngineStepper)
    or a plain torch optimizer (`TorchStepper`)."""

    @property
    def param_groups(self) -> list[dict[str, Any]]: ...

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def finish(self) -> float | None:
        """After the step's last micro-batch: the update applied; the gradient norm if known."""
        ...


class TorchStepper:
    """One process, no DeepSpeed: gradients averaged over the micro-batches, clipped at
    `grad_clip` (0: not), then AdamW's step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 training: TrainingConfig):
        self.model, self.optimizer, self.training = model, optimizer, training

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model(inputs, labels=labels).loss

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.training.grad_accum).backward()

    def finish(self) -> float | None:
        grad_norm = None
        if self.training.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                             self.training.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm


@dataclass(frozen=True)
class Step:
    """An optimizer step done: its number (1-based), mean micro-batch loss, lr, gradient norm."""

    number: int
    loss: float
    lr: float
    grad_norm: float | None


Hook = Callable[[Step], None]


def every(period: int, last: int, hook: Hook) -> Hook:
    """`hook` after every `period`-th step and after step `last`."""
    def maybe(step: Step) -> None:
        if step.number % period == 0 or step.number == last:
            hook(step)
    return maybe


def run_steps(stepper: Stepper, data: Iterator[Batch], training: TrainingConfig, first: int,
              last: int, device: torch.device, hooks: Sequence[Hook],
              reduce: Callable[[torch.Tensor], float] = torch.Tensor.item) -> None:
    """Optimizer steps first + 1 .. last, each followed by `hooks` in order. The step's loss is
    the mean of its micro-batch losses, `reduce`d to a float (e.g. averaged over ranks)."""
    for number in range(first + 1, last + 1):
        lr = lr_at(number, training)
        for group in stepper.param_groups:
            group["lr"] = lr
        # the losses stay on the device: one host sync per step (reduce's), not one per
        # micro-batch; float64 sums as Python's were, so the logged values are unchanged
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for _ in range(training.grad_accum):
            inputs, labels = next(data)
            loss = stepper.loss(inputs, labels)
            stepper.backward(loss)
            loss_sum += loss.detach().double()
        step = Step(number, reduce(loss_sum / training.grad_accum), lr, stepper.finish())
        for hook in hooks:
            hook(step)
