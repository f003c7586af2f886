"""`train_autoencoder@<run>`: learn a latent space from unlabeled CXR-14 images (labels never
read), until the validation reconstruction loss plateaus (`loop.Plateau`); keeps the epoch
with the lowest one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pneumo.core import checkpoints, data, dist, inference, loop, models, overlay, runtime
from pneumo.formats.prepared import load_prepared, split_indices

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def hide_cells(x: torch.Tensor, ratio: float, generator: torch.Generator, cells: int = 8) -> torch.Tensor:
    """Masked reconstruction input: a random `ratio` of the cells of a cells x cells grid set
    to the normalised mean (0). Reconstructing the whole image from the rest makes the
    encoder model anatomy and findings from their context instead of copying pixels (a
    context-encoder / masked-autoencoder objective). Under torchrun the cells are drawn for
    the global batch and each process takes its rows, as in `data.augment`."""
    if ratio <= 0:
        return x
    rows = dist.local_rows(x.shape[0] * dist.world())
    draw = torch.rand(x.shape[0] * dist.world(), 1, cells, cells, generator=generator)[rows]
    keep = (draw >= ratio).to(x.device, x.dtype)
    return x * F.interpolate(keep, size=x.shape[-2:], mode="nearest")


def train_autoencoder(
    *,
    images_dir: Path,
    model_path: Path,
    encoder_path: Path,
    live_dir: Path,
    checkpoint_path: Path,
    reconstructions: Path,
    arch: str,
    depth: int,
    width: int,
    latent: int,
    loss: str,
    mask_ratio: float,
    max_epochs: int,
    patience: int,
    min_delta: float,
    batch_size: int,
    lr: float,
    seed: int,
    resume: bool = True,
    rt: runtime.Runtime | None = None,
    params: dict | None = None,
) -> dict:
    """Train the autoencoder; save it, its encoder, per-epoch losses and a reconstruction grid."""
    rt = rt or runtime.start()
    images, _, rows = load_prepared(images_dir)
    model_args = {"in_channels": 1, "depth": depth, "width": width, "latent": latent}
    model = rt.prepare(models.build_autoencoder(arch, **model_args))
    step = rt.wrap(model)
    criterion = models.by_name(LOSSES, loss, "loss")
    optimizer = loop.adam(model.parameters(), lr)
    scheduler = loop.plateau_scheduler(optimizer, min_delta)
    train_idx, val_idx = split_indices(rows, "train"), split_indices(rows, "val")
    train_set = data.Arrays(images, None, train_idx)
    order = data.shuffled(train_set, seed)
    train_data = data.loader(train_set, batch_size, order=order, train=True, rt=rt)
    val_data = data.loader(data.Arrays(images, None, val_idx), batch_size, rt=rt)

    generator = torch.Generator().manual_seed(seed)

    def batch_fn(batch):
        x = data.to_input(batch[0]).to(rt.device, non_blocking=True)
        return hide_cells(x, mask_ratio, generator), x

    def per_image_loss(m, x):  # validation loss, image by image: no full-size reconstructions kept
        return criterion(m(x).float(), x, reduction="none").flatten(1).mean(1)

    def validate():  # no validation split: the training loss decides
        if not len(val_idx):
            return {}, {}
        return {"loss": float(inference.run_model(model, val_data, rt, per_image_loss, desc="validation").mean())}, {}

    def save(_best):
        meta = {"kind": "autoencoder", "arch": arch, "model_args": model_args, "params": params or {}}
        models.save_checkpoint(model_path, model, **meta)
        encoder_name = models.ENCODER if arch == "resnet34" else f"autoencoder-{arch}"
        models.save_checkpoint(
            encoder_path,
            model.encoder,
            kind="encoder",
            encoder=encoder_name,
            in_channels=1,
            source="autoencoder",
            pretrained=True,
        )
        held_out = len(val_idx) > 0
        _reconstruction_grid(model, images, val_idx if held_out else train_idx, rt.device, reconstructions, held_out)

    training = loop.Training(model, step, criterion, optimizer, scheduler, train_data, batch_fn, rt)
    fingerprint = {**(params or {}), "seed": seed, "inputs": checkpoints.fingerprint(images_dir)}
    checkpoint = training.checkpoint(checkpoint_path, fingerprint, resume, order=order.generator, hide=generator)
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


def _reconstruction_grid(model, images, indices, device, path: Path, held_out: bool, n: int = 8) -> None:
    """Each row one validation film: the input and the reconstruction, as one PNG with headers."""
    pick = torch.from_numpy(np.array(images[indices[:n]]))
    model.eval()
    with torch.no_grad():
        recon = model(data.to_input(pick).to(device)).cpu()[:, 0]
    recon = np.clip((recon.numpy() * data.STD + data.MEAN) * 255, 0, 255).astype(np.uint8)
    scale = max(1, 192 // pick.shape[1])
    rows = [
        [overlay.outline(np.asarray(x), [], scale), overlay.outline(y, [], scale)]
        for x, y in zip(pick.numpy(), recon, strict=True)
    ]
    which = "validation films (not trained on)" if held_out else "training films (no validation split)"
    title = f"autoencoder reconstructions: {len(rows)} CXR-14 {which}"
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = overlay.grid(rows, headers=["input", "reconstruction"], title=title) if rows else overlay.blank()
    cv2.imwrite(str(path), picture)
