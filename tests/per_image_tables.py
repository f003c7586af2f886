"""Per-image tables for the report's tests (the columns of evaluate's per_image.csv): built
in memory from Dice and scores, or written as CSV rows from pixel counts."""

import csv
from pathlib import Path

import numpy as np

from pneumo.formats import per_image


def table(positive, dice, score) -> dict:
    """A per-image table for tests that need only dice and scores (pixel columns consistent-ish)."""
    positive = np.asarray(positive, bool)
    mask = np.where(positive, 100.0, 0.0)
    return {
        "image_id": np.array([f"img{i}" for i in range(len(positive))]),
        "has_pneumothorax": positive,
        "mask_pixels": mask,
        "pred_pixels": mask,
        "intersection": np.round(np.asarray(dice) * mask),
        "dice": np.asarray(dice, float),
        "max_prob": np.asarray(score, float),
        "pred_pixels_ungated": mask,
        "intersection_ungated": np.round(np.asarray(dice) * mask),
    }


def rows_from_counts(ids, positive, mask, pred, inter, max_prob, ungated=None) -> list[dict]:
    """per_image.csv rows from pixel counts, Dice as evaluate computes it (1 when both empty);
    `ungated`: (pred, inter) of the gate-free prediction, the same as the gated by default."""
    total = mask + pred
    dice = np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))
    raw_pred, raw_inter = (pred, inter) if ungated is None else ungated
    return [
        {
            "image_id": i,
            "has_pneumothorax": int(y),
            "mask_pixels": int(m),
            "pred_pixels": int(p),
            "intersection": int(n),
            "dice": float(d),
            "max_prob": float(s),
            "pred_pixels_ungated": int(rp),
            "intersection_ungated": int(ri),
        }
        for i, y, m, p, n, d, s, rp, ri in zip(
            ids, positive, mask, pred, inter, dice, max_prob, raw_pred, raw_inter, strict=True
        )
    ]


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=per_image.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path
