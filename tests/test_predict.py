"""`pneumo predict` on the real SIIM DICOMs and a corpus of every kind of DICOM
(conftest.dicom_corpus) with a tiny model trained here."""

import copy
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import (
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from pneumo.cli import main
from pneumo.core import data, inference, metrics, runtime
from pneumo.core.predict import PAD_VALUE, PredictError, film_area, letterbox, load_model, unletterbox
from pneumo.formats import dicom, prepared, rle
from pneumo.tasks import predict_test, train_unet

PNEUMO = [sys.executable, "-m", "pneumo.cli"]


@pytest.fixture(scope="module")
def model_dir(tiny_siim, unet_run) -> Path:
    """A U-Net trained for one epoch on the real samples at 32 px, with thresholds that make
    about half of the images positive (so both kinds of rows are exercised)."""
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


def test_predict_writes_one_row_per_image_at_original_size(realdata, real_dicoms, model_dir, tmp_path):
    inputs = tmp_path / "inputs"
    shutil.copytree(realdata / "siim" / "dicom-images-train", inputs / "tree")
    (inputs / "tree" / "broken.dcm").write_bytes(b"\x00" * 10)
    out = tmp_path / "submission.csv"
    code = main(
        [
            "predict",
            "--model",
            str(model_dir),
            str(inputs),
            "--out",
            str(out),
            "--overlays",
            str(tmp_path / "overlays"),
            "--batch-size",
            "3",
            "--device",
            "cpu",
        ]
    )
    assert code == 1  # one unreadable file
    table = rle.read_csv(out)
    assert not table.errors
    ids = [p.stem for p in real_dicoms]
    assert sorted(table.rles) == sorted(ids) and all(len(v) == 1 for v in table.rles.values())
    assert out.read_text().splitlines()[0] == "ImageId,EncodedPixels"
    assert [line.split(",")[0] for line in out.read_text().splitlines()[1:]] == sorted(ids)  # SIIM order
    empty = 0
    for _image_id, (text,) in table.rles.items():
        mask = rle.decode(text, 1024, 1024)
        assert mask.shape == (1024, 1024)
        assert (text == "-1") == (not mask.any())
        empty += text == "-1"
    assert 0 < empty < 10  # both empty and positive rows
    errors = (tmp_path / "submission.csv.errors.csv").read_text().splitlines()
    assert errors[0] == "file,error" and len(errors) == 2 and "broken.dcm" in errors[1]
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 10
    page = (tmp_path / "overlays" / "index.html").read_text()
    assert page.count("<img ") == 10 and f"{ids[0]}.png" in page


@pytest.mark.slow  # a fresh process imports torch and smp: seconds before the first line runs
def test_predict_single_file_exit_code_zero(real_dicoms, model_dir, tmp_path):
    proc = subprocess.run(
        [
            *PNEUMO,
            "predict",
            "--model",
            str(model_dir),
            str(real_dicoms[0]),
            "--out",
            str(tmp_path / "s.csv"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 2


def test_help_reads_well():
    for args in ([], ["predict"]):
        proc = subprocess.run([*PNEUMO, *args, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage: pneumo" in proc.stdout
    predict_help = subprocess.run([*PNEUMO, "predict", "--help"], capture_output=True, text=True).stdout
    for word in ("--model", "--out", "--overlays", "--batch-size", "--device", "example:"):
        assert word in predict_help


def _predict(model_dir, out, *inputs, extra=()):
    return main(["predict", "--model", str(model_dir), *map(str, inputs), "--out", str(out), "--device", "cpu", *extra])


def test_predict_over_every_kind_of_dicom(dicom_corpus, real_dicoms, model_dir, tmp_path):
    """A folder mixing every transfer syntax, refused kinds, a file without extension or
    meta header, an upper-case extension and two files with one SOPInstanceUID: exit 1,
    a row for every readable grayscale image, every other file named with its reason."""
    corpus, expect, _ = dicom_corpus
    inputs = tmp_path / "in"
    shutil.copytree(corpus, inputs / "corpus")
    (inputs / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(real_dicoms[0], inputs / "nested" / "deeper" / "FILM.DCM")
    twin = "8bit-1.2.840.10008.1.2.1.dcm"
    shutil.copy(corpus / twin, inputs / "twin.dcm")
    out = tmp_path / "s.csv"
    assert _predict(model_dir, out, inputs, extra=["--pattern", "*", "--batch-size", "4"]) == 1
    rows = out.read_text().splitlines()[1:]
    readable = [n for n, reason in expect.items() if reason is None]
    assert len(rows) == len(readable) + 1  # + FILM.DCM; twin.dcm is a copy of corpus/<twin>
    ids = [r.split(",")[0] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    files = dict(line.split(",", 1) for line in (tmp_path / "s.csv.files.csv").read_text().splitlines()[1:])
    assert sorted(Path(f).name for f in files.values()) == sorted([*readable, "FILM.DCM"])
    assert files[pydicom.dcmread(real_dicoms[0]).SOPInstanceUID].endswith("FILM.DCM")
    errors = {Path(r[0]).name: r[1] for r in csv.reader((tmp_path / "s.csv.errors.csv").open())}
    refused = {n: reason for n, reason in expect.items() if reason is not None}
    assert set(errors) == {"file", *refused}
    for name, reason in refused.items():
        assert reason in errors[name] and "\n" not in errors[name]
    assert _duplicates(out) == [("twin.dcm", str(inputs / "corpus" / twin))]


def _duplicates(out: Path) -> list[tuple[str, str]]:
    """(file name, the file predicted instead) of each row of OUT.duplicates.csv."""
    with open(out.with_name(out.name + ".duplicates.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "ImageId", "same image as"]
    return [(Path(file).name, used) for file, _, used in rows[1:]]


def _errors(out: Path) -> dict[str, str]:
    with open(out.with_name(out.name + ".errors.csv")) as f:
        return {Path(file).name: error for file, error in list(csv.reader(f))[1:]}


def test_predict_broken_copy_beside_the_complete_file(real_dicoms, model_dir, tmp_path):
    """A partial download beside its complete file: the broken copy is refused for its
    truncated pixel data and the complete file keeps its row."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in real_dicoms:
        shutil.copy(f, inputs)
    (inputs / "broken.dcm").write_bytes(real_dicoms[3].read_bytes()[:5000])
    out = tmp_path / "s.csv"
    assert _predict(model_dir, out, inputs) == 1
    assert [line.split(",")[0] for line in out.read_text().splitlines()[1:]] == sorted(p.stem for p in real_dicoms)
    errors = _errors(out)
    assert list(errors) == ["broken.dcm"]
    assert "truncated file: its pixel data is cut off" in errors["broken.dcm"]
    assert "is also that of" not in errors["broken.dcm"]
    assert _duplicates(out) == []


# (file, which image: the corpus film or another, transfer syntax) under one SOPInstanceUID
# -> (exit code, files predicted, duplicates, files refused for holding different images)
ONE_UID = {
    "one image in three lossless syntaxes": (
        [("a.dcm", "film", ExplicitVRLittleEndian), ("b.dcm", "film", RLELossless), ("c.dcm", "film", JPEGLSLossless)],
        (0, ["a.dcm"], ["b.dcm", "c.dcm"], []),
    ),
    "two different images": (
        [("a.dcm", "film", ExplicitVRLittleEndian), ("b.dcm", "other", ExplicitVRLittleEndian)],
        (1, [], [], ["a.dcm", "b.dcm"]),
    ),
    "a lossy copy is another image": (
        [("a.dcm", "film", JPEG2000Lossless), ("b.dcm", "film", JPEG2000)],
        (1, [], [], ["a.dcm", "b.dcm"]),
    ),
    "two copies and a different image": (
        [("a.dcm", "film", ExplicitVRBigEndian), ("b.dcm", "other", RLELossless), ("c.dcm", "film", RLELossless)],
        (1, [], [], ["a.dcm", "b.dcm", "c.dcm"]),
    ),
}


@pytest.mark.parametrize("case", ONE_UID)
def test_predict_files_sharing_one_uid(dicom_corpus, dicom_writer, model_dir, tmp_path, case):
    files, (code, predicted, copies, refused) = ONE_UID[case]
    _, _, sources = dicom_corpus
    film = sources["8bit-1.2.840.10008.1.2.1.dcm"]
    other = copy.deepcopy(film)
    other.PixelData = np.ascontiguousarray(film.pixel_array[::-1]).tobytes()  # the film upside down
    for name, image, syntax in files:
        lossy = {"j2k_cr": [20]} if syntax == JPEG2000 else {}
        dicom_writer(film if image == "film" else other, syntax, tmp_path / "in" / name, **lossy)
    out = tmp_path / "s.csv"
    assert _predict(model_dir, out, tmp_path / "in") == code
    rows = [line.split(",")[0] for line in out.read_text().splitlines()[1:]]
    assert rows == [film.SOPInstanceUID] * len(predicted)
    used = [Path(line.split(",", 1)[1]).name for line in out.with_name("s.csv.files.csv").read_text().splitlines()[1:]]
    assert used == predicted
    assert _duplicates(out) == [(name, str(tmp_path / "in" / "a.dcm")) for name in copies]
    errors = _errors(out)
    assert sorted(errors) == refused
    for name in refused:
        others = [str(tmp_path / "in" / n) for n in refused if n != name]
        assert f"is also that of {', '.join(others)}" in errors[name] and "different images" in errors[name]


@pytest.mark.filterwarnings("ignore:The pixel data is 8320 bytes long")  # MR_small_padded.dcm, on purpose
def test_predict_pydicom_mr_small_in_every_syntax(model_dir, tmp_path):
    """pydicom's test files hold one MR image under one UID in eight encodings (little and big
    endian, implicit, padded, RLE, JPEG-LS, JPEG 2000) and a truncated ninth: one row, seven
    duplicates of MR_small.dcm, MR_truncated.dcm refused for its pixel data."""
    names = [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_padded.dcm",
        "MR_truncated.dcm",
    ]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in names:
        shutil.copy(get_testdata_file(name), inputs)  # shipped inside the pydicom package
    out = tmp_path / "s.csv"
    assert _predict(model_dir, out, inputs) == 1
    assert [line.split(",")[0] for line in out.read_text().splitlines()[1:]] == [
        pydicom.dcmread(inputs / names[0]).SOPInstanceUID
    ]
    assert _duplicates(out) == [(name, str(inputs / "MR_small.dcm")) for name in names[1:-1]]
    errors = _errors(out)
    assert list(errors) == ["MR_truncated.dcm"] and "pixel data is less than expected" in errors["MR_truncated.dcm"]


def test_predict_input_errors_exit_2(model_dir, real_dicoms, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no DICOM here")
    assert _predict(model_dir, tmp_path / "s.csv", empty) == 2
    message = capsys.readouterr().err.strip()
    assert str(empty) in message and "'*.dcm'" in message and "\n" not in message
    assert _predict(model_dir, tmp_path / "s.csv", tmp_path / "nowhere") == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_predict_model_and_device_errors_exit_2(model_dir, real_dicoms, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(model_dir / "model.safetensors", partial)
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    cases = {
        tmp_path / "no-model": "no such model folder",
        partial: "missing postprocess.json",
        broken: "unusable model folder",
    }
    for folder, needle in cases.items():
        assert _predict(folder, tmp_path / "s.csv", real_dicoms[0]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(folder) in err[0] and needle in err[0], err
    cuda_needle = "CUDA device(s)" if torch.cuda.is_available() else "CUDA is unusable here"  # and why
    for device, needle in (("cuda:7", cuda_needle), ("gpu", "not a device")):
        code = main(
            [
                "predict",
                "--model",
                str(model_dir),
                str(real_dicoms[0]),
                "--out",
                str(tmp_path / "s.csv"),
                "--device",
                device,
            ]
        )
        assert code == 2 and needle in capsys.readouterr().err


def test_predict_several_folders_and_a_file(model_dir, real_dicoms, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, files in ((a, real_dicoms[:3]), (b, real_dicoms[3:6])):
        folder.mkdir()
        for f in files:
            shutil.copy(f, folder)
    assert _predict(model_dir, tmp_path / "s.csv", a, b, real_dicoms[9]) == 0
    ids = [line.split(",")[0] for line in (tmp_path / "s.csv").read_text().splitlines()[1:]]
    assert ids == sorted(p.stem for p in [*real_dicoms[:6], real_dicoms[9]])
    assert (tmp_path / "s.csv.errors.csv").read_text().splitlines() == ["file,error"]


def test_predict_finds_dicoms_under_a_symlinked_folder(model_dir, real_dicoms, tmp_path):
    """A folder whose films live on another disk behind a symlink, with a link back up the
    tree (a cycle): every film once, the same rows as the real folder."""
    disk = tmp_path / "disk" / "films"
    disk.mkdir(parents=True)
    for f in real_dicoms[:4]:
        shutil.copy(f, disk)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "films").symlink_to(disk, target_is_directory=True)
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in", target_is_directory=True)
    assert _predict(model_dir, tmp_path / "linked.csv", tmp_path / "in") == 0
    assert _predict(model_dir, tmp_path / "real.csv", disk) == 0
    linked, real = ((tmp_path / f"{n}.csv").read_text() for n in ("linked", "real"))
    assert linked == real and len(linked.splitlines()) == 5


def _evaluation(folder: Path, run: str, val: float, test: float) -> None:
    """evaluate's metrics JSON of one run, reduced to the scores choose_run could look at."""
    folder.mkdir(exist_ok=True)
    (folder / f"{run}.json").write_text(json.dumps({"test": {"siim_dice": test}, "val": {"siim_dice": val}}))


def test_choose_run_picks_the_best_validation_run_never_the_best_test_run(tmp_path):
    for run, val, test in [
        ("none-0", 0.70, 0.99),
        ("none-1", 0.72, 0.60),
        ("labels-0", 0.80, 0.50),
        ("labels-1", 0.79, 0.95),
    ]:
        _evaluation(tmp_path, run, val, test)
    assert predict_test.choose_run(tmp_path, ["none", "labels"], [0, 1]) == "labels-0"
    assert predict_test.choose_run(tmp_path, ["none"], [0, 1]) == "none-1"  # only the runs asked for
    _evaluation(tmp_path, "labels-1", 0.80, 0.95)
    assert predict_test.choose_run(tmp_path, ["none", "labels"], [0, 1]) == "labels-0"  # a tie: the first


@pytest.mark.parametrize(
    "content, needle",
    [(None, "no such file"), ("{not json", "JSONDecodeError"), ('{"test": {"siim_dice": 0.9}}', "KeyError")],
    ids=["missing", "not-json", "no-validation-score"],
)
def test_choose_run_names_a_missing_or_unreadable_evaluation(tmp_path, content, needle):
    _evaluation(tmp_path, "none-0", 0.7, 0.9)
    if content is not None:
        (tmp_path / "labels-0.json").write_text(content)
    with pytest.raises(ValueError) as error:
        predict_test.choose_run(tmp_path, ["none", "labels"], [0])
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'labels-0.json'}: ") and needle in message and "\n" not in message


def test_predict_test_predicts_with_the_chosen_run(model_dir, real_dicoms, tmp_path):
    """What the stage writes: the submission, its overlays and chosen_model.json, from the run
    best on validation; unreadable files refused only when strict, after everything is written."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "labels-0").symlink_to(model_dir, target_is_directory=True)
    evaluations = tmp_path / "evaluate"
    _evaluation(evaluations, "none-0", 0.5, 0.99)
    _evaluation(evaluations, "labels-0", 0.6, 0.1)
    inputs = tmp_path / "test"
    inputs.mkdir()
    for f in real_dicoms[:3]:
        shutil.copy(f, inputs)
    job = dict(evaluations=evaluations, models=models, variants=["none", "labels"], runs=[0], input_dir=inputs)
    job.update(batch_size=2, device="cpu")
    out = tmp_path / "out"
    assert predict_test.predict_test(**job, out_dir=out, strict=True) == {
        "model": str(models / "labels-0"),
        "images": 3,
        "errors": 0,
    }
    assert (out / "chosen_model.json").read_text() == json.dumps(
        {"model": str(models / "labels-0"), "images": 3}
    ) + "\n"
    assert len((out / "submission.csv").read_text().splitlines()) == 4
    assert len(list((out / "overlays").glob("*.png"))) == 3 and (out / "overlays" / "index.html").is_file()

    (inputs / "broken.dcm").write_bytes(b"\x00" * 10)
    assert predict_test.predict_test(**job, out_dir=tmp_path / "lenient", strict=False)["errors"] == 1
    strict = tmp_path / "strict"
    with pytest.raises(ValueError) as error:
        predict_test.predict_test(**job, out_dir=strict, strict=True)
    assert str(error.value) == (
        f"1 unreadable test file(s) (data.strict=true); see {strict / 'submission.csv.errors.csv'}"
    )
    assert json.loads((strict / "chosen_model.json").read_text())["images"] == 3

    _evaluation(evaluations, "none-0", 0.9, 0.1)  # the best run has no model folder
    with pytest.raises(PredictError, match=r"^predict_test: .*none-0: no such model folder"):
        predict_test.predict_test(**job, out_dir=tmp_path / "none", strict=True)


# Letterboxing: films of any shape keep their proportions on the model's square grid, and the
# mask comes back in the film's own rows x columns.


def _write_film(path: Path, pixels: np.ndarray, uid: str) -> None:
    dicom.write_jpeg_dicom(
        path,
        pixels,
        study_uid=f"{uid}.1",
        series_uid=f"{uid}.2",
        sop_uid=uid,
        patient_id="letterbox",
        view_position="PA",
        pixel_spacing_mm=0.5,
    )


@pytest.mark.parametrize("shape", [(300, 200), (200, 300)], ids=["portrait", "landscape"])
def test_predict_keeps_a_non_square_film_in_its_own_grid(real_dicoms, model_dir, tmp_path, shape):
    """A 300 x 200 film (and 200 x 300) of a real chest: with the tuned thresholds its mask
    decodes at the film's rows x columns and its overlay has the film's shape. Thresholds that
    call every pixel positive, with min_area the model pixels that hold the film, give exactly
    the whole film (nothing lost to, or shifted by, the padding); one pixel more gives nothing:
    the padding counts nothing towards min_area, which counts model pixels."""
    rows, cols = shape
    chest = prepared.resize(dicom.read_image(real_dicoms[0]), 300)
    top, left = (300 - rows) // 2, (300 - cols) // 2
    film = np.ascontiguousarray(chest[top : top + rows, left : left + cols])
    uid = "1.2.826.0.1.3680043.10.1234.98.1"
    _write_film(tmp_path / "in" / "film.dcm", film, uid)
    size = int(load_model(model_dir, torch.device("cpu"))[1]["image_size"])
    inside = int(film_area(shape, size).sum())
    masks = {}
    for name, min_area in (("tuned", None), ("film", inside), ("beyond", inside + 1)):
        model = model_dir
        if min_area is not None:
            model = tmp_path / name
            shutil.copytree(model_dir, model)
            (model / "postprocess.json").write_text(json.dumps({"top": 0.0, "min_area": min_area, "bottom": 0.0}))
        out = tmp_path / f"{name}.csv"
        assert _predict(model, out, tmp_path / "in", extra=["--overlays", str(tmp_path / f"{name}-overlays")]) == 0
        table = rle.read_csv(out)
        assert list(table.rles) == [uid]
        (text,) = table.rles[uid]
        masks[name] = rle.decode(text, rows, cols)
        assert masks[name].shape == shape
        picture = cv2.imread(str(tmp_path / f"{name}-overlays" / f"{uid}.png"))
        assert picture.shape == (rows, cols, 3)  # under OVERLAY_SIZE: the film's own size
    assert masks["film"].all() and not masks["beyond"].any()


# (film shape, model size) -> the model rows and columns that hold any of the film
FILM_AREA = {
    "square": ((256, 256), 32, (0, 32), (0, 32)),
    "portrait": ((300, 200), 32, (0, 32), (5, 27)),  # film columns 50-249: model 5.33-26.67
    "landscape": ((200, 300), 32, (5, 27), (0, 32)),
    "odd padding": ((301, 200), 32, (0, 32), (5, 27)),  # 50 before, 51 after: model 5.32-26.58
    "aligned": ((300, 180), 100, (0, 100), (20, 80)),  # scale 3, padding 60 = 20 model pixels
    "thin": ((1024, 256), 32, (0, 32), (12, 20)),
    "upsized": ((20, 10), 32, (0, 32), (8, 24)),
}


@pytest.mark.parametrize("case", FILM_AREA)
def test_film_area_marks_the_model_pixels_that_hold_the_film(case):
    shape, size, (top, bottom), (left, right) = FILM_AREA[case]
    expected = np.zeros((size, size), bool)
    expected[top:bottom, left:right] = True
    assert np.array_equal(film_area(shape, size), expected)


# film shape -> the letterboxed square's columns (or rows) at the model size = the longer side
PADDING = {
    "even": ((6, 4), [0, 1, 1, 1, 1, 0]),
    "odd: the extra pixel after": ((6, 3), [0, 1, 1, 1, 0, 0]),
    "landscape": ((3, 6), [0, 1, 1, 1, 0, 0]),
    "square": ((6, 6), [1, 1, 1, 1, 1, 1]),
}


@pytest.mark.parametrize("case", PADDING)
def test_letterbox_pads_the_shorter_side_symmetrically_with_black(case):
    shape, line = PADDING[case]
    grid = letterbox(np.full(shape, 200, np.uint8), 6)
    across = grid if shape[0] >= shape[1] else grid.T  # the padded axis along each row
    assert PAD_VALUE == 0 and np.array_equal(across, np.tile(np.where(line, 200, 0), (6, 1)))


# film shape -> rectangles (rows, columns, end excluded) on 3 x 3 blocks: inside, against the
# padding, against a padded side's far edge
ALIGNED = {
    "portrait": ((300, 180), [(30, 90, 60, 120), (150, 270, 0, 36), (210, 240, 171, 180)]),
    "landscape": ((180, 300), [(60, 120, 30, 90), (0, 36, 150, 270), (171, 180, 210, 240)]),
}


@pytest.mark.parametrize("case", ALIGNED)
def test_letterbox_round_trip_is_exact_along_edges(case):
    """Rectangles on a film that the model grid shrinks by exactly 3, padded by whole model
    pixels (60 = 20): letterboxed, the film sits centred between black bars at its block means;
    mapped back (bilinear, >= 0.5) every edge is where it was, those against the padding too.
    Only each rectangle's 4 corner pixels drop: bilinear weights there are (2/3)^2 = 4/9 < 1/2,
    the rounding `predict` has always given square films' corners."""
    shape, rects = ALIGNED[case]
    mask = np.zeros(shape, np.uint8)
    corners = set()
    for r0, r1, c0, c1 in rects:
        mask[r0:r1, c0:c1] = 1
        corners |= {(r0, c0), (r0, c1 - 1), (r1 - 1, c0), (r1 - 1, c1 - 1)}
    grid = letterbox(mask * 255, 100)
    inside = film_area(shape, 100)
    assert grid.shape == (100, 100) and (grid[~inside] == PAD_VALUE).all()
    assert np.array_equal(grid[inside].reshape(shape[0] // 3, shape[1] // 3), mask[::3, ::3] * 255)
    back = unletterbox(grid.astype(np.float32) / 255, shape) >= 0.5
    assert {tuple(map(int, rc)) for rc in np.argwhere(back != mask.astype(bool))} == corners


@pytest.mark.parametrize(
    "shape, size", [((301, 200), 32), ((200, 301), 32), ((301, 200), 64), ((1024, 256), 32), ((300, 200), 512)]
)
def test_letterbox_round_trip_of_any_mask_within_one_model_pixel(shape, size):
    """A tilted ellipse off centre, any shape and size, odd padding: back in the film's grid,
    every pixel that changed lies within one model pixel (side / size film pixels) of the
    mask's edge, since the model grid holds nothing finer, and the centroid moves by under half
    a film pixel: no shift, e.g. from padding split unevenly or cut on the model grid."""
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (shape[1] // 2 - 5, shape[0] // 2 + 7), (shape[1] // 3, shape[0] // 3), 20, 0, 360, 1, -1)
    back = (unletterbox(letterbox(mask * 255, size).astype(np.float32) / 255, shape) >= 0.5).astype(np.uint8)
    one = -(-max(shape) // size)
    kernel = np.ones((2 * one + 1, 2 * one + 1), np.uint8)
    assert (back <= cv2.dilate(mask, kernel)).all() and (back >= cv2.erode(mask, kernel)).all()
    shift = np.array(np.nonzero(back)).mean(1) - np.array(np.nonzero(mask)).mean(1)
    assert np.abs(shift).max() < 0.5


@pytest.mark.parametrize("n, size", [(1024, 32), (256, 32), (64, 64), (20, 32)])
def test_square_films_are_not_letterboxed(n, size):
    """A square film is padded by nothing: the model sees `prepared.resize` of it and the mask
    comes back by the bilinear resize `predict` used before letterboxing, to the byte."""
    film = np.random.default_rng(n).integers(0, 256, (n, n), dtype=np.uint8)
    assert np.array_equal(letterbox(film, size), prepared.resize(film, size))
    grid = np.random.default_rng(size).random((size, size)).astype(np.float32)
    assert unletterbox(grid, (n, n)).tobytes() == cv2.resize(grid, (n, n), interpolation=cv2.INTER_LINEAR).tobytes()
    assert film_area((n, n), size).all()


def test_square_films_predict_as_before_letterboxing(dicom_corpus, real_dicoms, model_dir, tmp_path):
    """The rows of square films (the real 1024 px films, the corpus's 256 px crops) are those of
    the engine before letterboxing: resize, model, post-processing on the model grid, bilinear
    resize of the mask to the film. The predict_test stage's output depends on it."""
    corpus, _, _ = dicom_corpus
    files = [*real_dicoms[:4], corpus / "8bit-1.2.840.10008.1.2.1.dcm", corpus / "monochrome1-window.dcm"]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    out = tmp_path / "s.csv"
    # one film a batch, as computed below: a batch's other films cannot move a float bit
    assert _predict(model_dir, out, *[tmp_path / f.name for f in files], extra=["--batch-size", "1"]) == 0
    model, meta, post = load_model(model_dir, torch.device("cpu"))
    size = int(meta["image_size"])
    expected = {}
    for f in files:
        film = dicom.read_dicom(f)
        with torch.no_grad():
            small = torch.from_numpy(prepared.resize(film.pixels, size)[None])
            probs = torch.sigmoid(model(data.to_input(small))).float().numpy()[:, 0]
        (mask,) = metrics.postprocess(probs, post["top"], post["min_area"], post["bottom"])
        h, w = film.pixels.shape
        full = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
        expected[film.image_id] = rle.encode(full)
    rows = dict(line.split(",") for line in out.read_text().splitlines()[1:])
    assert rows == expected and any(v != "-1" for v in rows.values())
