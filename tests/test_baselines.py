"""Content-free baselines: the location prior's threshold and the per-image rows."""

import csv

import numpy as np
import pytest

from pneumo.tasks import baselines


def test_location_prior_threshold_maximises_dice_on_positives():
    """Findings always at the top-left, sometimes spreading right: the prior is highest in
    the top-left, and the best threshold keeps exactly the always-covered core."""
    true = np.zeros((10, 8, 8), bool)
    true[:4, :2, :2] = True  # 4 positives share a 2x2 core ...
    true[:1, :2, 2:4] = True  # ... one of them extends to the right
    prior = true.mean(0).astype(np.float32)
    best = baselines.tune_prior(prior, true)
    core = np.zeros((8, 8), bool)
    core[:2, :2] = True
    assert np.array_equal(prior > best["threshold"], core)
    assert best["dice_positive"] == pytest.approx(np.mean([2 * 4 / 12, 1.0, 1.0, 1.0]))


def test_baselines_write_per_image_rows(tiny_siim, tmp_path):
    summary = baselines.baselines(siim_dir=tiny_siim / "siim", out_dir=tmp_path, metrics_path=tmp_path / "b.json")
    assert summary["all_empty"]["dice_pooled"] == 0 and summary["location_prior"]["auc"] == 0.5
    for name in ("all_empty", "location_prior"):
        with open(tmp_path / name / "per_image.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == summary[name]["images"]
        assert all(int(r["intersection"]) <= min(int(r["pred_pixels"]), int(r["mask_pixels"])) for r in rows)
    with open(tmp_path / "all_empty" / "per_image.csv", newline="") as f:
        assert all(r["pred_pixels"] == "0" for r in csv.DictReader(f))
