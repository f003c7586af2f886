"""`pneumo predict` on the real SIIM DICOMs and a corpus of every kind of DICOM
(conftest.dicom_corpus) with a tiny model trained here."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from pneumo.cli import main
from pneumo.core import inference, runtime
from pneumo.formats import prepared, rle
from pneumo.tasks import train_unet

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
    readable = [n for n, reason in expect.items() if reason is None and n != twin]
    assert len(rows) == len(readable) + 1  # + FILM.DCM
    ids = [r.split(",")[0] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    files = dict(line.split(",", 1) for line in (tmp_path / "s.csv.files.csv").read_text().splitlines()[1:])
    assert sorted(Path(f).name for f in files.values()) == sorted([*readable, "FILM.DCM"])
    assert files[pydicom.dcmread(real_dicoms[0]).SOPInstanceUID].endswith("FILM.DCM")
    errors = {Path(r[0]).name: r[1] for r in csv.reader((tmp_path / "s.csv.errors.csv").open())}
    refused = {n: reason for n, reason in expect.items() if reason is not None}
    assert set(errors) == {"file", *refused, twin, "twin.dcm"}
    for name, reason in refused.items():
        assert reason in errors[name] and "\n" not in errors[name]
    assert "is also that of" in errors[twin] and "is also that of" in errors["twin.dcm"]


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
    for device, needle in (("cuda:7", "CUDA device(s)"), ("gpu", "not a device")):
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
