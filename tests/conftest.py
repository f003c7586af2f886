"""Shared fixtures: the real dataset samples in ../shared/realdata and small helpers."""

import gzip
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"


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
