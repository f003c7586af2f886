"""`pneumo predict` on the real SIIM DICOMs with a tiny model trained here."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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
