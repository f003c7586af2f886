"""`init_encoder`: the `none` initialisation, a seeded random ResNet34 encoder written as a
file like every other initialisation, so every U-Net variant starts from an encoder file.
It reads no data: changing CXR-14 or its params never touches it."""

from __future__ import annotations

from pathlib import Path

from pneumo.core import models


def init_encoder(*, out_path: Path) -> None:
    """Write smp's random initialisation of the encoder (seeded by the caller)."""
    models.save_checkpoint(
        out_path,
        models.build_encoder(1),
        kind="encoder",
        encoder=models.ENCODER,
        in_channels=1,
        source="none",
        pretrained=False,  # train_unet freezes only pretrained encoders at first
    )
