"""`compare_variants`: the same test films across every variant in one picture: each row a
film (the radiograph with its true outline, then each variant's post-processed prediction in
red over the truth in green), so a reviewer sees where initialisations differ on the same
cases rather than in four separate grids. The films are drawn by seed from the test split,
half of them positive, the same whatever the variants; one run (the first) of each."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pneumo.core import metrics, overlay, runtime
from pneumo.core.inference import load_unet, predict_probs
from pneumo.formats.prepared import load_prepared, split_indices


def compare_variants(
    *, model_dirs: dict[str, Path], siim_dir: Path, grid_path: Path, n_images: int, seed: int, device: str = "auto"
) -> dict:
    """Predict `n_images` test films with each variant's U-Net (`model_dirs`: variant -> folder
    with model.safetensors and postprocess.json, as evaluate leaves it) and draw the grid to
    `grid_path`; returns the films shown and each variant's Dice on them."""
    dev = runtime.device_from(device)
    images, masks, rows = load_prepared(siim_dir)
    test = split_indices(rows, "test")
    positive = np.array([i for i in test if masks[i].any()], dtype=test.dtype)
    shown = overlay.pick_films(positive, np.setdiff1d(test, positive), n_images, seed)
    truth = np.asarray(masks[shown]).astype(bool)
    predicted, dice = {}, {}
    for variant, folder in model_dirs.items():
        unet, _ = load_unet(folder / "model.safetensors", dev)
        post = json.loads((folder / "postprocess.json").read_text())
        probs = predict_probs(unet, images, shown, dev, desc=f"{variant} on the shown films")
        predicted[variant] = metrics.postprocess(probs, post["top"], post["min_area"], post["bottom"]).astype(bool)
        dice[variant] = [round(float(d), 4) for d in metrics.dice_per_image(predicted[variant], truth)]
    scale = max(1, 192 // images.shape[1])
    grid_rows = []
    for k, i in enumerate(shown):
        image = np.asarray(images[i])
        row = [overlay.outline(image, [(truth[k], overlay.TRUTH)], scale)]
        for variant in model_dirs:
            outlines = [(truth[k], overlay.TRUTH), (predicted[variant][k], overlay.PREDICTION)]
            row.append(overlay.outline(image, outlines, scale))
        grid_rows.append(row)
    title = f"the same {len(shown)} test films, run 0 of each variant (post-processed as tuned on validation)"
    picture = (
        overlay.grid(grid_rows, headers=["truth", *model_dirs], title=title, legend=overlay.OUTLINES)
        if grid_rows
        else overlay.blank()
    )
    grid_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(grid_path), picture)
    return {"films": [rows[i]["image_id"] for i in shown], "dice": dice}
