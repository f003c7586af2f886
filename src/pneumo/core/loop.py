"""The one visible training loop every training stage runs (autoencoder, ssl, encoder
pretraining, U-Net: `train_one_epoch`), the epoch loop with the plateau stop of the stages that
keep their best epoch (`fit`; the U-Net's own adds the frozen first epochs), inference over a
loader, and the dvclive logger of a stage, which also leaves one log line per epoch (epoch,
losses, validation scores, seconds)."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumo.core import dist
from pneumo.core.checkpoints import Checkpoint
from pneumo.core.data import to_input
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


def fit(
    model: nn.Module,
    train_epoch: Callable[[int], float],
    validate: Callable[[], tuple[dict, dict]] | None,
    *,
    checkpoint: Checkpoint,
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau,
    plateau: Plateau,
    live_dir: Path,
) -> tuple[dict, dict, dict]:
    """The epoch loop of the stages that keep their lowest-validation-loss epoch
    (train_autoencoder, pretrain_encoder, train_ssl): resume from `checkpoint`, then per epoch
    `train_epoch(epoch)` (its mean training loss) and `validate()` (`{"loss": ..., other
    scores}` logged as `val/<name>`, and entries for the dvclive summary; None or an empty
    dict: no validation split, the training loss decides), keep the best weights, step the
    learning-rate `scheduler` (`plateau_scheduler` with the epoch's loss, any other once an
    epoch) and stop at `plateau` (`Plateau.max_epochs` at most). Returns
    (best {"epoch", "val_loss"}, its state dict, the last epoch's values); the run's
    summary names the selected epoch and the plateau verdict."""
    start, saved = checkpoint.restore()
    plateau.history = saved.get("history", [])
    best = saved.get("best", {"epoch": -1, "val_loss": math.inf})
    best_state = saved.get("best_state") or copy.deepcopy(model.state_dict())
    last = saved.get("last", {})
    with live(live_dir, start) as logger:
        for epoch in range(start, 0 if saved.get("stopped") else plateau.max_epochs):  # stopped: killed when done
            last = {"train_loss": float(train_epoch(epoch))}
            logger.log_metric("train/loss", last["train_loss"])
            scores, details = validate() if validate else ({}, {})
            for name, value in scores.items():
                last[f"val_{name}"] = float(value)
                logger.log_metric(f"val/{name}", value)
            logger.summary.update(details)
            logger.next_step()
            val_loss = last.get("val_loss", last["train_loss"])
            if val_loss < best["val_loss"] or best["epoch"] < 0:
                best, best_state = {"epoch": epoch, "val_loss": val_loss}, copy.deepcopy(model.state_dict())
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_loss)
            else:
                scheduler.step()
            stop = plateau.update(val_loss)
            checkpoint.save(epoch, last=last, history=plateau.history, best=best, best_state=best_state, stopped=stop)
            if stop:
                break
        logger.summary["selected"] = best
        logger.summary["plateau"] = {**plateau.summary(), "epochs": len(plateau.history), "best_epoch": best["epoch"]}
    checkpoint.finish()
    return best, best_state, last


def plateau_scheduler(optimizer: torch.optim.Optimizer, min_delta: float):
    """Halve the learning rate after every epoch that does not lower the validation loss by
    `min_delta` (relative): the schedule that goes with `Plateau`, which then stops the run."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=0, threshold=min_delta, threshold_mode="rel"
    )


@torch.no_grad()
def iter_model(
    model: nn.Module,
    data: DataLoader,
    rt: Runtime | torch.device,
    fn: Callable | None = None,
    desc: str = "inference",
) -> Iterator[torch.Tensor]:
    """Apply `fn(model, inputs)` (default: model(inputs)) over a loader, yielding each
    batch's outputs on CPU in the loader's order, so a caller can reduce them as they come
    instead of holding a whole split. Under torchrun each process runs its slice of each
    batch and every process gets all outputs (the padding of the last batch dropped)."""
    rt = rt if isinstance(rt, Runtime) else Runtime(rt)
    model.eval()
    left = len(data.sampler.order)
    for images, _ in progress(data, desc):
        inputs = rt.inputs(to_input(images).to(rt.device, non_blocking=True))
        with rt.autocast():
            out = fn(model, inputs) if fn else model(inputs)
        out = dist.gather(out.float()).cpu()[:left]
        left -= len(out)
        yield out


def run_model(
    model: nn.Module,
    data: DataLoader,
    rt: Runtime | torch.device,
    fn: Callable | None = None,
    desc: str = "inference",
) -> torch.Tensor:
    """`iter_model`'s outputs concatenated: for outputs small per image (latents, logits)."""
    outputs = list(iter_model(model, data, rt, fn, desc))
    return torch.cat(outputs) if outputs else torch.zeros(0)


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
