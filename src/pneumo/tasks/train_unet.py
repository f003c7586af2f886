"""`train_unet`: U-Net (ResNet34 encoder) fine-tuned on SIIM-ACR from one encoder
initialisation; keeps the weights of the epoch with the lowest validation loss (never an
epoch with a frozen encoder)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
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


def validation_loss(criterion: nn.Module, probs: np.ndarray, masks: np.ndarray) -> float:
    """The training loss (without augmentation) over the whole validation split at once.

    This is what picks the epoch. SIIM Dice after tuning the post-processing does not: its
    most conservative setting empties every unconfident prediction, so an untrained model
    scores exactly as well as predicting nothing and can win. The loss is threshold-free
    and an unconfident model pays for every positive pixel it misses."""
    p = torch.from_numpy(np.clip(probs, 1e-6, 1 - 1e-6))[:, None]
    return float(criterion(torch.logit(p), torch.from_numpy(np.asarray(masks, np.float32))[:, None]))


def train_unet(
    *,
    variant: str,
    encoder_path: Path,
    siim_dir: Path,
    out_path: Path,
    live_dir: Path,
    checkpoint_path: Path,
    epochs: int,
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
    """Train; keep the epoch with the lowest validation loss among those that trained the
    encoder too (without a validation split: the last epoch). Per epoch, dvclive logs the
    losses and threshold-free validation scores; its summary names the selected epoch."""
    rt = rt or runtime.start()
    images, masks, rows = load_prepared(siim_dir)
    model = models.build_unet(1)
    models.load_encoder_into(model.encoder, encoder_path)
    model = rt.prepare(model)
    criterion = WeightedSum(models.by_name(PIXEL_LOSSES, pixel_loss, "pixel loss")(), dice_weight, pixel_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    train_idx, val_idx = split_indices(rows, "train"), split_indices(rows, "val")
    positive = np.array([int(rows[i]["mask_pixels"]) > 0 for i in train_idx])
    sampler = data.positive_share_sampler(positive, positive_share, seed)
    train_data = data.loader(data.Arrays(images, masks, train_idx), batch_size, order=sampler, train=True, rt=rt)
    generator = torch.Generator().manual_seed(seed)
    batch_fn = batches(rt, generator)

    val_masks = np.asarray(masks[val_idx])  # read once, not every epoch
    val_positive = val_masks.any(axis=(1, 2))
    first_selectable = min(freeze_encoder_epochs, epochs - 1)  # a frozen-encoder epoch is never kept
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
    step, frozen = None, None
    with loop.live(live_dir, start) as live:
        for epoch in range(start, epochs):
            # train only the decoder first: a random decoder's gradients would wreck a pretrained encoder
            if frozen != (epoch < freeze_encoder_epochs):
                frozen = epoch < freeze_encoder_epochs
                for p in model.encoder.parameters():
                    p.requires_grad_(not frozen)
                step = rt.wrap(model)  # DDP registers the trainable parameters when built
            loss = loop.train_one_epoch(step, criterion, optimizer, train_data, batch_fn, rt, epoch)
            scheduler.step()
            live.log_metric("train/loss", loss)
            val_loss = float("nan")
            if len(val_idx):
                probs = inference.predict_probs(model, images, val_idx, rt, batch_size, desc="validation")
                val_loss = validation_loss(criterion, probs, val_masks)
                live.log_metric("val/loss", val_loss)
                for name, value in validation_scores(probs, val_masks, val_positive).items():
                    live.log_metric(f"val/{name}", value)
            live.next_step()
            candidate = not len(val_idx) or best["epoch"] < first_selectable or val_loss < best["val_loss"]
            if epoch >= first_selectable and candidate:
                best = {"epoch": epoch, "val_loss": val_loss}
                best_state = copy.deepcopy(model.state_dict())
            checkpoint.save(epoch, best=best, best_state=best_state)
        live.summary["selected"] = best  # the summary's other values are the last epoch's
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
    if not np.isfinite(probs).all():  # a diverged model: no scores, and its loss is nan
        return {}
    dice = metrics.dice_per_image(probs > 0.5, masks)
    scores = {"siim_dice": float(dice.mean())}
    if positive.any():
        scores["dice_positive"] = float(dice[positive].mean())
    if positive.any() and (~positive).any():
        scores["auc"] = float(roc_auc_score(positive, probs.reshape(len(probs), -1).max(1)))
    return scores
