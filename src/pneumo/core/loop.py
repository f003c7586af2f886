"""The training loop of every training stage (train_autoencoder, train_ssl, pretrain_encoder,
train_unet): one visible pass over the data (`train_one_epoch`), the epoch loop with the
plateau stop that keeps the best epoch (`fit`; a U-Net's frozen-encoder epochs are trained but
never kept), the end every stage shares (`train_and_save`: checkpoint, `fit`, the kept weights
saved by the main process), and the dvclive logger of a stage, which also leaves one log line
per epoch (epoch, losses, validation scores, seconds). Inference over a loader lives in
`core.inference`, which does not need the training loop."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumo.core import dist
from pneumo.core.checkpoints import Checkpoint
from pneumo.core.runtime import Runtime
from pneumo.progress import progress

log = logging.getLogger(__name__)


def adam(parameters, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimiser of every training stage: Adam (AdamW, decoupled, when `weight_decay` > 0)
    with torch's fused kernel, one pass over the weights per step instead of one per
    operation: the same update (float rounding aside), 5.6x faster a step for the U-Net on
    this project's 2-core CPU (46 -> 8 ms, a fifth of a 64 px training step;
    benchmarks/optimizer_step.py). Fused Adam runs on CPU and CUDA tensors alike."""
    if weight_decay:
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.Adam(parameters, lr=lr, fused=True)


