"""The cross-variant grid: the same test films for every variant, half of them positive,
each variant's post-processed prediction drawn over the truth."""

import json

import cv2
import pytest
import torch

from pneumo.core import runtime
from pneumo.formats import prepared
from pneumo.tasks import compare_variants, train_unet


@pytest.mark.slow  # trains a tiny U-Net
def test_one_grid_shows_every_variant_on_the_same_films(tiny_siim, unet_run, tmp_path):
    torch.manual_seed(0)
    train_unet.train_unet(**unet_run(tiny_siim, "grid_model", freeze_encoder_epochs=0), rt=runtime.start("cpu"))
    folder = tiny_siim / "grid_model"
    (folder / "postprocess.json").write_text(json.dumps({"top": 0.0, "min_area": 1, "bottom": 0.5}))
    grid = tmp_path / "grid.png"
    result = compare_variants.compare_variants(
        model_dirs={"none": folder, "labels": folder}, siim_dir=tiny_siim / "siim", grid_path=grid, n_images=2, seed=0
    )
    assert result["dice"]["none"] == result["dice"]["labels"] and len(result["films"]) == 2
    _, _, rows = prepared.load_prepared(tiny_siim / "siim")
    test_ids = {r["image_id"] for r in rows if r["split"] == "test"}
    assert set(result["films"]) <= test_ids
    picture = cv2.imread(str(grid))
    tile = 192 // 32 * 32  # tiles are scaled to at least 192 px
    assert picture.shape[1] >= 3 * tile and picture.shape[0] >= 2 * tile  # truth + 2 variants, 2 films
