"""Shared training machinery: arrays -> batches, device-side augmentation, one visible
training loop used by every training stage (autoencoder, encoder pretraining, U-Net),
and the runtime settings (device, bf16 autocast, channels_last, torch.compile, loader
workers) that change speed, not what is learned. Multi-process runs: `pneumo.dist`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler
from tqdm import tqdm

from pneumo import dist

MEAN, STD = 0.5, 0.25  # fixed input scaling: stored nowhere, identical at train and predict time


def device_from(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) or (B, 1, H, W) -> normalised float (B, 1, H, W)."""
    x = images.float() if images.ndim == 4 else images[:, None].float()
    return (x / 255.0 - MEAN) / STD


class Arrays(Dataset):
    """Rows of the prepared memmaps: (image uint8 (H, W), target) for the given indices."""

    def __init__(self, images: np.ndarray, targets: np.ndarray | None, indices: np.ndarray):
        self.images, self.targets, self.indices = images, targets, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        k = self.indices[i]
        image = torch.from_numpy(np.array(self.images[k]))
        target = torch.from_numpy(np.array(self.targets[k])) if self.targets is not None else torch.zeros(())
        return image, target


@dataclass(frozen=True)
class Runtime:
    """Where and how models run. `amp` (bf16 autocast) and `channels_last` change float
    rounding only; `workers` and `pin_memory` change nothing but speed."""

    device: torch.device
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    pin_memory: bool = False

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move the model to the device (channels_last if set); the model itself, whose
        state_dict is what gets saved."""
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        return model.to(self.device, memory_format=fmt)

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training step calls: DDP across processes, then torch.compile if set."""
        step = dist.wrap(model, self.device)
        return torch.compile(step) if self.compile else step


def runtime(
    device: str = "auto",
    *,
    amp: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    loader_workers: int = 0,
    pin_memory: bool = False,
) -> Runtime:
    """The Runtime of a training process: joins torchrun's process group when launched by
    it. `amp`, `channels_last` and `pin_memory` take effect on CUDA only: CPU runs stay
    fp32 and bit-reproducible (and many CPUs have no bf16 units; figures for this
    project's CPU are in benchmarks/README.md)."""
    dev = dist.start(device_from(device))
    cuda = dev.type == "cuda"
    return Runtime(dev, amp and cuda, channels_last and cuda, compile, loader_workers, pin_memory and cuda)


def loader(
    dataset: Dataset,
    batch_size: int,
    *,
    order: Sampler | None = None,
    train: bool = False,
    rt: Runtime | None = None,
) -> DataLoader:
    """Batches of `dataset` drawn in `order` (default: sequential). `train` drops the last
    incomplete batch (every step sees a full batch; batch norm never sees a batch of 1),
    unless the data is smaller than one batch. Under torchrun each process gets its slice
    of every global batch (`dist.Shard`)."""
    order = order if order is not None else SequentialSampler(dataset)
    rt = rt or Runtime(torch.device("cpu"))
    return DataLoader(
        dataset,
        batch_size=batch_size // dist.world(),
        sampler=dist.Shard(order, batch_size, drop_last=train and len(order) >= batch_size),
        num_workers=rt.workers,
        persistent_workers=rt.workers > 0,
        pin_memory=rt.pin_memory,
        generator=torch.Generator().manual_seed(0),  # seeds workers only: the order comes from `order`
    )


def shuffled(dataset: Dataset, seed: int) -> RandomSampler:
    """A new random order every epoch, from its own seeded generator (saved in checkpoints)."""
    return RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))


def positive_share_sampler(positive: np.ndarray, share: float, seed: int) -> Sampler:
    """Draw an epoch (as many samples as images) where about `share` are positive."""
    positive = np.asarray(positive, bool)
    n_pos = max(int(positive.sum()), 1)
    n_neg = max(int((~positive).sum()), 1)
    weights = np.where(positive, share / n_pos, (1 - share) / n_neg)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights), len(positive), generator=generator)


