"""Shared fixtures: the project root, the real dataset samples ($PNEUMO_REALDATA, else
../shared/realdata beside the clone, else data/realdata from `make realdata`), a corpus of
DICOMs in every transfer syntax written from them (with the writers of dicom_writers.py), and
the helpers that set up tiny U-Net trainings (as fixtures returning the function, so test
modules never import this file)."""

import csv
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from dicom_writers import write_as, write_without_meta
from pydicom.data import get_testdata_file
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pneumo.core import models
from pneumo.tasks import prepare_siim

ROOT = Path(__file__).resolve().parents[1]
# where the real samples may be, in order (.ci/run looks in the same places, runs `make realdata`
# when none holds them, and fails when that cannot fetch them, so CI never skips the tests)
REALDATA_PLACES = [ROOT.parent / "shared" / "realdata", ROOT / "data" / "realdata"]


def _realdata_folder() -> Path | None:
    """$PNEUMO_REALDATA when set (it alone, found or not), else the first of REALDATA_PLACES
    that holds the samples, else None."""
    if os.environ.get("PNEUMO_REALDATA"):
        return Path(os.environ["PNEUMO_REALDATA"])
    return next((p for p in REALDATA_PLACES if (p / "siim" / "dicom-images-train").is_dir()), None)


REALDATA = _realdata_folder()


@pytest.fixture(scope="session")
def root() -> Path:
    """The project root (params.yaml, dvc.yaml, stages/)."""
    return ROOT


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real SIIM and CXR-14 samples; tests that need them skip on a clone without them."""
    if REALDATA is None or not (REALDATA / "siim" / "dicom-images-train").is_dir():
        places = str(REALDATA) if REALDATA else " or ".join(str(p) for p in REALDATA_PLACES)
        pytest.skip(
            f"real samples not found at {places}: run `make realdata` (fetches them from their public "
            "sources into data/realdata, or into $PNEUMO_REALDATA when set), put the project's shared/realdata "
            "folder beside the clone, or point PNEUMO_REALDATA at a copy; see tools/realdata.py"
        )
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
        "share": 100,
        "max_epochs": 1,
        "patience": 2,
        "min_delta": 0.02,
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


# The corpus: what `pneumo predict` may meet, written from a real SIIM film. Values: the
# reason a refused file must name, or None for a file that must be read.
LOSSY = {JPEGLSNearLossless: {"jls_error": 2}, JPEG2000: {"j2k_cr": [20]}}
SYNTAXES_8 = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
]
SYNTAXES_12 = [
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000,
]


def grayscale(template: pydicom.Dataset, stored: np.ndarray, bits: int, uid: str, **tags) -> pydicom.Dataset:
    """An uncompressed grayscale dataset with the header of the real `template`, holding
    `stored` at `bits` bits stored (signed when its dtype is), and `tags` set."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = template.SOPClassUID
    for keyword in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "Modality"):
        setattr(ds, keyword, template.get(keyword))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, int(stored.dtype.kind == "i")
    ds.PixelData = stored.astype(f"<{stored.dtype.kind}{ds.BitsAllocated // 8}").tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture(scope="session")
def grayscale_dataset():
    """`grayscale_dataset(template, stored, bits, uid, **tags)`: see grayscale."""
    return grayscale


@pytest.fixture(scope="session")
def dicom_writer():
    """`dicom_writer(source, syntax, path, **options)`: dicom_writers.write_as, a grayscale
    dataset written with its pixels re-encoded in any transfer syntax."""
    return write_as


