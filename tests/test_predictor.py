"""core/predictor.py, `pneumo.load_model(path)`: a model folder as a Python object whose
`predict` takes a film (a 2-D array or a DICOM file) and gives its mask and probability map at
the film's geometry, the same mask `pneumo predict` writes; a model trained on the phantoms
warns once on real films."""

import logging
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from tiny_model import train_tiny_model

import pneumo
from pneumo.cli import main
from pneumo.core import model_card, predictor
from pneumo.core.predict import PredictError
from pneumo.formats import dicom, rle
from pneumo.tasks import evaluate

WARNING = "was trained on synthetic phantoms"


def out_args(csv) -> list[str]:
    return ["--out", str(csv), "--device", "cpu"]


@pytest.fixture(scope="module")
def model_dir(tiny_siim, unet_run):
    """A U-Net trained for one epoch on the real samples at 32 px (tests/tiny_model.py)."""
    return train_tiny_model(tiny_siim, unet_run)


@pytest.fixture(scope="module")
def model(model_dir):
    return pneumo.load_model(model_dir, device="cpu")


def with_card(model_dir, tmp_path, synthetic: bool):
    """A copy of the model folder with the MODEL_CARD.md `evaluate` writes for a model trained on
    the phantoms (`synthetic`) or on SIIM's films."""
    folder = tmp_path / ("phantoms" if synthetic else "siim")
    shutil.copytree(model_dir, folder)
    meta = {"variant": "test", "encoder": "resnet34", "in_channels": 1, "best_epoch": 0}
    scores = {"siim_dice": 0.5, "dice_positive": 0.1, "dice_pooled": 0.2, "iou": 0.5, "auc": 0.5}
    result = {
        "test": {**scores, "images": 2, "positive_images": 1},
        "val": {"siim_dice": 0.5},
        "postprocess": {"top": 0.5, "min_area": 1, "bottom": 0.5, "image_size": 32},
        "all_empty": scores,
        "val_all_empty": 0.5,
    }
    rows = [{"split": s, "image_id": f"{dicom.SYNTHETIC_UID_ROOT}.{i}"} for i, s in enumerate(["train", "val", "test"])]
    card = evaluate.card_text(meta, result, rows, {"images": 10, "excluded_leakage": 0}, synthetic)
    (folder / model_card.FILE).write_text(card)
    return folder


def test_import_pneumo_stays_light():
    """`import pneumo` and reaching `pneumo.load_model` import no torch (it loads when a model does)."""
    code = "import sys, pneumo; pneumo.load_model; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pneumo.load_model is predictor.load_model and "load_model" in pneumo.__all__
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pneumo.nothing  # noqa: B018


def test_predict_a_dicom_and_its_pixels_alike(model, real_dicoms):
    for path in real_dicoms[:3]:
        from_file = model.predict(path)
        from_array = model.predict(dicom.read_image(path))
        assert from_file.image_id == pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert from_array.image_id is None
        assert from_file.mask.shape == from_file.probabilities.shape == (1024, 1024)
        assert from_file.mask.dtype == bool and from_file.probabilities.dtype == np.float32
        assert 0 <= from_file.probabilities.min() and from_file.probabilities.max() <= 1
        assert np.array_equal(from_file.mask, from_array.mask)
        assert np.array_equal(from_file.probabilities, from_array.probabilities)
    assert model.predict(str(path)).image_id == from_file.image_id  # a path as a str


def test_predict_any_film_shape_and_dtype(model, real_dicoms):
    """A film that is not square comes back at its own geometry; a 12-bit array is scaled over its
    own range, as the DICOM reader scales a film without a window."""
    pixels = dicom.read_image(real_dicoms[1])[100:700, 50:950].copy()
    pixels[0, :2] = 0, 255  # the full 8-bit range: scaling a 12-bit or float copy gives these pixels back
    result = model.predict(pixels)
    assert result.mask.shape == result.probabilities.shape == (600, 900)
    twelve = pixels.astype(np.uint16) * 16 + 7
    assert np.array_equal(model.predict(twelve).mask, result.mask)
    assert np.array_equal(model.predict(pixels.astype(np.float32) / 255).mask, result.mask)


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.zeros((4, 4, 3), np.uint8), r"2-D grayscale film .* shape \(4, 4, 3\)"),
        (np.zeros((0, 4), np.uint8), r"shape \(0, 4\)"),
        (np.zeros((8193, 2), np.uint8), r"1 to 8192 pixels a side"),
        (np.zeros((4, 4), bool), "integer or float pixel values, got bool"),
        (np.full((4, 4), np.nan), "not finite"),
    ],
)
def test_predict_refuses_what_is_no_film(model, image, reason):
    with pytest.raises(ValueError, match=reason):
        model.predict(image)


def test_predict_a_file_that_is_no_dicom(model, tmp_path):
    (tmp_path / "x.dcm").write_text("ImageId,EncodedPixels\n")
    with pytest.raises(dicom.DicomError, match="not a readable DICOM file"):
        model.predict(tmp_path / "x.dcm")


