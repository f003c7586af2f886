"""`train_ssl@<run>`: the `ssl` initialisation, the U-Net's ResNet34 encoder pretrained on the
unlabeled CXR-14 films (labels never read; SIIM patients excluded by prepare_cxr14) with
VICReg (Bardes, Ponce and LeCun 2022): two random views of each film, a projector, and a loss
that pulls the views' embeddings together (invariance) while keeping every embedding
dimension's spread up (variance) and the dimensions decorrelated (covariance). It needs no
negatives and no momentum encoder, so it trains at the small batches of a CPU. The method's
loss, projection head and two-view transform are lightly's (`lightly.loss.VICRegLoss`,
`VICRegProjectionHead`, `MultiViewTransform`); the views are torchvision transforms that fit a
radiograph: a crop of `crop` of the film, a small rotation, gamma, brightness and contrast,
blur and noise, never colour. Each view's random numbers come from (run seed, epoch, film),
so loader workers, torchrun processes and resuming leave the views as they are. The learning
rate decays on a cosine over `max_epochs` (the usual schedule of the method: the plateau
scheduler of the other stages would halve it after nearly every epoch, as VICReg's loss falls
~1% an epoch); training stops when the validation loss (the same views of the validation
films every epoch) plateaus (`loop.Plateau`) and keeps the epoch with the lowest one. The
projector is dropped, as in the method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from lightly.transforms.multi_view_transform import MultiViewTransform
from torch import nn
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from pneumo.core import checkpoints, data, dist, loop, models, runtime
from pneumo.formats.prepared import load_prepared, split_indices


class RandomGamma(nn.Module):
    """x ** gamma on a [0, 1] image, gamma log-uniform in [1 / `gamma`, `gamma`] (a film's
    exposure curve); drawn from torch's global generator, like torchvision's transforms."""

    def __init__(self, gamma: float):
        super().__init__()
        self.log_gamma = float(np.log(gamma))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.exp((torch.rand(()) * 2 - 1) * self.log_gamma)
        return x.clamp(0, 1) ** g


def radiograph_view(
    size: int,
    crop: list[float],
    rotate_deg: float,
    gamma: float,
    brightness: float,
    contrast: float,
    blur: float,
    noise: float,
) -> v2.Compose:
    """One random view of a [0, 1] film (1, H, W): crop and resize, rotate, gamma, brightness
    and contrast, blur (a share `blur` of the views), Gaussian noise (sd `noise`)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=tuple(crop), ratio=(0.85, 1.18), antialias=True),
            v2.RandomRotation(rotate_deg),
            RandomGamma(gamma),
            v2.ColorJitter(brightness=brightness, contrast=contrast),  # one channel: grey levels only
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.0))], p=blur),
            v2.GaussianNoise(sigma=noise, clip=True),
        ]
    )


class Epochs(Sampler):
    """Items (epoch, position) of `order`, one epoch per pass: `Views` draws a view's random
    numbers from (seed, epoch, film) alone, never from a process's generator, so loader
    workers, torchrun processes and a resumed run all see the views an uninterrupted
    single-process run sees. Its epoch count is saved in checkpoints (`state_dict`)."""

    def __init__(self, order, epoch: int = 0):
        self.order, self.epoch = order, epoch

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return iter([(epoch, int(i)) for i in self.order])

    def __len__(self) -> int:
        return len(self.order)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]


class Views(Dataset):
    """Item (epoch, position) -> (two views (2, 1, H, W) as model inputs, no target) of the
    prepared film at that position of `indices`; the views' random numbers are seeded by
    (`seed`, epoch, film), so they do not depend on where or in which order they are drawn."""

    def __init__(self, images: np.ndarray, indices: np.ndarray, transform: MultiViewTransform, seed: int):
        self.images, self.indices, self.transform, self.seed = images, np.asarray(indices), transform, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: tuple[int, int]):
        epoch, position = item
        k = int(self.indices[position])
        film = torch.from_numpy(np.array(self.images[k]))[None].float() / 255
        with torch.random.fork_rng(devices=[]):  # the caller's generator is left as it was
            torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch + 1, k]).generate_state(1)[0]))
            views = torch.stack(self.transform(film))
        return (views - data.MEAN) / data.STD, torch.zeros(())


