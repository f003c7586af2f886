"""`train_unet`: U-Net (ResNet34 encoder) fine-tuned on SIIM-ACR from one encoder
initialisation, on a share of the training films, until its validation loss plateaus
(`loop.Plateau`); keeps the weights of the epoch with the lowest validation loss (never an
epoch with a frozen encoder). Every epoch draws as many films as the whole training split
holds, whatever the share, so every share trains on the same schedule of steps. Only a
pretrained encoder is frozen at first, and only it may learn at a rate of its own
(`encoder_lr_scale`, discriminative fine-tuning): the random `none` encoder trains from the
first step, at the decoder's rate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    encoder_lr_scale: float = 1.0,
    resume: bool = True,
    rt: runtime.Runtime | None = None,
    params: dict | None = None,
) -> dict:
    """Train on `share` percent of the training films (`share_indices`: whole patients, nested,
    the same for every variant and run) until the validation loss plateaus (at most
    `max_epochs`; the learning rate drops when an epoch does not improve it by `min_delta`);
    keep the epoch with the lowest validation loss among those that trained the encoder too
    (without a validation split: `max_epochs`, the last kept). An epoch draws as many films,
    with replacement from the share, as the whole training split holds. A pretrained encoder
    learns at `lr` * `encoder_lr_scale` (`parameter_groups`). Per epoch, dvclive
    logs the losses and threshold-free validation scores; its summary names the selected
    epoch, whether the run met the plateau rule, the training films and the precision."""
    rt = rt or runtime.start()
    images, masks, rows = load_prepared(siim_dir)
    model = models.build_unet(1)
    pretrained = models.load_encoder_into(model.encoder, encoder_path).get("pretrained", True)
    freeze_encoder_epochs = freeze_encoder_epochs if pretrained else 0  # random features gain nothing from waiting
    model = rt.prepare(model)
    criterion = WeightedSum(models.by_name(PIXEL_LOSSES, pixel_loss, "pixel loss")(), dice_weight, pixel_weight)
    optimizer = loop.adam(parameter_groups(model, lr, encoder_lr_scale if pretrained else 1.0), lr)
    scheduler = loop.plateau_scheduler(optimizer, min_delta)
    train_idx, val_idx = share_indices(rows, share), split_indices(rows, "val")
    positive = np.array([int(rows[i]["mask_pixels"]) > 0 for i in train_idx])
    sampler = data.positive_share_sampler(positive, positive_share, seed, samples=len(split_indices(rows, "train")))
    train_data = data.loader(data.Arrays(images, masks, train_idx), batch_size, order=sampler, train=True, rt=rt)
    generator = torch.Generator().manual_seed(seed)
    # the step is built by `freeze_encoder` at the first epoch run
    training = loop.Training(model, None, criterion, optimizer, scheduler, train_data, batches(rt, generator), rt)

    def scores():
        if not len(val_idx):
            return {}, {}
        validation = validate(model, criterion, images, masks, val_idx, rt, batch_size)
        return {"loss": validation.loss(), **validation.scores()}, {}

    unkept = min(freeze_encoder_epochs, max_epochs - 1)  # a frozen-encoder epoch is never kept
    fingerprint = {**(params or {}), "variant": variant, "inputs": checkpoints.fingerprint(encoder_path, siim_dir)}
    checkpoint = training.checkpoint(checkpoint_path, fingerprint, resume, sampler=sampler.generator, augment=generator)
    best, _ = loop.train_and_save(
        training,
        scores,
        lambda best: save(out_path, model, best, variant, int(images.shape[1]), rt, params or {}),
        checkpoint=checkpoint,
        plateau=loop.Plateau(patience, min_delta, max_epochs - unkept),  # the rule counts the epochs that may be kept
        live_dir=live_dir,
        before_epoch=freeze_encoder(training, freeze_encoder_epochs),
        unkept_epochs=unkept,
        last_without_validation=True,
        # the summary's other values are the last epoch's
        summary={
            "training_films": {"share": share, "films": len(train_idx), "positive": int(positive.sum())},
            "precision": "bf16" if rt.amp else "fp32",
        },
    )
    return best


def save(path: Path, model: torch.nn.Module, best: dict, variant: str, size: int, rt: runtime.Runtime, params: dict):
    """The U-Net checkpoint: the kept epoch's weights, what it was selected by, how it was trained."""
    models.save_checkpoint(
        path,
        model,
        kind="unet",
        encoder=models.ENCODER,
        in_channels=1,
        image_size=size,
        variant=variant,
        best_epoch=best["epoch"],
        best_val_loss=best["val_loss"],
        selection="lowest validation loss (Dice + BCE) among epochs with a trained encoder",
        input_scaling=data.INPUT_SCALING,
        runtime={"device": rt.device.type, "amp": rt.amp, "channels_last": rt.channels_last, "processes": dist.world()},
        params=params,
    )


def parameter_groups(model: torch.nn.Module, lr: float, encoder_lr_scale: float) -> list | Iterator:
    """What the optimiser updates: the model's parameters in one group at the optimiser's `lr`
    or, when `encoder_lr_scale` != 1, two (discriminative fine-tuning, as many strong SIIM
    solutions did): the encoder's at `lr` * `encoder_lr_scale`, then the decoder's and the
    head's at `lr`. The plateau scheduler halves both."""
    if encoder_lr_scale == 1.0:
        return model.parameters()  # one group, as before the knob: the default trains exactly as it did
    encoder = list(model.encoder.parameters())
    ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": encoder, "lr": lr * encoder_lr_scale}, {"params": rest, "lr": lr}]


def freeze_encoder(training: loop.Training, epochs: int) -> Callable[[int], None]:
    """The per-epoch hook that trains only the decoder for the first `epochs` epochs: a random
    decoder's gradients would wreck a pretrained encoder. The training step is rebuilt
    whenever that changes, as DDP registers the trainable parameters when built."""
    frozen = None

    def before_epoch(epoch: int) -> None:
        nonlocal frozen
        if frozen != (epoch < epochs):
            frozen = epoch < epochs
            for p in training.model.encoder.parameters():
                p.requires_grad_(not frozen)
            training.step = training.rt.wrap(training.model)

    return before_epoch
