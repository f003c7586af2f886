"""`train_autoencoder`: learn a latent space from unlabeled CXR-14 images (labels never read)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pneumo import models, train
from pneumo.prepare import load_prepared, split_indices

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


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
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    resume: bool = True,
    device: str = "auto",
    params: dict | None = None,
) -> dict:
    """Train the autoencoder; save it, its encoder, per-epoch losses and a reconstruction grid."""
    dev = train.device_from(device)
    images, _, rows = load_prepared(images_dir)
    model_args = {"in_channels": 1, "depth": depth, "width": width, "latent": latent}
    model = models.build_autoencoder(arch, **model_args).to(dev)
    criterion = models.by_name(LOSSES, loss, "loss")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_idx, val_idx = split_indices(rows, "train"), split_indices(rows, "val")
    train_data = train.loader(train.Arrays(images, None, train_idx), batch_size, seed=seed, shuffle=True)
    val_data = train.loader(train.Arrays(images, None, val_idx), batch_size, seed=seed)

    def batch_fn(batch):
        x = train.to_input(batch[0]).to(dev)
        return x, x

    checkpoint = train.Checkpoint(
        checkpoint_path,
        {**(params or {}), "seed": seed, "inputs": train.fingerprint(images_dir)},
        resume,
        model=model,
        optimizer=optimizer,
        loader=train_data.generator,
    )
    start, saved = checkpoint.restore()
    train_loss, val_loss = saved.get("train_loss", float("nan")), saved.get("val_loss", float("nan"))
    with train.live(live_dir, resume=start > 0) as live:
        for epoch in range(start, epochs):
            train_loss = train.train_one_epoch(model, criterion, optimizer, train_data, batch_fn, dev, epoch)
            if len(val_idx):
                truth = train.to_input(torch.from_numpy(images[val_idx]))
                val_loss = float(criterion(train.run_model(model, val_data, dev), truth))
            live.log_metric("train/loss", train_loss)
            live.log_metric("val/loss", val_loss)
            live.next_step()
            checkpoint.save(epoch, train_loss=train_loss, val_loss=val_loss)
    checkpoint.finish()
    meta = {"kind": "autoencoder", "arch": arch, "model_args": model_args, "params": params or {}}
    models.save_checkpoint(model_path, model, **meta)
    encoder_name = models.ENCODER if arch == "resnet34" else f"autoencoder-{arch}"
    models.save_checkpoint(
        encoder_path, model.encoder, kind="encoder", encoder=encoder_name, in_channels=1, source="autoencoder"
    )
    _reconstruction_grid(model, images, val_idx if len(val_idx) else train_idx, dev, reconstructions)
    return {"train_loss": train_loss, "val_loss": val_loss}


def _reconstruction_grid(model, images, indices, device, path: Path, n: int = 8) -> None:
    """Top row inputs, bottom row reconstructions, as one PNG."""
    pick = torch.from_numpy(np.array(images[indices[:n]]))
    model.eval()
    with torch.no_grad():
        recon = model(train.to_input(pick).to(device)).cpu()[:, 0]
    recon = np.clip((recon.numpy() * train.STD + train.MEAN) * 255, 0, 255).astype(np.uint8)
    grid = np.vstack([np.hstack(list(pick.numpy())), np.hstack(list(recon))])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))


def load_autoencoder(path: Path, device: torch.device) -> models.ConvAutoencoder:
    state, meta = models.load_checkpoint(path)
    model = models.build_autoencoder(meta["arch"], **meta["model_args"])
    model.load_state_dict(state)
    return model.to(device).eval()