def train_one_epoch(
    model: nn.Module,
    criterion: Callable,
    optimizer: torch.optim.Optimizer,
    data: DataLoader,
    batch_fn: Callable,
    rt: Runtime,
    epoch: int,
) -> float:
    """One pass over `data`; `batch_fn(batch) -> (inputs, targets)` on the device. Returns
    the mean loss over all batches (the global ones under torchrun). The loss is read back
    from the device only when progress is drawn, so a GPU never waits on it otherwise."""
    model.train()
    total = torch.zeros((), device=rt.device)
    count = 0

    def running_loss() -> str:
        return f"loss {total.item() / max(count, 1):.4f}"

    for batch in progress(data, f"epoch {epoch}", status=running_loss):
        inputs, targets = batch_fn(batch)
        with rt.autocast():
            outputs = model(rt.inputs(inputs))
        loss = criterion(*dist.gather_for_loss(outputs.float(), targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(inputs)
        count += len(inputs)
    dist.sync_buffers(model.module if hasattr(model, "module") else model)
    total, count = dist.reduce_sum(total, count, device=rt.device)
    return total / max(count, 1)


@dataclass
class Plateau:
    """The convergence rule of every training stage: stop once the validation loss has
    plateaued, i.e. the best loss of the last `patience` epochs is not at least `min_delta`
    (relative) below the best loss before them; and at most after `max_epochs`. `met` says
    whether a run stopped because of the rule (converged) rather than the epoch limit (still
    improving); the report flags the latter. A NaN loss (a diverged run) never improves."""

    patience: int
    min_delta: float
    max_epochs: int
    history: list[float] = field(default_factory=list)

    def update(self, val_loss: float) -> bool:
        """Record an epoch's validation loss; whether to stop now."""
        self.history.append(float(val_loss))
        return self.met or len(self.history) >= self.max_epochs

    def _best(self, losses: list[float]) -> float:
        return min((x for x in losses if not math.isnan(x)), default=math.inf)

    @property
    def change(self) -> float:
        """Relative improvement of the last `patience` epochs' best over the best before them."""
        if len(self.history) <= self.patience:
            return math.inf
        before, recent = self._best(self.history[: -self.patience]), self._best(self.history[-self.patience :])
        if math.isinf(before):
            return math.inf if recent < math.inf else 0.0
        return (before - recent) / abs(before) if before else 0.0

    @property
    def met(self) -> bool:
        return self.change < self.min_delta

    def summary(self) -> dict:
        return {
            "met": self.met,
            "change": None if math.isinf(self.change) else round(self.change, 6),
            "rule": f"best validation loss of the last {self.patience} epochs less than {self.min_delta:.0%} "
            f"below the best before them (at most {self.max_epochs} epochs)",
        }


@dataclass
class Training:
    """What a training stage's epochs run (torchvision's `train_one_epoch(model, criterion,
    optimizer, data_loader, ...)`): `model`, whose weights are kept and saved; `step`, what
    takes the steps (`rt.wrap(model)`: DDP under torchrun, compiled if set; a `before_epoch`
    hook of `fit` may rebuild it); the loss, the optimiser and its learning-rate scheduler
    (`plateau_scheduler` steps with the epoch's loss, any other once an epoch), the training
    loader and `batch_fn(batch) -> (inputs, targets)` on the device."""

    model: nn.Module
    step: nn.Module | None
    criterion: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
    data: DataLoader
    batch_fn: Callable
    rt: Runtime

    def epoch(self, epoch: int) -> float:
        """One epoch (`train_one_epoch`): its mean training loss."""
        return train_one_epoch(self.step, self.criterion, self.optimizer, self.data, self.batch_fn, self.rt, epoch)

    def checkpoint(self, path: Path, fingerprint: dict, resume: bool, **stateful) -> Checkpoint:
        """The run's epoch checkpoint: the model, the optimiser, the scheduler and `stateful`
        (samplers, augmentation generators), resumed only if made with `fingerprint`."""
        return Checkpoint(
            path, fingerprint, resume, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, **stateful
        )


def fit(
    training: Training,
    validate: Callable[[], tuple[dict, dict]] | None,
    *,
    checkpoint: Checkpoint,
    plateau: Plateau,
    live_dir: Path,
    before_epoch: Callable[[int], None] | None = None,
    unkept_epochs: int = 0,
    last_without_validation: bool = False,
    summary: dict | None = None,
) -> tuple[dict, dict, dict]:
    """The epoch loop of every training stage: resume from `checkpoint`, then per epoch
    `before_epoch(epoch)` (a hook, e.g. train_unet's encoder freezing), `training.epoch`
    (its mean training loss) and `validate()` (`{"loss": ..., other scores}` logged as
    `val/<name>`, and entries for the dvclive summary; None or an empty dict: no validation
    split). The epoch's loss is the validation loss, or without one the training loss: it
    steps the scheduler and feeds `plateau`, which stops the run (after `unkept_epochs` +
    `Plateau.max_epochs` epochs at most). The first `unkept_epochs` epochs train but are
    never kept, and neither the scheduler nor the rule sees them (a U-Net's frozen-encoder
    epochs). Of the others the one with the lowest loss is kept; with
    `last_without_validation`, a run without a validation split keeps its last epoch (with
    a NaN validation loss) instead of its lowest training loss. The run's dvclive summary
    names the kept epoch (`selected`), the plateau verdict with the epochs run, and then
    `summary`'s entries. Returns (kept {"epoch", "val_loss"}, its state dict, the last
    epoch's values)."""
    start, saved = checkpoint.restore()
    plateau.history = saved.get("history", [])
    best = saved.get("best", {"epoch": -1, "val_loss": math.inf})
    best_state = saved.get("best_state") or copy.deepcopy(training.model.state_dict())
    last, epochs = saved.get("last", {}), start
    with live(live_dir, start) as logger:
        stopped = saved.get("stopped")  # a run killed after it finished, before its outputs were written
        for epoch in range(start, 0 if stopped else unkept_epochs + plateau.max_epochs):
            if before_epoch:
                before_epoch(epoch)
            last = {"train_loss": float(training.epoch(epoch))}
            logger.log_metric("train/loss", last["train_loss"])
            scores, details = validate() if validate else ({}, {})
            for name, value in scores.items():
                last[f"val_{name}"] = float(value)
                logger.log_metric(f"val/{name}", value)
            logger.summary.update(details)
            logger.next_step()
            epochs, stop = epoch + 1, False
            if epoch >= unkept_epochs:
                loss = last.get("val_loss", last["train_loss"])
                unvalidated_last = last_without_validation and "val_loss" not in last
                if unvalidated_last or loss < best["val_loss"] or best["epoch"] < 0:
                    best = {"epoch": epoch, "val_loss": math.nan if unvalidated_last else loss}
                    best_state = copy.deepcopy(training.model.state_dict())
                if isinstance(training.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    training.scheduler.step(loss)
                else:
                    training.scheduler.step()
                stop = plateau.update(loss)
            checkpoint.save(epoch, last=last, history=plateau.history, best=best, best_state=best_state, stopped=stop)
            if stop:
                break
        logger.summary["selected"] = best
        logger.summary["plateau"] = {**plateau.summary(), "epochs": epochs, "best_epoch": best["epoch"]}
        logger.summary.update(summary or {})
    checkpoint.finish()
    return best, best_state, last


def train_and_save(
    training: Training, validate: Callable[[], tuple[dict, dict]] | None, save: Callable[[dict], None], **fit_args
) -> tuple[dict, dict]:
    """A training stage's run: `fit(training, validate, **fit_args)`, the kept epoch's
    weights loaded into the model, and `save(kept {"epoch", "val_loss"})` on the main
    process only (under torchrun every process trains, one writes). Returns (the kept
    epoch, the last epoch's values)."""
    best, best_state, last = fit(training, validate, **fit_args)
    training.model.load_state_dict(best_state)
    if dist.is_main():
        save(best)
    return best, last


def plateau_scheduler(optimizer: torch.optim.Optimizer, min_delta: float):
    """Halve the learning rate after every epoch that does not lower the validation loss by
    `min_delta` (relative): the schedule that goes with `Plateau`, which then stops the run."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=0, threshold=min_delta, threshold_mode="rel"
    )


def live(directory: Path, start: int = 0):
    """A dvclive logger that writes only inside its own folder (plots declared in dvc.yaml).
    `start` > 0 continues a resumed run's history at that step; rows the killed run logged
    after its last checkpoint are dropped, so every epoch appears once. Under torchrun
    only the main process logs (the others get a logger that discards). Each `next_step()`
    also writes one log line with the step's values and seconds (`EpochLog`)."""
    from dvclive import Live

    if not dist.is_main():
        return _Discard()
    if start:  # a kill can land mid-write: drop a torn last row and an unreadable summary
        for tsv in (Path(directory) / "plots" / "metrics").rglob("*.tsv"):
            header, *rows = tsv.read_text().split("\n")[:-1]  # the text after the last newline is torn
            kept = [r for r in rows if int(r.split("\t", 1)[0]) < start]
            tsv.write_text("\n".join([header, *kept]) + "\n")
        summary = Path(directory) / "metrics.json"
        try:
            json.loads(summary.read_text())
        except (OSError, ValueError):
            summary.unlink(missing_ok=True)  # rewritten at the next step
    logger = Live(str(directory), dvcyaml=False, save_dvc_exp=False, resume=start > 0)
    logger.step = start
    return EpochLog(logger, Path(directory).name)


class EpochLog:
    """A dvclive logger that also logs one line per step through `logging`, e.g.
    `none-0 epoch 3: train/loss 0.5102 val/loss 0.5263 val/siim_dice 0.7402 (41.2 s)`,
    whether or not a terminal is attached."""

    def __init__(self, live, name: str):
        self.live, self.name = live, name
        self.values: dict[str, float] = {}
        self.started = time.perf_counter()

    def log_metric(self, name: str, value, **kwargs) -> None:
        self.live.log_metric(name, value, **kwargs)
        self.values[name] = float(value)

    def next_step(self) -> None:
        shown = " ".join(f"{k} {v:.4f}" for k, v in self.values.items())
        log.info(f"{self.name} epoch {self.live.step}: {shown} ({time.perf_counter() - self.started:.1f} s)")
        self.live.next_step()
        self.values, self.started = {}, time.perf_counter()

    def __getattr__(self, attr):  # summary, step, ... of the dvclive logger
        return getattr(self.live, attr)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)


class _Discard:
    """The logger of the processes that do not write (torchrun ranks > 0)."""

    def __init__(self):
        self.summary: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def log_metric(self, *args, **kwargs) -> None:
        pass

    def next_step(self) -> None:
        pass