def augment(
    x: torch.Tensor,
    mask: torch.Tensor | None,
    generator: torch.Generator,
    *,
    flip: float = 0.5,
    rotate_deg: float = 7.0,
    scale: float = 0.1,
    shift: float = 0.05,
    contrast: float = 0.1,
):
    """Light batch augmentation on the input's device: horizontal flips, a small affine
    warp (the same for image and mask), brightness/contrast jitter on the image. Under
    torchrun the numbers are drawn for the global batch and each process takes its rows."""
    b, rows = x.shape[0], dist.local_rows(x.shape[0] * dist.world())
    rand = lambda *s: torch.rand(b * dist.world(), *s[1:], generator=generator)[rows].to(x.device)  # noqa: E731
    angle = (rand(b) * 2 - 1) * math.radians(rotate_deg)
    zoom = 1 + (rand(b) * 2 - 1) * scale
    sign = torch.where(rand(b) < flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos * sign, -sin, (rand(b) * 2 - 1) * shift], 1),
            torch.stack([sin * sign, cos, (rand(b) * 2 - 1) * shift], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = 1 + (rand(b, 1, 1, 1) * 2 - 1) * contrast
    bias = (rand(b, 1, 1, 1) * 2 - 1) * contrast / STD
    x = x * gain + bias
    if mask is not None:
        mask = (F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()
    return x, mask


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


def fingerprint(*paths: Path) -> dict[str, str]:
    """What a resumed run must share with the checkpoint besides params: md5 of small input
    files, size and mtime of large arrays (a changed or re-checked-out input starts fresh)."""
    import hashlib

    out = {}
    for path in paths:
        for f in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            if f.suffix == ".npy":
                out[str(f)] = f"{f.stat().st_size}:{f.stat().st_mtime_ns}"
            elif f.is_file():
                out[str(f)] = hashlib.md5(f.read_bytes()).hexdigest()
    return out


class Checkpoint:
    """Epoch checkpoint that lets a killed training run resume instead of starting over.

    Holds the state of every object passed in (model, optimizer, scheduler: `state_dict`;
    samplers' and augmentation's `torch.Generator`s: `get_state`), the global torch RNG,
    the last finished epoch and any extra values the loop keeps (best weights so far).
    Written atomically after every epoch as a plain dict of tensors and primitives, read
    back with `weights_only=True`, and used only if it was made with the same params: a
    run killed mid-epoch loses that epoch only, and finishes with the same weights as an
    uninterrupted run (CPU, fixed seed). A finished run leaves only a small marker."""

    def __init__(self, path: Path, params: dict, resume: bool, **stateful):
        self.path, self.resume, self.stateful = Path(path), resume, stateful
        self.params = json.dumps(params, sort_keys=True)

    def restore(self) -> tuple[int, dict]:
        """(first epoch to run, extra values saved with the checkpoint); (0, {}) when starting fresh."""
        if not (self.resume and self.path.exists()):
            return 0, {}
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("complete"):  # a finished run (e.g. `dvc repro --force`): train again
            return 0, {}
        if state["params"] != self.params:
            if dist.is_main():
                print(f"{self.path}: made with other params; starting fresh")
            return 0, {}
        for name, obj in self.stateful.items():
            if isinstance(obj, torch.Generator):
                obj.set_state(state["objects"][name])
            else:
                obj.load_state_dict(state["objects"][name])
        torch.set_rng_state(state["torch_rng"])
        if dist.is_main():
            print(f"{self.path}: resuming after epoch {state['epoch']}")
        return state["epoch"] + 1, state["extra"]

    def save(self, epoch: int, **extra) -> None:
        if not dist.is_main():  # every process holds the same state
            return
        objects = {
            n: o.get_state() if isinstance(o, torch.Generator) else o.state_dict() for n, o in self.stateful.items()
        }
        state = {
            "params": self.params,
            "epoch": epoch,
            "torch_rng": torch.get_rng_state(),
            "objects": objects,
            "extra": extra,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, self.path)  # a kill while writing leaves the previous checkpoint intact

    def finish(self) -> None:
        """Replace the checkpoint by a small marker once the run is complete: nothing is
        left to resume, and the DVC output stays cheap to cache."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"params": self.params, "complete": True}, self.path)
