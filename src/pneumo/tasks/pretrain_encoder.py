"""`pretrain_encoder@<initialisation>-<run>`: the U-Net's ResNet34 encoder pretrained on CXR-14
with a pooling + linear head until its validation loss plateaus (`loop.Plateau`), fitted as
the registry entry's `Pretraining` says (`core.initialisations`: the true labels with BCE over
the class columns, or cluster ids with cross-entropy: the run's pseudo-labels or a control of
them, from the run's cluster folder). The
encoder weights of the epoch with the lowest validation loss are what the U-Net gets; the head
is saved apart, only for activation maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pneumo.core import checkpoints, data, inference, initialisations, loop, models, runtime
from pneumo.formats.prepared import load_prepared, seen_indices, split_indices


def pretrain_encoder(
    *,
    target: str,
    images_dir: Path,
    out_path: Path,
    head_path: Path,
    live_dir: Path,
    checkpoint_path: Path,
    classes: list[str],
    targets_csv: Path,
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
    """Pretrain the encoder of initialisation `target` on the prepared images `images_dir`
    against the targets in `targets_csv` (read as its registry entry says), with a plateau
    stop (`max_epochs`, `patience`, `min_delta`) and resume from `checkpoint_path`; write the
    selected epoch's encoder to `out_path` and its head to `head_path`, the curves to
    `live_dir`. Returns the last epoch's losses and scores."""
    pretraining = initialisations.get(target).pretraining
    if pretraining is None:
        raise ValueError(
            f"initialisation {target!r} is not produced by pretrain_encoder (its registry entry has no pretraining)"
        )
    meta = {"kind": "encoder", "encoder": models.ENCODER, "in_channels": 1, "source": target, "pretrained": True}
    meta["params"] = params or {}
    fingerprint = {
        **(params or {}),
        "seed": seed,
        "target": target,
        "inputs": checkpoints.fingerprint(images_dir, targets_csv),
    }
    rt = rt or runtime.start()
    images, _, rows = load_prepared(images_dir)
    seen = seen_indices(rows)  # the probe's films have no pseudo-label and are never read
    targets_seen = pretraining.read([rows[i] for i in seen], classes, targets_csv)
    targets = np.zeros((len(rows), *targets_seen.shape[1:]), targets_seen.dtype)
    targets[seen] = targets_seen
    model = rt.prepare(models.Classifier(pretraining.outputs(targets)))
    step = rt.wrap(model)
    criterion = pretraining.criterion()
    optimizer = loop.adam(model.parameters(), lr)
    scheduler = loop.plateau_scheduler(optimizer, min_delta)
    train_idx, val_idx = split_indices(rows, "train"), split_indices(rows, "val")
    train_set = data.Arrays(images, targets, train_idx)
    order = data.shuffled(train_set, seed)
    train_data = data.loader(train_set, batch_size, order=order, train=True, rt=rt)
    val_data = data.loader(data.Arrays(images, targets, val_idx), batch_size, rt=rt)
    generator = torch.Generator().manual_seed(seed)

    def batch_fn(batch):
        x, _ = data.augment(data.to_input(batch[0]).to(rt.device, non_blocking=True), None, generator)
        return x, batch[1].to(rt.device, non_blocking=True)

    def validate():
        if not len(val_idx):
            return {}, {}
        logits = inference.run_model(model, val_data, rt, desc="validation")
        truth = torch.from_numpy(targets[val_idx])
        scores, details = pretraining.scores(logits, truth, classes)
        return {"loss": float(criterion(logits, truth)), **scores}, details

    def save(best):
        models.save_checkpoint(out_path, model.encoder, **meta, selected_epoch=best["epoch"])
        # the head is kept apart (Grad-CAM of the pretraining target); the U-Net loads only the encoder
        models.save_checkpoint(head_path, model.head, kind="head", source=target, trained=True)

    training = loop.Training(model, step, criterion, optimizer, scheduler, train_data, batch_fn, rt)
    checkpoint = training.checkpoint(checkpoint_path, fingerprint, resume, order=order.generator, augment=generator)
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