class VICReg(nn.Module):
    """The encoder, global average pooling and lightly's VICReg projector. Input: view pairs
    (B, 2, 1, H, W); output: their embeddings (B, 2, D), so that the pairs stay together when
    torchrun gathers a global batch."""

    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.encoder = models.build_encoder(1)
        self.projector = VICRegProjectionHead(self.encoder.out_channels[-1], hidden, out, num_layers=3)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        b = pairs.shape[0]
        z = self.projector(self.encoder(pairs.flatten(0, 1))[-1].mean(dim=(2, 3)))
        return z.view(b, 2, -1)


class PairLoss(nn.Module):
    """lightly's VICRegLoss on the two views of (B, 2, D) embeddings (the targets are unused)."""

    def __init__(self):
        super().__init__()
        self.loss = VICRegLoss()

    def forward(self, z: torch.Tensor, _targets: torch.Tensor | None = None) -> torch.Tensor:
        return self.loss(z[:, 0], z[:, 1])


def train_ssl(
    *,
    images_dir: Path,
    out_path: Path,
    live_dir: Path,
    checkpoint_path: Path,
    crop: list[float],
    rotate_deg: float,
    gamma: float,
    brightness: float,
    contrast: float,
    blur: float,
    noise: float,
    projector: list[int],
    max_epochs: int,
    patience: int,
    min_delta: float,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    resume: bool = True,
    rt: runtime.Runtime | None = None,
    params: dict | None = None,
) -> dict:
    """Pretrain the encoder with VICReg on the training films of `images_dir` until the
    validation loss plateaus; write the selected epoch's encoder to `out_path`, the curves to
    `live_dir`. Returns the last epoch's losses."""
    rt = rt or runtime.start()
    images, _, rows = load_prepared(images_dir)
    view = radiograph_view(int(images.shape[1]), crop, rotate_deg, gamma, brightness, contrast, blur, noise)
    transform = MultiViewTransform([view, view])
    model = rt.prepare(VICReg(*projector))
    step = rt.wrap(model)
    criterion = PairLoss()
    optimizer = loop.adam(model.parameters(), lr, weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max_epochs)  # SSL's usual decay
    train_idx, val_idx = split_indices(rows, "train"), split_indices(rows, "val")
    train_set = Views(images, train_idx, transform, seed)
    order = Epochs(data.shuffled(train_set, seed))
    train_data = data.loader(train_set, batch_size, order=order, train=True, rt=rt)
    # the validation pairs: epoch -1 of the validation films, the same pairs every epoch, drawn
    # batch by batch (never all held: 16k real films at 512 px would be 34 GB)
    val_data = data.loader(
        Views(images, val_idx, transform, seed), batch_size, order=[(-1, i) for i in range(len(val_idx))], rt=rt
    )

    def batch_fn(batch):
        return batch[0].to(rt.device, non_blocking=True), batch[1].to(rt.device, non_blocking=True)

    @torch.no_grad()
    def validate():
        if not len(val_idx):
            return {}, {}
        model.eval()
        z = []
        for pairs, _ in val_data:
            with rt.autocast():
                z.append(dist.gather(model(pairs.to(rt.device, non_blocking=True)).float()).cpu())
        return {"loss": float(criterion(torch.cat(z)[: len(val_idx)]))}, {}  # torchrun pads the last batch

    def save(best):
        models.save_checkpoint(
            out_path,
            model.encoder,
            kind="encoder",
            encoder=models.ENCODER,
            in_channels=1,
            source="ssl",
            method="VICReg (lightly)",
            pretrained=True,
            selected_epoch=best["epoch"],
            params=params or {},
        )

    training = loop.Training(model, step, criterion, optimizer, scheduler, train_data, batch_fn, rt)
    fingerprint = {**(params or {}), "seed": seed, "inputs": checkpoints.fingerprint(images_dir)}
    checkpoint = training.checkpoint(checkpoint_path, fingerprint, resume, order=order.order.generator, epochs=order)
    plateau = loop.Plateau(patience, min_delta, max_epochs)
    return loop.train_and_save(
        training,
        validate,
        save,
        checkpoint=checkpoint,
        plateau=plateau,
        live_dir=live_dir,
        summary={"films": {"train": len(train_idx), "val": len(val_idx)}},  # the CXR-14 splits it saw
    )[1]
