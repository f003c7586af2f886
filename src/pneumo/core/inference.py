"""Trained models back from their checkpoints, and batched inference over prepared
arrays: what evaluation, prediction, clustering and activation maps share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumo.core import data, loop, models
from pneumo.core.runtime import Runtime


def load_unet(path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """A U-Net and its metadata from a train_unet checkpoint."""
    state, meta = models.load_checkpoint(path)
    if meta.get("kind") != "unet":
        raise ValueError(f"{path}: not a U-Net checkpoint (kind={meta.get('kind')!r})")
    model = models.build_unet(meta["in_channels"])
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def predict_probs(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    rt: Runtime | torch.device,
    batch_size: int = 32,
    desc: str = "inference",
) -> np.ndarray:
    """Sigmoid probabilities (N, H, W) for the given rows of a prepared image array."""
    feed = data.loader(data.Arrays(images, None, indices), batch_size)
    return torch.sigmoid(loop.run_model(model, feed, rt, desc=desc))[:, 0].numpy()


def load_autoencoder(path: Path, device: torch.device) -> models.ConvAutoencoder:
    state, meta = models.load_checkpoint(path)
    model = models.build_autoencoder(meta["arch"], **meta["model_args"])
    model.load_state_dict(state)
    return model.to(device).eval()