@pytest.fixture(scope="session")
def dicom_corpus(real_dicoms, tmp_path_factory) -> tuple[Path, dict[str, str | None], dict[str, pydicom.Dataset]]:
    """(folder, {file name: None if it must be read, else the reason it must be refused},
    {file name: the uncompressed dataset it was written from}): every transfer syntax the
    plugins encode, 8- and 12-bit, rescale + window, signed, MONOCHROME1, a VOI LUT, a file
    without meta header, pydicom's own 12-bit JPEG Extended files; colour, multi-frame,
    pixel-less and unsupported files. A 256 px crop of a real film keeps encoding fast."""
    folder = tmp_path_factory.mktemp("corpus")
    real = pydicom.dcmread(real_dicoms[0])
    crop = real.pixel_array[384:640, 384:640]
    twelve = (crop.astype(np.uint16) << 4) | (crop >> 4)
    expect: dict[str, str | None] = {}
    sources: dict[str, pydicom.Dataset] = {}
    uid = iter(f"1.2.826.0.1.3680043.10.1234.99.{k}" for k in range(1000))

    def add(name, ds, syntax=ExplicitVRLittleEndian, reason=None):
        write_as(ds, syntax, folder / name, **LOSSY.get(syntax, {}))
        expect[name], sources[name] = reason, ds

    for bits, stored, syntaxes in ((8, crop, SYNTAXES_8), (12, twelve, SYNTAXES_12)):
        for syntax in syntaxes:
            add(f"{bits}bit-{syntax}.dcm", grayscale(real, stored, bits, next(uid)), syntax)
    window = {"WindowCenter": 1500, "WindowWidth": 2000}
    add(  # rescaled values 1592-5304: the window [1900, 4900] clips both ends
        "rescale-window.dcm",
        grayscale(
            real, twelve, 12, next(uid), RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=3400, WindowWidth=3000
        ),
    )
    add(
        "signed-window.dcm",
        grayscale(real, twelve.astype(np.int16) - 2048, 12, next(uid), WindowCenter=-300, WindowWidth=2500),
        JPEGLSLossless,
    )
    add(
        "monochrome1-window.dcm",
        grayscale(real, 4095 - twelve, 12, next(uid), PhotometricInterpretation="MONOCHROME1", **window),
        RLELossless,
    )
    voi = grayscale(real, twelve, 12, next(uid))
    lut = pydicom.Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 16])
    lut.add_new(0x00283006, "OW", (np.sqrt(np.arange(4096) / 4095) * 65535).astype("<u2").tobytes())
    voi.VOILUTSequence = [lut]
    add("voi-lut.dcm", voi, JPEG2000Lossless)
    write_without_meta(grayscale(real, twelve, 12, next(uid)), folder / "no-meta-header")
    expect["no-meta-header"], sources["no-meta-header"] = None, grayscale(real, twelve, 12, "1.2.3")
    shutil.copy(get_testdata_file("JPGExtended.dcm"), folder / "jpeg-extended-12bit.dcm")
    expect["jpeg-extended-12bit.dcm"] = None
    # refused
    malformed = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))  # pydicom's own; its scan breaks libjpeg
    malformed.SOPInstanceUID = next(uid)  # pydicom ships it with the SOPInstanceUID of JPGExtended.dcm
    malformed.save_as(folder / "jpeg-extended-12bit-malformed.dcm")
    expect["jpeg-extended-12bit-malformed.dcm"] = "cannot decode JPEG Extended"
    rgb = grayscale(
        real,
        np.stack([crop] * 3, axis=-1),
        8,
        next(uid),
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
    )
    rgb.Rows, rgb.Columns = crop.shape
    add("colour.dcm", rgb, reason="colour image (PhotometricInterpretation 'RGB', 3 sample(s)")
    add(
        "multi-frame.dcm",
        grayscale(real, np.stack([crop, crop]), 8, next(uid), NumberOfFrames=2),
        reason="multi-frame image (2 frames)",
    )
    shutil.copy(get_testdata_file("test-SR.dcm"), folder / "structured-report.dcm")
    expect["structured-report.dcm"] = "no pixel data: not an image"
    mpeg = pydicom.dcmread(real_dicoms[0])
    mpeg.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    mpeg.SOPInstanceUID = next(uid)
    mpeg.save_as(folder / "mpeg2.dcm")
    expect["mpeg2.dcm"] = "unsupported transfer syntax 'MPEG2 Main Profile / Main Level'"
    (folder / "not-dicom.dcm").write_text("ImageId,EncodedPixels\n")
    expect["not-dicom.dcm"] = "not a readable DICOM file"
    return folder, expect, sources


@pytest.fixture(scope="session")
def tiny_cxr14(tmp_path_factory) -> Path:
    """A prepared CXR-14-like folder (images.npy, index.csv; 60 training, 20 validation and 40
    probe films of 32 px): Effusion films are brighter (any encoder sees it), Pneumothorax is a
    coin toss (no encoder can), No Finding is neither."""
    folder = tmp_path_factory.mktemp("probe") / "cxr14"
    folder.mkdir()
    rng = np.random.default_rng(2)
    n = 120
    effusion, pneumothorax = rng.random(n) < 0.4, rng.random(n) < 0.3
    images = rng.integers(0, 150, (n, 32, 32)) + 100 * effusion[:, None, None]
    np.save(folder / "images.npy", images.astype(np.uint8))
    with open(folder / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "patient_id", "split", "No Finding", "Effusion", "Pneumothorax"])
        for i in range(n):
            finding = effusion[i] or pneumothorax[i]
            split = "train" if i < 60 else "val" if i < 80 else "probe"
            writer.writerow([f"{i}.png", i, split, int(not finding), int(effusion[i]), int(pneumothorax[i])])
    return folder


@pytest.fixture(scope="session")
def tiny_siim_films(tmp_path_factory) -> Path:
    """A prepared SIIM-like folder (images.npy, masks.npy, index.csv; 60 training, 30
    validation and 30 test films of 32 px, a third with a pneumothorax): the films with a mask
    are brighter inside it, so any encoder's features hold the image label."""
    folder = tmp_path_factory.mktemp("siim_probe") / "siim"
    folder.mkdir()
    rng = np.random.default_rng(3)
    n = 120
    positive = np.arange(n) % 3 == 0
    images = rng.integers(0, 150, (n, 32, 32)).astype(np.uint8)
    masks = np.zeros((n, 32, 32), np.uint8)
    masks[positive, 4:16, 4:12] = 1
    images[masks > 0] += 100
    np.save(folder / "images.npy", images)
    np.save(folder / "masks.npy", masks)
    with open(folder / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "patient_id", "split", "mask_pixels"])
        for i in range(n):
            split = "train" if i < 60 else "val" if i < 90 else "test"
            writer.writerow([f"1.2.{i}", i, split, int(masks[i].sum())])
    return folder
