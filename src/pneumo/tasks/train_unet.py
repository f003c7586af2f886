"""`train_unet`: U-Net (ResNet34 encoder) fine-tuned on SIIM-ACR from one encoder
initialisation until its validation loss plateaus (`loop.Plateau`); keeps the weights of the
epoch with the lowest validation loss (never an epoch with a frozen encoder). Only a
pretrained encoder is frozen at first: the random `none` encoder trains from the first step."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from sklearn.metrics import roc_auc_score
from torch import nn

from pneumo.core import checkpoints, data, dist, inference, loop, metrics, models, runtime
from pneumo.formats.prepared import load_prepared, split_indices


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


def batches(rt: runtime.Runtime, generator: torch.Generator) -> Callable:
    """(uint8 images, uint8 masks) from the loader -> augmented (inputs, masks) on the device."""

    def batch_fn(batch):
        x = data.to_input(batch[0]).to(rt.device, non_blocking=True)
        y = batch[1][:, None].to(rt.device, non_blocking=True).float()
        return data.augment(x, y, generator)

    return batch_fn


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


def train_unet(
    *,
    variant: str,
    encoder_path: Path,
    siim_dir: Path,
    out_path: Path,
    live_dir: Path,
    checkpoint_path: Path,
    max_epochs: int,
    patience: int,
    min_delta: float,
    batch_size: int,
    lr: float,
    pixel_loss: str,
    dice_weight: float,
    pixel_weight: float,
    freeze_encoder_epochs: int,
    positive_share: float,
    seed: int,
    resume: bool = True,
    rt: runtime.Runtime | None = None,
    params: dict | None = None,
) -> dict:
    """Train until the validation loss plateaus (at most `max_epochs`; the learning rate drops
    when an epoch does not improve it by `min_delta`); keep the epoch with the lowest
    validation loss among those that trained the encoder too (without a validation split:
    `max_epochs`, the last kept). Per epoch, dvclive logs the losses and threshold-free
    validation scores; its summary names the selected epoch, whether the run met the plateau
    rule, and the precision it trained in."""
    rt = rt or runtime.start()
    images, masks, rows = load_prepared(siim_dir)
    model = models.build_unet(1)
    pretrained = models.load_encoder_into(model.encoder, encoder_path).get("pretrained", True)
    freeze_encoder_epochs = freeze_encoder_epochs if pretrained else 0  # random features gain nothing from waiting
    model = rt.prepare(model)
    criterion = WeightedSum(models.by_name(PIXEL_LOSSES, pixel_loss, "pixel loss")(), dice_weight, pixel_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = loop.plateau_scheduler(optimizer, min_delta)
    train_idx, val_idx = split_indices(rows, "train"), split_indices(rows, "val")
    positive = np.array([int(rows[i]["mask_pixels"]) > 0 for i in train_idx])
    sampler = data.positive_share_sampler(positive, positive_share, seed)
    train_data = data.loader(data.Arrays(images, masks, train_idx), batch_size, order=sampler, train=True, rt=rt)
    generator = torch.Generator().manual_seed(seed)
    batch_fn = batches(rt, generator)

    first_selectable = min(freeze_encoder_epochs, max_epochs - 1)  # a frozen-encoder epoch is never kept
    # the rule counts only epochs that may be kept (the encoder trains)
    plateau = loop.Plateau(patience, min_delta, max_epochs - first_selectable)
    checkpoint = checkpoints.Checkpoint(
        checkpoint_path,
        {**(params or {}), "variant": variant, "inputs": checkpoints.fingerprint(encoder_path, siim_dir)},
        resume,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler.generator,
        augment=generator,
    )
    start, saved = checkpoint.restore()
    best = saved.get("best", {"epoch": -1, "val_loss": float("inf")})
    best_state = saved.get("best_state", copy.deepcopy(model.state_dict()))
    plateau.history = saved.get("history", [])
    step, frozen, epoch = None, None, start - 1
    with loop.live(live_dir, start) as live:
        for epoch in range(start, 0 if saved.get("stopped") else max_epochs):  # stopped: killed after converging
            # train only the decoder first: a random decoder's gradients would wreck a pretrained encoder
            if frozen != (epoch < freeze_encoder_epochs):
                frozen = epoch < freeze_encoder_epochs
                for p in model.encoder.parameters():
                    p.requires_grad_(not frozen)
                step = rt.wrap(model)  # DDP registers the trainable parameters when built
            loss = loop.train_one_epoch(step, criterion, optimizer, train_data, batch_fn, rt, epoch)
            live.log_metric("train/loss", loss)
            val_loss = float("nan")
            if len(val_idx):
                validation = validate(model, criterion, images, masks, val_idx, rt, batch_size)
                val_loss = validation.loss()
                live.log_metric("val/loss", val_loss)
                for name, value in validation.scores().items():
                    live.log_metric(f"val/{name}", value)
            live.next_step()
            candidate = not len(val_idx) or best["epoch"] < first_selectable or val_loss < best["val_loss"]
            if epoch >= first_selectable and candidate:
                best = {"epoch": epoch, "val_loss": val_loss}
                best_state = copy.deepcopy(model.state_dict())
            stop = False
            if epoch >= first_selectable:
                scheduler.step(val_loss if len(val_idx) else loss)
                stop = plateau.update(val_loss if len(val_idx) else loss)
            checkpoint.save(epoch, best=best, best_state=best_state, history=plateau.history, stopped=stop)
            if stop:
                break
        # the summary's other values are the last epoch's
        live.summary["selected"] = best
        live.summary["plateau"] = {**plateau.summary(), "epochs": epoch + 1, "best_epoch": best["epoch"]}
        live.summary["precision"] = "bf16" if rt.amp else "fp32"
    checkpoint.finish()
    if not dist.is_main():
        return best
    models.save_checkpoint(
        out_path,
        best_state,
        kind="unet",
        encoder=models.ENCODER,
        in_channels=1,
        image_size=int(images.shape[1]),
        variant=variant,
        best_epoch=best["epoch"],
        best_val_loss=best["val_loss"],
        selection="lowest validation loss (Dice + BCE) among epochs with a trained encoder",
        input_scaling={"mean": data.MEAN, "std": data.STD, "of": "pixel / 255"},
        runtime={"device": rt.device.type, "amp": rt.amp, "channels_last": rt.channels_last, "processes": dist.world()},
        params=params or {},
    )
    return best


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
        scores["auc"] = float(roc_auc_score(positive, peak))
    return scores
