"""`train_unet`: U-Net (ResNet34 encoder) fine-tuned on SIIM-ACR from one encoder
initialisation, on a share of the training films, until its validation loss plateaus
(`loop.Plateau`); keeps the weights of the epoch with the lowest validation loss (never an
epoch with a frozen encoder). Every epoch draws as many films as the whole training split
holds, whatever the share, so every share trains on the same schedule of steps. Only a
pretrained encoder is frozen at first: the random `none` encoder trains from the first step."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pneumo.core import checkpoints, data, dist, loop, models, runtime
from pneumo.core.validation import PIXEL_LOSSES, WeightedSum, validate
from pneumo.formats.prepared import load_prepared, share_indices, split_indices


def batches(rt: runtime.Runtime, generator: torch.Generator) -> Callable:
    """(uint8 images, uint8 masks) from the loader -> augmented (inputs, masks) on the device."""

    def batch_fn(batch):
        x = data.to_input(batch[0]).to(rt.device, non_blocking=True)
        y = batch[1][:, None].to(rt.device, non_blocking=True).float()
        return data.augment(x, y, generator)

    return batch_fn


def train_unet(
    *,
    variant: str,
    encoder_path: Path,
    siim_dir: Path,
    out_path: Path,
    live_dir: Path,
    checkpoint_path: Path,
    share: int,
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
    """Train on `share` percent of the training films (`share_indices`: whole patients, nested,
    the same for every variant and run) until the validation loss plateaus (at most
    `max_epochs`; the learning rate drops when an epoch does not improve it by `min_delta`);
    keep the epoch with the lowest validation loss among those that trained the encoder too
    (without a validation split: `max_epochs`, the last kept). An epoch draws as many films,
    with replacement from the share, as the whole training split holds. Per epoch, dvclive
    logs the losses and threshold-free validation scores; its summary names the selected
    epoch, whether the run met the plateau rule, the training films and the precision."""
    rt = rt or runtime.start()
    images, masks, rows = load_prepared(siim_dir)
    model = models.build_unet(1)
    pretrained = models.load_encoder_into(model.encoder, encoder_path).get("pretrained", True)
    freeze_encoder_epochs = freeze_encoder_epochs if pretrained else 0  # random features gain nothing from waiting
    model = rt.prepare(model)
    criterion = WeightedSum(models.by_name(PIXEL_LOSSES, pixel_loss, "pixel loss")(), dice_weight, pixel_weight)
    optimizer = loop.adam(model.parameters(), lr)
    scheduler = loop.plateau_scheduler(optimizer, min_delta)
    train_idx, val_idx = share_indices(rows, share), split_indices(rows, "val")
    positive = np.array([int(rows[i]["mask_pixels"]) > 0 for i in train_idx])
    sampler = data.positive_share_sampler(positive, positive_share, seed, samples=len(split_indices(rows, "train")))
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
        live.summary["training_films"] = {"share": share, "films": len(train_idx), "positive": int(positive.sum())}
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
        input_scaling=data.INPUT_SCALING,
        runtime={"device": rt.device.type, "amp": rt.amp, "channels_last": rt.channels_last, "processes": dist.world()},
        params=params or {},
    )
    return best
