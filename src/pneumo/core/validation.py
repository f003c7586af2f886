"""The U-Net's training loss (Dice + a pixel loss, the pixel loss chosen by name) and its
validation: the same loss over a whole validation split, computed batch by batch so memory
stays flat, and the per-epoch scores that need no tuned post-processing. `train_unet` picks
its epoch with them; they live here so the loss and its streamed re-computation (which
reads the loss's parts) change together."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from pneumo.core import inference, metrics, runtime


class WeightedSum(nn.Module):
    """Dice + a pixel loss (BCE or focal), each with its weight."""

    def __init__(self, pixel: nn.Module, dice_weight: float, pixel_weight: float):
        super().__init__()
        self.dice, self.pixel = smp_losses.DiceLoss("binary", from_logits=True), pixel
        self.dice_weight, self.pixel_weight = dice_weight, pixel_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, target) + self.pixel_weight * self.pixel(logits, target)


PIXEL_LOSSES = {
    "bce": lambda: smp_losses.SoftBCEWithLogitsLoss(),
    "focal": lambda: smp_losses.FocalLoss("binary"),
}


def validation_loss(criterion: WeightedSum, probs: np.ndarray, masks: np.ndarray) -> float:
    """The training loss (without augmentation) over the whole validation split at once.

    This is what picks the epoch. SIIM Dice after tuning the post-processing does not: its
    most conservative setting empties every unconfident prediction, so an untrained model
    scores exactly as well as predicting nothing and can win. The loss is threshold-free
    and an unconfident model pays for every positive pixel it misses. (`Validation`
    computes the same value batch by batch; this whole-array form is its reference.)"""
    p = torch.from_numpy(np.clip(probs, 1e-6, 1 - 1e-6))[:, None]
    return float(criterion(torch.logit(p), torch.from_numpy(np.asarray(masks, np.float32))[:, None]))


class Validation:
    """The validation loss and the per-epoch scores of `validation_scores`, accumulated batch
    by batch, so an epoch's validation never holds the split's probabilities (2.5 GB at
    512 px for the real 2,409 validation films).

    The loss is `validation_loss` of the whole split: its Dice term is a Dice over all
    pixels of all images (smp's binary DiceLoss sums over the batch), so the batches add
    up the sums its soft Dice is made of; its pixel term is a mean over pixels, so the
    batches add up their sums. Sums are kept in float64: the result equals
    the whole-array float32 loss to float rounding (tested), not bit for bit."""

    def __init__(self, criterion: WeightedSum):
        self.criterion = criterion
        self.sums = dict.fromkeys(("soft", "true", "difference", "pixel", "n"), 0.0)
        self.dice, self.peak, self.positive = [], [], []

    def add(self, probs: np.ndarray, masks: np.ndarray) -> None:
        p = torch.from_numpy(np.clip(probs, 1e-6, 1 - 1e-6))[:, None]
        logits, target = torch.logit(p), torch.from_numpy(np.asarray(masks, np.float32))[:, None]
        soft = F.logsigmoid(logits).exp()  # what smp's DiceLoss(from_logits=True) scores
        pixel = self.criterion.pixel(logits, target)  # a mean over the batch's pixels
        for key, value in (
            ("soft", soft.sum()),
            ("true", target.sum()),
            ("difference", (soft - target).abs().sum()),
            ("pixel", pixel.double() * target.numel()),
            ("n", target.numel()),
        ):
            self.sums[key] += float(value)
        self.dice.append(metrics.dice_per_image(probs > 0.5, masks))
        self.peak.append(probs.reshape(len(probs), -1).max(1))
        self.positive.append(np.asarray(masks).reshape(len(masks), -1).any(1))

    def loss(self) -> float:
        d, s = self.criterion.dice, self.sums
        inter = (s["soft"] + s["true"] - s["difference"]) / 2  # smp's soft Tversky score, alpha = beta = 0.5
        fp, fn = s["soft"] - inter, s["true"] - inter
        score = (inter + d.smooth) / max(inter + 0.5 * fp + 0.5 * fn + d.smooth, d.eps)
        dice = -np.log(max(score, d.eps)) if d.log_loss else 1.0 - score
        dice = dice if s["true"] > 0 else 0.0  # smp: no loss from a split without a true pixel
        return float(self.criterion.dice_weight * dice + self.criterion.pixel_weight * s["pixel"] / max(s["n"], 1))

    def scores(self) -> dict[str, float]:
        if not self.dice:
            return {}
        dice, peak, positive = (np.concatenate(x) for x in (self.dice, self.peak, self.positive))
        return scores_from(dice, peak, positive)


def validate(
    model: nn.Module, criterion: WeightedSum, images, masks, indices: np.ndarray, rt: runtime.Runtime, batch_size: int
) -> Validation:
    """One pass over the validation rows, batch by batch (masks read from the memmap as they come)."""
    result = Validation(criterion)
    for rows, probs in inference.iter_probs(model, images, indices, rt, batch_size, desc="validation"):
        result.add(probs, masks[rows])
    return result


def validation_scores(probs: np.ndarray, masks: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """Per-epoch learning-curve scores that need no tuned post-processing: image-level AUC
    (maximum probability), SIIM Dice and Dice on the positive images at threshold 0.5."""
    return scores_from(metrics.dice_per_image(probs > 0.5, masks), probs.reshape(len(probs), -1).max(1), positive)


def scores_from(dice: np.ndarray, peak: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """`validation_scores` from per-image Dice at 0.5 and maximum probabilities."""
    if not np.isfinite(peak).all():  # a diverged model: no scores, and its loss is nan
        return {}
    scores = {"siim_dice": float(dice.mean())}
    if positive.any():
        scores["dice_positive"] = float(dice[positive].mean())
    if positive.any() and (~positive).any():
        scores["auc"] = metrics.auc(positive, peak)
    return scores
