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


CHUNK = 256  # masks read per step: memory stays flat in the number of films


def chunks(indices: np.ndarray):
    for start in range(0, len(indices), CHUNK):
        yield indices[start : start + CHUNK]


def mean_mask(masks: np.ndarray, indices: np.ndarray, size: int) -> np.ndarray:
    """The mean of the given masks, float32, read chunk by chunk. Equal to
    `np.asarray(masks[indices], np.float32).mean(0)`: the 0/1 sums are exact integers."""
    if not len(indices):
        return np.zeros((size, size), np.float32)
    total = np.zeros((size, size), np.int64)
    for rows in chunks(indices):
        total += np.asarray(masks[rows], np.int64).sum(0)
    return total.astype(np.float32) / np.float32(len(indices))


def tune_prior(prior: np.ndarray, masks: np.ndarray, indices: np.ndarray | None = None) -> dict:
    """The threshold on the prior map whose mask, predicted on every image, has the best
    mean Dice over the positive images among `masks[indices]` (all rows by default), scored
    from per-image overlaps read chunk by chunk (the N identical predictions are never
    stacked, nor the masks)."""
    indices = np.arange(len(masks)) if indices is None else indices
    levels = np.linspace(0, prior.max(), LEVELS, endpoint=False)
    cut = np.stack([(prior > threshold).ravel() for threshold in levels], 1).astype(np.int32)  # (pixels, LEVELS)
    inter, true_pixels = [], []
    for rows in chunks(indices):
        t = np.asarray(masks[rows], bool).reshape(len(rows), -1)
        t = t[t.any(1)]
        inter.append(t.astype(np.int32) @ cut)
        true_pixels.append(t.sum(1))
    inter = np.concatenate(inter) if inter else np.zeros((0, LEVELS), np.int64)
    true_pixels = np.concatenate(true_pixels) if true_pixels else np.zeros(0, np.int64)
    best = {"threshold": float(prior.max()), "dice_positive": 0.0}
    for j, threshold in enumerate(levels):
        dice = 2 * inter[:, j].astype(np.int64) / (true_pixels + int(cut[:, j].sum()))
        if len(true_pixels) and dice.mean() > best["dice_positive"]:
            best = {"threshold": float(threshold), "dice_positive": float(dice.mean())}
    return best


def baselines(*, siim_dir: Path, out_dir: Path, metrics_path: Path) -> dict:
    """Score `all_empty` and `location_prior` on the test split; write their per-image rows
    under out_dir/<name>/per_image.csv and a summary to metrics_path."""
    images, masks, rows = load_prepared(siim_dir)
    train_idx, val_idx, test_idx = (split_indices(rows, s) for s in ("train", "val", "test"))
    size = images.shape[1]
    prior = mean_mask(masks, train_idx, size)
    tuned = tune_prior(prior, masks, val_idx)
    predicted = (prior > tuned["threshold"]).ravel()
    true_pixels, inter = [], []
    for rows_ in chunks(test_idx):
        t = np.asarray(masks[rows_], bool).reshape(len(rows_), -1)
        true_pixels.append(t.sum(1))
        inter.append(t.astype(np.int32) @ predicted.astype(np.int32))
    true_pixels = np.concatenate(true_pixels).astype(np.int64) if true_pixels else np.zeros(0, np.int64)
    inter = np.concatenate(inter).astype(np.int64) if inter else np.zeros(0, np.int64)
    nothing = np.zeros_like(true_pixels)
    predictions = {
        "all_empty": ({"mask_pixels": true_pixels, "pred_pixels": nothing, "intersection": nothing}, nothing),
        "location_prior": (
            {"mask_pixels": true_pixels, "pred_pixels": nothing + int(predicted.sum()), "intersection": inter},
            np.full(len(true_pixels), prior.max()),
        ),
    }
    ids = [rows[i]["image_id"] for i in test_idx]
    summary = {}
    for name, (counts, score) in predictions.items():
        per_image.write_counts(out_dir / name / "per_image.csv", ids, counts, score)
        row = metrics.report_from_counts(counts, score)
        row["auc"] = 0.5  # a constant score ranks nothing
        summary[name] = row
    summary["location_prior"] |= {"threshold": tuned["threshold"], "val_dice_positive": tuned["dice_positive"]}
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary
