"""Grad-CAM (Selvaraju et al. 2017) for the ResNet34 encoder: which regions drive an output.

A short implementation with a forward hook on the chosen encoder stage (the last one,
`layer4`, by default): the stage's activations are weighted by the spatial mean of the
output's gradient with respect to them, summed over channels, rectified, upsampled to the
input size and scaled to [0, 1] per image. The target is any function of the model output
that gives one score per image: a class logit of a pretraining head, the predicted
cluster's logit, or, for a U-Net, the sum of its mask logits inside a region per image
(pytorch-grad-cam's `SemanticSegmentationTarget`). Summing over all pixels instead would
explain mostly the background, which is most pixels and has large negative logits;
`unet_regions` picks each image's region: the predicted mask, else the truth, else the
pixels above probability 0.5.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def gradcam(
    model: nn.Module, layer: nn.Module, inputs: torch.Tensor, target: Callable[[torch.Tensor], torch.Tensor]
) -> np.ndarray:
    """Heat maps (B, H, W) in [0, 1] for `target(model(inputs))` (one score per image)."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        output.retain_grad()
        captured["activations"] = output

    handle = layer.register_forward_hook(hook)
    try:
        model.eval()
        with torch.enable_grad():
            scores = target(model(inputs.requires_grad_(True)))
            model.zero_grad(set_to_none=True)
            scores.sum().backward()
    finally:
        handle.remove()
    acts = captured["activations"]
    weights = acts.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return (cam / peak).cpu().numpy()


def class_logit(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Target: one class's logit of a classification head (e.g. Pneumothorax)."""
    return lambda logits: logits[:, index]


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    """Target: the logit of the class each image is predicted to be (e.g. its cluster)."""
    return logits.gather(1, logits.argmax(1, keepdim=True))[:, 0]


def region_logit_sum(regions: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Target: per image, the sum of a U-Net's mask logits (B, 1, H, W) inside its region.

    `regions` (B, H, W), bool or 0/1, is for one batch, so build the target per batch. An
    empty region scores 0 whatever the input: no gradient, so an all-zero heat map."""

    def target(logits: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 4 or logits.shape[1] != 1 or regions.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"regions {tuple(regions.shape)} do not fit mask logits {tuple(logits.shape)}")
        inside = regions.to(device=logits.device, dtype=logits.dtype)[:, None]
        return (logits * inside).flatten(1).sum(1)

    return target


def mass_inside(heat: np.ndarray, masks: np.ndarray, dilate: int) -> np.ndarray:
    """Share of each map's activation mass inside its (dilated by `dilate` px) mask."""
    import cv2

    if len(masks) == 0:
        return np.zeros(0)
    kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
    grown = np.stack([cv2.dilate(m.astype(np.uint8), kernel) for m in masks]).astype(bool)
    total = heat.reshape(len(heat), -1).sum(1)
    inside = (heat * grown).reshape(len(heat), -1).sum(1)
    return np.where(total > 0, inside / np.maximum(total, 1e-12), 0.0)


PREDICTION, TRUTH, PROBABILITY, NONE = "prediction", "truth", "probability", "none"


def unet_regions(probs: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM target regions (N, H, W) and where each came from (N,): the post-processed
    `predicted` mask if non-empty, else the `truth` mask, else `probs` > 0.5, else none."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    likely = np.asarray(probs) > 0.5
    regions, sources = np.zeros_like(predicted), np.full(len(predicted), NONE, dtype=object)
    for k in range(len(predicted)):
        for mask, source in ((predicted[k], PREDICTION), (truth[k], TRUTH), (likely[k], PROBABILITY)):
            if mask.any():
                regions[k], sources[k] = mask, source
                break
    return regions, sources
