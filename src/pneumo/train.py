"""Shared training machinery: arrays -> batches, device-side augmentation, one visible
training loop used by every training stage (autoencoder, encoder pretraining, U-Net)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

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


def loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = False,
    sampler: Sampler | None = None,
    workers: int = 0,
) -> DataLoader:
    """A seeded DataLoader (same order for the same seed)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
    )


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
    warp (the same for image and mask), brightness/contrast jitter on the image."""
    b = x.shape[0]
    rand = lambda *s: torch.rand(*s, generator=generator).to(x.device)  # noqa: E731
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
    device: torch.device,
    epoch: int,
) -> float:
    """One pass over `data`; `batch_fn(batch) -> (inputs, targets)` on `device`. Returns the mean loss."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(data, desc=f"epoch {epoch}", leave=False, disable=None)  # no bar when not a terminal
    for batch in bar:
        inputs, targets = batch_fn(batch)
        loss = criterion(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
        count += len(inputs)
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


@torch.no_grad()
def run_model(model: nn.Module, data: DataLoader, device: torch.device, fn: Callable | None = None) -> torch.Tensor:
    """Apply `fn(model, inputs)` (default: model(inputs)) over a loader; outputs on CPU, concatenated."""
    model.eval()
    outputs = []
    for images, _ in data:
        inputs = to_input(images).to(device)
        outputs.append((fn(model, inputs) if fn else model(inputs)).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0)


def live(directory: Path, resume: bool = False):
    """A dvclive logger that writes only inside its own folder (plots declared in dvc.yaml);
    `resume` continues the step count and history of a resumed run."""
    from dvclive import Live

    return Live(str(directory), dvcyaml=False, save_dvc_exp=False, resume=resume)


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
            print(f"{self.path}: made with other params; starting fresh")
            return 0, {}
        for name, obj in self.stateful.items():
            if isinstance(obj, torch.Generator):
                obj.set_state(state["objects"][name])
            else:
                obj.load_state_dict(state["objects"][name])
        torch.set_rng_state(state["torch_rng"])
        print(f"{self.path}: resuming after epoch {state['epoch']}")
        return state["epoch"] + 1, state["extra"]

    def save(self, epoch: int, **extra) -> None:
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
