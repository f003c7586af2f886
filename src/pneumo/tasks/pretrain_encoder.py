"""`pretrain_encoder@<initialisation>-<run>`: the U-Net's ResNet34 encoder pretrained on CXR-14
with a pooling + linear head until its validation loss plateaus (`loop.Plateau`), fitted as
the registry entry says (`core.initialisations`): `multilabel` = BCE over the class columns
(the true labels), `cluster` = cross-entropy over a `cluster` column (the autoencoder's
pseudo-labels). The encoder weights of the epoch with the lowest validation loss are what
the U-Net gets; the head is saved apart, only for activation maps."""

from __future__ import annotations

import copy
import csv
import re
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from pneumo.core import checkpoints, data, dist, initialisations, loop, models, runtime
from pneumo.formats.prepared import load_prepared, split_indices


def _targets(kind: str, rows: list[dict], classes: list[str], targets_csv: Path) -> np.ndarray:
    """Per prepared image: the multi-hot class vector (`multilabel`) or the cluster id (`cluster`)."""
    with open(targets_csv, newline="") as f:
        by_id = {r["image_id"]: r for r in csv.DictReader(f)}
    missing = [r["image_id"] for r in rows if r["image_id"] not in by_id]
    if missing:
        raise ValueError(f"{targets_csv}: no target for {len(missing)} image(s), e.g. {missing[0]}")
    if kind == "multilabel":
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
    kind = initialisations.get(target).pretraining
    if kind is None:
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
    targets = _targets(kind, rows, classes, targets_csv)
    n_out = targets.shape[1] if kind == "multilabel" else int(targets.max()) + 1
    model = rt.prepare(models.Classifier(n_out))
    step = rt.wrap(model)
    criterion = nn.BCEWithLogitsLoss() if kind == "multilabel" else nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = loop.plateau_scheduler(optimizer, min_delta)
    plateau = loop.Plateau(patience, min_delta, max_epochs)
    train_idx, val_idx = split_indices(rows, "train"), split_indices(rows, "val")
    train_set = data.Arrays(images, targets, train_idx)
    order = data.shuffled(train_set, seed)
    train_data = data.loader(train_set, batch_size, order=order, train=True, rt=rt)
    val_data = data.loader(data.Arrays(images, targets, val_idx), batch_size, rt=rt)
    generator = torch.Generator().manual_seed(seed)

    def batch_fn(batch):
        x, _ = data.augment(data.to_input(batch[0]).to(rt.device, non_blocking=True), None, generator)
        return x, batch[1].to(rt.device, non_blocking=True)

    checkpoint = checkpoints.Checkpoint(
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
    plateau.history = summary.pop("history", [])
    best = summary.pop("best", {"epoch": -1, "val_loss": float("inf")})
    best_state = summary.pop("best_state", copy.deepcopy(model.state_dict()))
    stopped = summary.pop("stopped", False)
    with loop.live(live_dir, start) as live:
        for epoch in range(start, 0 if stopped else max_epochs):  # stopped: killed after converging
            summary["train_loss"] = loop.train_one_epoch(step, criterion, optimizer, train_data, batch_fn, rt, epoch)
            live.log_metric("train/loss", summary["train_loss"])
            if len(val_idx):
                logits = loop.run_model(model, val_data, rt, desc="validation")
                truth = torch.from_numpy(targets[val_idx])
                summary["val_loss"] = float(criterion(logits, truth))
                live.log_metric("val/loss", summary["val_loss"])
                if kind == "multilabel":
                    aucs = {
                        re.sub(r"\W+", "_", name.lower()): float(roc_auc_score(truth[:, j], logits[:, j]))
                        for j, name in enumerate(classes)
                        if 0 < truth[:, j].sum() < len(truth)  # keys without spaces: "No Finding" -> no_finding
                    }
                    if aucs:
                        summary["val_auc"] = float(np.mean(list(aucs.values())))
                        live.log_metric("val/auc", summary["val_auc"])  # the mean over classes; per class:
                        live.summary["val_auc_by_class"] = aucs  # in the summary, not 6 more curves
                else:
                    summary["val_accuracy"] = float((logits.argmax(1) == truth).float().mean())
                    live.log_metric("val/accuracy", summary["val_accuracy"])
            live.next_step()
            val_loss = summary.get("val_loss", summary["train_loss"])  # no validation split: the training loss
            if val_loss < best["val_loss"] or best["epoch"] < 0:
                best, best_state = {"epoch": epoch, "val_loss": val_loss}, copy.deepcopy(model.state_dict())
            scheduler.step(val_loss)
            stopped = plateau.update(val_loss)
            checkpoint.save(
                epoch, **summary, history=plateau.history, best=best, best_state=best_state, stopped=stopped
            )
            if stopped:
                break
        live.summary["selected"] = best
        live.summary["plateau"] = {**plateau.summary(), "epochs": len(plateau.history), "best_epoch": best["epoch"]}
    checkpoint.finish()
    if not dist.is_main():
        return summary
    model.load_state_dict(best_state)
    models.save_checkpoint(out_path, model.encoder, **meta, selected_epoch=best["epoch"])
    # the head is kept apart (Grad-CAM of the pretraining target); the U-Net loads only the encoder
    models.save_checkpoint(head_path, model.head, kind="head", source=target, trained=True)
    return summary
