"""The tiny U-Net the prediction tests run: trained here for one epoch on the real samples at
32 px, so predictions are real without a real model. Test-only (test_architecture keeps such
helpers out of the package); each test module wraps it in its own module-scoped fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pneumo.core import inference, runtime
from pneumo.formats import prepared
from pneumo.tasks import train_unet


def train_tiny_model(tiny_siim: Path, unet_run) -> Path:
    """A model folder (model.safetensors, postprocess.json) under `tiny_siim`, whose thresholds
    make about half of the real images positive (so both kinds of rows are exercised)."""
    tmp = tiny_siim
    torch.manual_seed(0)
    train_unet.train_unet(**unet_run(tmp, "model", variant="test", freeze_encoder_epochs=0), rt=runtime.start("cpu"))
    model, _ = inference.load_unet(tmp / "model" / "model.safetensors", torch.device("cpu"))
    images, _, _ = prepared.load_prepared(tmp / "siim")
    peaks = (
        inference.predict_probs(model, images, np.arange(len(images)), torch.device("cpu"))
        .reshape(len(images), -1)
        .max(1)
    )
    top = float(np.median(peaks))
    (tmp / "model" / "postprocess.json").write_text(
        json.dumps({"top": top, "min_area": 1, "bottom": top, "image_size": 32})
    )
    return tmp / "model"
