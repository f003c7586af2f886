"""`baselines`: predictions that see no image content, scored like every U-Net.

A model has learned something from the radiograph only where it beats these:
- `all_empty` predicts no pneumothorax anywhere. On SIIM's metric it already scores the
  share of empty images.
- `location_prior` predicts the same mask on every image: the mean training mask (where
  pneumothoraces tend to be) above a threshold chosen on validation for the mean Dice on
  the positive images. Tuned for SIIM Dice instead it would predict nothing (a mask on
  every image scores 0 on every empty one) and repeat `all_empty`; tuned this way it shows
  how much overlap position alone buys. Its image-level AUC is 0.5: it ranks nothing.

Each baseline writes the same `per_image.csv` as `evaluate`, so the report resamples them
with the same images as the U-Nets and names, per metric, the better of the two.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pneumo.core import metrics
from pneumo.formats import per_image
from pneumo.formats.prepared import load_prepared, split_indices

LEVELS = 50  # thresholds tried, evenly spaced over the prior's range


def tune_prior(prior: np.ndarray, true: np.ndarray) -> dict:
    """The threshold on the prior map whose mask, predicted on every image, has the best
    mean Dice over the positive images of `true`, scored from per-image overlaps (the N
    identical predictions are never stacked)."""
    t = np.asarray(true, bool).reshape(len(true), -1)
    t = t[t.any(1)]
    best = {"threshold": float(prior.max()), "dice_positive": 0.0}
    for threshold in np.linspace(0, prior.max(), LEVELS, endpoint=False):
        mask = (prior > threshold).ravel()
        dice = 2 * (t @ mask.astype(np.int64)) / (t.sum(1) + mask.sum())
        if len(t) and dice.mean() > best["dice_positive"]:
            best = {"threshold": float(threshold), "dice_positive": float(dice.mean())}
    return best


def baselines(*, siim_dir: Path, out_dir: Path, metrics_path: Path) -> dict:
    """Score `all_empty` and `location_prior` on the test split; write their per-image rows
    under out_dir/<name>/per_image.csv and a summary to metrics_path."""
    images, masks, rows = load_prepared(siim_dir)
    train_idx, val_idx, test_idx = (split_indices(rows, s) for s in ("train", "val", "test"))
    size = images.shape[1]
    prior = np.asarray(masks[train_idx], np.float32).mean(0) if len(train_idx) else np.zeros((size, size), np.float32)
    tuned = tune_prior(prior, masks[val_idx])
    truth = np.asarray(masks[test_idx], bool)
    predictions = {
        "all_empty": (np.zeros_like(truth), np.zeros(len(truth))),
        "location_prior": (np.broadcast_to(prior > tuned["threshold"], truth.shape), np.full(len(truth), prior.max())),
    }
    ids = [rows[i]["image_id"] for i in test_idx]
    summary = {}
    for name, (pred, score) in predictions.items():
        per_image.write(out_dir / name / "per_image.csv", ids, pred, truth, score)
        row = metrics.segmentation_report(pred, truth, score)
        row["auc"] = 0.5  # a constant score ranks nothing
        summary[name] = row
    summary["location_prior"] |= {"threshold": tuned["threshold"], "val_dice_positive": tuned["dice_positive"]}
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary
