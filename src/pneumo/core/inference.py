"""Trained models back from their checkpoints, and batched inference over a loader or over
prepared arrays: what validation, evaluation, prediction, clustering and activation maps
share. It does not import the training loop (`core.loop`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumo.core import data, dist, models
from pneumo.core.runtime import Runtime
from pneumo.progress import progress


def load_unet(path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """A U-Net and its metadata from a train_unet checkpoint. A checkpoint trained on other
    input scaling than `data.to_input` applies is refused: its predictions would be silently
    wrong. Checkpoints that predate the `input_scaling` record load unchecked."""
    state, meta = models.load_checkpoint(path)
    if meta.get("kind") != "unet":
        raise ValueError(f"{path}: not a U-Net checkpoint (kind={meta.get('kind')!r})")
    scaling = meta.get("input_scaling")
    if scaling is not None and scaling != data.INPUT_SCALING:
        theirs, ours = (json.dumps(s, sort_keys=True) for s in (scaling, data.INPUT_SCALING))
        raise ValueError(f"{path}: trained with input scaling {theirs}, but pneumo.core.data applies {ours}")
    model = models.build_unet(meta["in_channels"])
    model.load_state_dict(state)
    return model.to(device).eval(), meta


@torch.no_grad()
def iter_model(
    model: nn.Module,
    loader: DataLoader,
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
    left = len(loader.sampler.order)
    for images, _ in progress(loader, desc):
        inputs = rt.inputs(data.to_input(images).to(rt.device, non_blocking=True))
        with rt.autocast():
            out = fn(model, inputs) if fn else model(inputs)
        out = dist.gather(out.float()).cpu()[:left]
        left -= len(out)
        yield out


def run_model(
    model: nn.Module,
    loader: DataLoader,
    rt: Runtime | torch.device,
    fn: Callable | None = None,
    desc: str = "inference",
) -> torch.Tensor:
    """`iter_model`'s outputs concatenated: for outputs small per image (latents, logits)."""
    outputs = list(iter_model(model, loader, rt, fn, desc))
    return torch.cat(outputs) if outputs else torch.zeros(0)


def iter_probs(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    rt: Runtime | torch.device,
    batch_size: int = 32,
    desc: str = "inference",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, sigmoid probabilities (B, H, W) float32) batch by batch, in the order of
    `indices`: host memory holds one batch, whatever the size of the split."""
    feed = data.loader(data.Arrays(images, None, indices), batch_size)
    done = 0
    for out in iter_model(model, feed, rt, desc=desc):
        probs = torch.sigmoid(out)[:, 0].numpy()
        yield np.asarray(indices)[done : done + len(probs)], probs
        done += len(probs)


def predict_probs(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    rt: Runtime | torch.device,
    batch_size: int = 32,
    desc: str = "inference",
) -> np.ndarray:
    """Sigmoid probabilities (N, H, W) for the given rows of a prepared image array (the
    whole split in memory: for small sets; stages use `iter_probs`)."""
    parts = [probs for _, probs in iter_probs(model, images, indices, rt, batch_size, desc)]
    return np.concatenate(parts) if parts else np.zeros((0, *images.shape[1:]), np.float32)


def load_autoencoder(path: Path, device: torch.device) -> models.ConvAutoencoder:
    state, meta = models.load_checkpoint(path)
    model = models.build_autoencoder(meta["arch"], **meta["model_args"])
    model.load_state_dict(state)
    return model.to(device).eval()


def encoder_features(
    path: Path,
    images: np.ndarray,
    device: torch.device,
    batch_size: int = 128,
    indices: np.ndarray | None = None,
    stages: tuple[int, ...] = (-1,),
) -> np.ndarray:
    """(N, features) of the films at `indices` (default: every film) from an encoder
    checkpoint: each of its `stages` (default: the last, 512 numbers) averaged over space and
    concatenated in that order (the representation a linear probe and embedding clustering read)."""
    encoder = models.build_encoder(1)
    models.load_encoder_into(encoder, path)
    feed = data.loader(data.Arrays(images, None, np.arange(len(images)) if indices is None else indices), batch_size)

    def pooled(m, x):
        maps = m(x)
        return torch.cat([maps[s].mean(dim=(2, 3)) for s in stages], dim=1)

    return run_model(encoder.to(device), feed, device, pooled, desc="features").numpy()
