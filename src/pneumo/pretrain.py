"""`pretrain_encoder`: the U-Net's ResNet34 encoder pretrained on CXR-14, with a pooling +
linear head, on the true labels (multi-label BCE) or on the autoencoder's pseudo-labels
(cross-entropy over cluster ids). The encoder weights are what the U-Net gets; the head is
saved apart, only for activation maps. Target `none` keeps the seeded random
initialisation, so every U-Net variant starts from an encoder file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from pneumo import dist, models, train
from pneumo.prepare import load_prepared, split_indices

TARGETS = ("none", "labels", "pseudo_labels")


def _targets(target: str, rows: list[dict], classes: list[str], targets_csv: Path) -> np.ndarray:
    """Per prepared image: the multi-hot class vector (labels) or the cluster id (pseudo_labels)."""
    with open(targets_csv, newline="") as f:
        by_id = {r["image_id"]: r for r in csv.DictReader(f)}
    missing = [r["image_id"] for r in rows if r["image_id"] not in by_id]
    if missing:
        raise ValueError(f"{targets_csv}: no target for {len(missing)} image(s), e.g. {missing[0]}")
    if target == "labels":
        return np.array([[float(by_id[r["image_id"]][c]) for c in classes] for r in rows], dtype=np.float32)
    return np.array([int(by_id[r["image_id"]]["cluster"]) for r in rows], dtype=np.int64)


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
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    resume: bool = True,
    rt: train.Runtime | None = None,
    params: dict | None = None,
) -> dict:
    models.by_name({t: t for t in TARGETS}, target, "pretraining target")
    meta = {"kind": "encoder", "encoder": models.ENCODER, "in_channels": 1, "source": target, "params": params or {}}
    fingerprint = {
        **(params or {}),
        "seed": seed,
        "target": target,
        "inputs": train.fingerprint(images_dir, targets_csv),
    }
    if target == "none":  # no training: the seeded random initialisation
        if not dist.is_main():
            return {}
        model = models.Classifier(len(classes))
        models.save_checkpoint(out_path, model.encoder, **meta)
        models.save_checkpoint(head_path, model.head, kind="head", source=target, trained=False)
        train.Checkpoint(checkpoint_path, fingerprint, resume).finish()
        with train.live(live_dir) as live:
            live.log_metric("epochs", 0)
            live.next_step()
        return {}
    rt = rt or train.runtime()
    images, _, rows = load_prepared(images_dir)
    targets = _targets(target, rows, classes, targets_csv)
    n_out = targets.shape[1] if target == "labels" else int(targets.max()) + 1
    model = rt.prepare(models.Classifier(n_out))
    step = rt.wrap(model)
    criterion = nn.BCEWithLogitsLoss() if target == "labels" else nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    train_idx, val_idx = split_indices(rows, "train"), split_indices(rows, "val")
    train_set = train.Arrays(images, targets, train_idx)
    order = train.shuffled(train_set, seed)
    train_data = train.loader(train_set, batch_size, order=order, train=True, rt=rt)
    val_data = train.loader(train.Arrays(images, targets, val_idx), batch_size, rt=rt)
    generator = torch.Generator().manual_seed(seed)

    def batch_fn(batch):
        x, _ = train.augment(train.to_input(batch[0]).to(rt.device, non_blocking=True), None, generator)
        return x, batch[1].to(rt.device, non_blocking=True)

    checkpoint = train.Checkpoint(
        checkpoint_path,
        fingerprint,
        resume,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        order=order.generator,
        augment=generator,
    )
    start, summary = checkpoint.restore()
    with train.live(live_dir, start) as live:
        for epoch in range(start, epochs):
            summary["train_loss"] = train.train_one_epoch(step, criterion, optimizer, train_data, batch_fn, rt, epoch)
            scheduler.step()
            live.log_metric("train/loss", summary["train_loss"])
            if len(val_idx):
                logits = train.run_model(model, val_data, rt)
                truth = torch.from_numpy(targets[val_idx])
                summary["val_loss"] = float(criterion(logits, truth))
                live.log_metric("val/loss", summary["val_loss"])
                if target == "labels":
                    for j, name in enumerate(classes):
                        if 0 < truth[:, j].sum() < len(truth):
                            live.log_metric(f"val/auc/{name}", float(roc_auc_score(truth[:, j], logits[:, j])))
                else:
                    summary["val_accuracy"] = float((logits.argmax(1) == truth).float().mean())
                    live.log_metric("val/accuracy", summary["val_accuracy"])
            live.next_step()
            checkpoint.save(epoch, **summary)
    checkpoint.finish()
    if not dist.is_main():
        return summary
    models.save_checkpoint(out_path, model.encoder, **meta)
    # the head is kept apart (Grad-CAM of the pretraining target); the U-Net loads only the encoder
    models.save_checkpoint(head_path, model.head, kind="head", source=target, trained=True)
    return summary
