"""The one visible training loop every training stage runs (autoencoder, encoder
pretraining, U-Net), inference over a loader, and the dvclive logger of a stage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pneumo.core import dist
from pneumo.core.data import to_input
from pneumo.core.runtime import Runtime


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
    from the device only for the progress bar, so a GPU never waits on it otherwise."""
    model.train()
    total = torch.zeros((), device=rt.device)
    count = 0
    bar = tqdm(data, desc=f"epoch {epoch}", leave=False, disable=None if dist.is_main() else True)
    for batch in bar:
        inputs, targets = batch_fn(batch)
        with rt.autocast():
            outputs = model(rt.inputs(inputs))
        loss = criterion(*dist.gather_for_loss(outputs.float(), targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(inputs)
        count += len(inputs)
        if not bar.disable:
            bar.set_postfix(loss=f"{total.item() / count:.4f}")
    dist.sync_buffers(model.module if hasattr(model, "module") else model)
    total, count = dist.reduce_sum(total, count, device=rt.device)
    return total / max(count, 1)


@torch.no_grad()
def run_model(
    model: nn.Module, data: DataLoader, rt: Runtime | torch.device, fn: Callable | None = None
) -> torch.Tensor:
    """Apply `fn(model, inputs)` (default: model(inputs)) over a loader; outputs on CPU,
    concatenated in the loader's order. Under torchrun each process runs its slice of each
    batch and every process gets all outputs."""
    rt = rt if isinstance(rt, Runtime) else Runtime(rt)
    model.eval()
    outputs = []
    for images, _ in data:
        inputs = rt.inputs(to_input(images).to(rt.device, non_blocking=True))
        with rt.autocast():
            out = fn(model, inputs) if fn else model(inputs)
        outputs.append(dist.gather(out.float()).cpu())
    return torch.cat(outputs)[: len(data.sampler.order)] if outputs else torch.zeros(0)


def live(directory: Path, start: int = 0):
    """A dvclive logger that writes only inside its own folder (plots declared in dvc.yaml).
    `start` > 0 continues a resumed run's history at that step; rows the killed run logged
    after its last checkpoint are dropped, so every epoch appears once. Under torchrun
    only the main process logs (the others get a logger that discards)."""
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
    return logger


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
