"""Arrays -> batches: the input scaling, the dataset over prepared memmaps, loaders and
samplers (positive share, seeded shuffles, torchrun sharding) and device-side batch
augmentation."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from pneumo.core import dist
from pneumo.core.runtime import Runtime

MEAN, STD = 0.5, 0.25  # fixed input scaling, the same at train and predict time; U-Net checkpoints record it
INPUT_SCALING = {"mean": MEAN, "std": STD, "of": "pixel / 255"}  # what `to_input` applies, as recorded


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


def positive_share_sampler(positive: np.ndarray, share: float, seed: int, samples: int | None = None) -> Sampler:
    """Draw an epoch of `samples` images (default: as many as there are) where about `share`
    are positive."""
    positive = np.asarray(positive, bool)
    n_pos = max(int(positive.sum()), 1)
    n_neg = max(int((~positive).sum()), 1)
    weights = np.where(positive, share / n_pos, (1 - share) / n_neg)
    generator = torch.Generator().manual_seed(seed)
    draws = samples or len(positive)
    return torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights), draws, generator=generator)


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