def test_load_model_says_what_is_missing(tmp_path, model_dir):
    with pytest.raises(PredictError, match="no such model folder"):
        pneumo.load_model(tmp_path / "nowhere", device="cpu")
    shutil.copytree(model_dir, tmp_path / "half")
    (tmp_path / "half" / "postprocess.json").unlink()
    with pytest.raises(PredictError, match="missing postprocess.json"):
        pneumo.load_model(tmp_path / "half", device="cpu")
    with pytest.raises(PredictError, match="--device gpu"):
        pneumo.load_model(model_dir, device="gpu")


def test_a_phantom_model_warns_once_on_real_films(model_dir, real_dicoms, tmp_path, caplog):
    """Warned once, at the first real film, and every film still predicted; a phantom's film
    raises no warning, nor does a model trained on SIIM's films."""
    phantoms = pneumo.load_model(with_card(model_dir, tmp_path, synthetic=True), device="cpu")
    siim = pneumo.load_model(with_card(model_dir, tmp_path, synthetic=False), device="cpu")
    assert phantoms.trained_on_phantoms and not siim.trained_on_phantoms
    assert phantoms.algorithm.parameters["training_data"] == "synthetic phantoms"
    phantom_film = tmp_path / "phantom.dcm"
    dicom.write_jpeg_dicom(
        phantom_film,
        dicom.read_image(real_dicoms[0]),
        study_uid=f"{dicom.SYNTHETIC_UID_ROOT}.1",
        series_uid=f"{dicom.SYNTHETIC_UID_ROOT}.2",
        sop_uid=f"{dicom.SYNTHETIC_UID_ROOT}.3",
        patient_id="synthetic-00000001",
        view_position="PA",
        pixel_spacing_mm=0.14,
    )
    with caplog.at_level(logging.WARNING, logger="pneumo"):
        phantoms.predict(phantom_film)
        phantoms.predict(dicom.read_image(real_dicoms[0]))  # an array says nothing about its source
        assert not caplog.records
        for path in real_dicoms[:3]:
            assert phantoms.predict(path).mask.shape == (1024, 1024)
            siim.predict(path)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and WARNING in warnings[0] and real_dicoms[0].stem in warnings[0]


def test_the_cli_warns_once_too(model_dir, realdata, tmp_path, caplog):
    folder = with_card(model_dir, tmp_path, synthetic=True)
    out = tmp_path / "s.csv"
    with caplog.at_level(logging.WARNING, logger="pneumo"):
        code = main(["predict", "--model", str(folder), str(realdata / "siim" / "dicom-images-train"), *out_args(out)])
    assert code == 0 and len(out.read_text().splitlines()) == 11  # refuses nothing
    assert sum(WARNING in r.getMessage() for r in caplog.records) == 1


def test_the_api_gives_the_cli_mask(model, model_dir, real_dicoms, realdata, tmp_path):
    """The CSV's RLE of every real film is the API's mask of the same file, pixel for pixel."""
    out = tmp_path / "s.csv"
    films = realdata / "siim" / "dicom-images-train"
    assert main(["predict", "--model", str(model_dir), str(films), *out_args(out), "--batch-size", "4"]) == 0
    table = rle.read_csv(out)
    assert len(table.rles) == len(real_dicoms)
    positive = 0
    for path in real_dicoms:
        result = model.predict(path)
        (text,) = table.rles[result.image_id]
        assert np.array_equal(rle.decode(text, *result.mask.shape), result.mask), path.name
        positive += bool(result.mask.any())
    assert 0 < positive < len(real_dicoms)


def test_algorithm_identifies_weights_and_thresholds(model_dir, tmp_path):
    """A SEG's algorithm version changes with the weights or the post-processing, not otherwise."""
    first = pneumo.load_model(model_dir, device="cpu").algorithm
    assert first.name == "pneumo U-Net, encoder initialisation test"
    assert first.version.startswith(f"{pneumo.__version__}+") and len(first.version) <= 64
    assert pneumo.load_model(model_dir, device="cpu").algorithm == first
    shutil.copytree(model_dir, tmp_path / "other")
    post = tmp_path / "other" / "postprocess.json"
    post.write_text(post.read_text().replace('"min_area": 1', '"min_area": 2'))
    other = pneumo.load_model(tmp_path / "other", device="cpu").algorithm
    assert other.version != first.version and other.parameters["min_area"] == "2"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.array([[0, 7], [200, 255]], np.uint8), [[0, 7], [200, 255]]),  # 8-bit as it is
        (np.array([[100, 300], [500, 4195]], np.uint16), [[0, 12], [25, 255]]),  # over its own range
        (np.array([[-1.0, 0.0], [0.5, 1.0]]), [[0, 128], [191, 255]]),  # rounded to the nearest level
        (np.array([[-5, -5], [-5, -5]], np.int16), [[0, 0], [0, 0]]),  # a constant film is 0
        (np.array([[3, 5]], np.int64), [[0, 255]]),  # one row
    ],
)
def test_as_display_scales_any_numbers_over_their_own_range(image, expected):
    shown = predictor.as_display(image)
    assert shown.dtype == np.uint8 and shown.tolist() == expected
