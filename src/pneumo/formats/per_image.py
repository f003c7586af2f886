"""The per-image result table: one row per test image, written by `evaluate` for every
U-Net and by `baselines`, read by `report`. Every metric of the report is a function of
these columns, so the report can resample images without the masks.

Two predictions per image: the post-processed one (`pred_pixels`, `intersection`, `dice`:
the image-level gate tuned for SIIM's metric, then the mask threshold), which SIIM's metric
scores, and the gate-free one (`pred_pixels_ungated`, `intersection_ungated`: the pixel
threshold alone), which the segmentation endpoint scores, so that no gate tuned for one
metric decides another."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

COLUMNS = (
    "image_id",
    "has_pneumothorax",
    "mask_pixels",
    "pred_pixels",
    "intersection",
    "dice",
    "max_prob",
    "pred_pixels_ungated",
    "intersection_ungated",
)

Table = dict[str, np.ndarray]


def write_counts(
    path: Path,
    image_ids: list[str],
    counts: dict[str, np.ndarray],
    score: np.ndarray,
    ungated: dict[str, np.ndarray] | None = None,
) -> None:
    """One row per image: truth, predicted and shared pixel counts (`counts` as
    `pneumo.core.metrics.pixel_counts` gives them, gathered batch by batch by `evaluate`),
    Dice after post-processing, the image-level presence score, and the predicted and shared
    pixels of the gate-free prediction (`ungated`; the same as `counts` for a prediction
    without a gate)."""
    t, p, inter = (np.asarray(counts[k], np.int64) for k in ("mask_pixels", "pred_pixels", "intersection"))
    ungated = counts if ungated is None else ungated
    raw_p, raw_inter = (np.asarray(ungated[k], np.int64) for k in ("pred_pixels", "intersection"))
    total = p + t
    dice = np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i, image_id in enumerate(image_ids):
            row = (int(t[i] > 0), int(t[i]), int(p[i]), int(inter[i]))
            writer.writerow(
                [image_id, *row, f"{dice[i]:.6f}", f"{float(score[i]):.6f}", int(raw_p[i]), int(raw_inter[i])]
            )


def read(path: Path) -> Table:
    """One per_image.csv as arrays by column: image_id as str, has_pneumothorax as bool,
    the pixel counts, dice and max_prob as float. A missing column is an error naming it."""
    with open(path, newline="") as f:
        return from_text(f.read(), str(path))


def from_text(text: str, source: str) -> Table:
    """`read` of a per_image.csv's text (e.g. from `git show`); errors name `source`."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}")
    rows = list(reader)
    if not rows:
        raise ValueError(f"{source}: no images")
    table = {c: np.array([float(r[c]) for r in rows]) for c in COLUMNS[2:]}
    table["image_id"] = np.array([r["image_id"] for r in rows])
    table["has_pneumothorax"] = np.array([float(r["has_pneumothorax"]) for r in rows]) == 1
    return table
