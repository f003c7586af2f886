"""How much Dice on positives position alone buys on the real SIIM-ACR masks: the yardstick for
the phantoms' `location_prior` baseline (issue: at most 0.20 on the phantom test split).

The real positive masks of `all-train-rle.csv.gz` are rendered at the working size (area
resize, as `prepare_siim` does), optionally each region (mask row) grown about its centroid by
an area factor, as the default phantoms' areas are larger than the real ones (params.yaml
`synthesize.log_area_mean`). The images are split at random into train / validation / test
(the default's 40 / 20 / 40) and written as a prepared SIIM folder, which the `baselines` stage
itself scores (`stages/baselines.py`): the mean training mask, thresholded on validation for
the mean Dice on positives, that Dice on test. One figure per split seed, and their mean.

    python tools/real_location_prior.py ../shared/realdata/siim/all-train-rle.csv.gz --factor 1 3.3
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from location_map import read_labels

from pneumo.formats import rle
from pneumo.formats.prepared import resize_mask

ROOT = Path(__file__).resolve().parents[1]

FILM = 1024  # every SIIM-ACR training film


def grown(text: str, factor: float) -> np.ndarray:
    """One region at film size, its area scaled by `factor` about its centroid (nearest neighbour)."""
    region = rle.render([text], FILM, FILM).astype(np.uint8)
    if factor == 1:
        return region
    ys, xs = np.nonzero(region)
    cy, cx, s = ys.mean(), xs.mean(), math.sqrt(factor)
    warp = np.array([[s, 0, cx * (1 - s)], [0, s, cy * (1 - s)]])
    return cv2.warpAffine(region, warp, (FILM, FILM), flags=cv2.INTER_NEAREST)


def masks_at(rles: dict[str, list[str]], size: int, factor: float) -> np.ndarray:
    """Positive images' masks at size x size (uint8), regions grown by `factor`."""
    out = []
    for rows in rles.values():
        regions = [grown(t, factor) for t in rows if t.strip() != rle.EMPTY]
        if regions:
            out.append(resize_mask(np.logical_or.reduce(regions).astype(np.uint8), size))
    return np.stack(out)


def prior_dice(masks: np.ndarray, seed: int, shares: tuple[float, float] = (0.4, 0.2)) -> float:
    """Test Dice on positives of the `baselines` stage's location prior, for one random
    train / val / test split of these masks (written as a prepared folder; images blank)."""
    order = np.random.default_rng(seed).permutation(len(masks))
    n_train, n_val = round(shares[0] * len(masks)), round(shares[1] * len(masks))
    split = np.full(len(masks), "test", object)
    split[order[:n_train]], split[order[n_train : n_train + n_val]] = "train", "val"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "prepared"
        folder.mkdir()
        np.save(folder / "images.npy", np.zeros_like(masks))
        np.save(folder / "masks.npy", masks)
        with open(folder / "index.csv", "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(["image_id", "split", "has_pneumothorax", "mask_pixels"])
            rows.writerows(
                [i, s, int(m.any()), int(m.sum())] for i, (s, m) in enumerate(zip(split, masks, strict=True))
            )
        out = Path(tmp) / "baselines.json"
        command = [sys.executable, ROOT / "stages" / "baselines.py", "--siim", folder, "--out", tmp, "--metrics", out]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["location_prior"]["dice_positive"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, help="SIIM train-rle CSV (1024 px films), plain or .gz")
    parser.add_argument("--size", type=int, default=64, help="working size (params.yaml data.image_size)")
    parser.add_argument("--factor", type=float, nargs="+", default=[1.0], help="area factors to grow regions by")
    parser.add_argument("--seeds", type=int, default=5, help="random splits")
    args = parser.parse_args()
    table = read_labels(args.labels)
    for factor in args.factor:
        masks = masks_at(table.rles, args.size, factor)
        dice = [prior_dice(masks, seed) for seed in range(args.seeds)]
        print(
            f"area x{factor:g}: {len(masks)} positive films at {args.size} px; location prior Dice on positives"
            f" {np.mean(dice):.3f} (splits: {', '.join(f'{d:.3f}' for d in dice)})"
        )


if __name__ == "__main__":
    main()
