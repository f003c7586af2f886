"""Shared fixtures: the project root, the real dataset samples in ../shared/realdata, and
the helpers that set up tiny U-Net trainings (as fixtures returning the function, so test
modules never import this file)."""

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from pneumo.core import models
from pneumo.tasks import prepare_siim

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def root() -> Path:
    """The project root (params.yaml, dvc.yaml, stages/)."""
    return ROOT


@pytest.fixture(scope="session")
def realdata() -> Path:
    assert REALDATA.is_dir(), f"real samples expected at {REALDATA}"
    return REALDATA


@pytest.fixture(scope="session")
def real_dicoms(realdata) -> list[Path]:
    files = sorted((realdata / "siim" / "dicom-images-train").rglob("*.dcm"))
    assert len(files) == 10
    return files


@pytest.fixture(scope="session")
def all_train_rle(realdata, tmp_path_factory) -> Path:
    """The full public SIIM train-rle CSV, unpacked."""
    out = tmp_path_factory.mktemp("rle") / "all-train-rle.csv"
    with gzip.open(realdata / "siim" / "all-train-rle.csv.gz", "rb") as f, open(out, "wb") as g:
        shutil.copyfileobj(f, g)
    return out


def _unet_inputs(siim_root: Path, tmp: Path, split: dict) -> Path:
    """The inputs of a tiny real U-Net training in `tmp`: the SIIM folder `siim_root`
    prepared at 32 px (siim/) and a seeded random ResNet34 encoder (encoder.safetensors)."""
    prepare_siim.prepare_siim(
        root=siim_root,
        rle_csv="train-rle.csv",
        out_dir=tmp / "siim",
        image_size=32,
        split=split,
        seed=0,
        strict=True,
        workers=1,
    )
    torch.manual_seed(0)
    models.save_checkpoint(tmp / "encoder.safetensors", models.build_encoder(1), kind="encoder", encoder="resnet34")
    return tmp


@pytest.fixture(scope="session")
def unet_inputs():
    """`unet_inputs(siim_root, tmp, split) -> tmp`: see _unet_inputs."""
    return _unet_inputs


@pytest.fixture(scope="module")
def tiny_siim(realdata, unet_inputs, tmp_path_factory) -> Path:
    """The real SIIM samples as tiny U-Net training inputs (see _unet_inputs)."""
    split = {"train": 0.6, "val": 0.2, "test": 0.2}
    return unet_inputs(realdata / "siim", tmp_path_factory.mktemp("tiny"), split)


def _unet_run(tmp: Path, run: str, **overrides) -> dict:
    """`train_unet.train_unet` keyword arguments for a tiny run on the inputs `_unet_inputs`
    wrote to `tmp`, with its outputs under tmp/run (all but the runtime)."""
    return {
        "variant": "none",
        "encoder_path": tmp / "encoder.safetensors",
        "siim_dir": tmp / "siim",
        "out_path": tmp / run / "model.safetensors",
        "live_dir": tmp / run / "live",
        "checkpoint_path": tmp / run / "checkpoint.pt",
        "epochs": 1,
        "batch_size": 4,
        "lr": 1e-3,
        "pixel_loss": "bce",
        "dice_weight": 1.0,
        "pixel_weight": 1.0,
        "freeze_encoder_epochs": 1,
        "positive_share": 0.5,
        "seed": 0,
        **overrides,
    }


@pytest.fixture(scope="session")
def unet_run():
    """`unet_run(tmp, run, **overrides) -> dict`: see _unet_run."""
    return _unet_run
