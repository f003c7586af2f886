"""`pneumo predict` on the real SIIM DICOMs and a corpus of every kind of DICOM
(conftest.dicom_corpus) with a tiny model trained here, and its `--masks` files (DICOM SEG,
NIfTI, PNG), which must hold exactly the pixels of its CSV's RLE."""

import copy
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import nibabel
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
from seg_checks import check_seg, find_dciodvfy
from tiny_model import train_tiny_model

from pneumo.cli import MASK_FORMATS, main
from pneumo.core import data, metrics
from pneumo.core import predict as engine
from pneumo.core.predict import PAD_VALUE, PredictError, film_area, letterbox, load_model, unletterbox
from pneumo.formats import dicom, masks, prepared, rle
from pneumo.tasks import predict_test

PNEUMO = [sys.executable, "-m", "pneumo.cli"]


@pytest.fixture(scope="module")
def model_dir(tiny_siim, unet_run) -> Path:
    """A U-Net trained for one epoch on the real samples at 32 px (tests/tiny_model.py)."""
    return train_tiny_model(tiny_siim, unet_run)


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
    env = {**os.environ, "COLUMNS": "80"}
    predict_help = subprocess.run([*PNEUMO, "predict", "--help"], capture_output=True, text=True, env=env).stdout
    for word in ("--model", "--out", "--overlays", "--batch-size", "--device {auto,cpu,cuda,cuda:N}", "--debug"):
        assert word in predict_help
    lines = predict_help.splitlines()
    # the epilog keeps its lines: the exit-code table, then the example, each on lines of their own
    for start in (
        "exit codes:",
        "  0  every input file",
        "  1  some files",
        "  2  nothing predicted",
        "  3  an unexpected",
    ):
        assert any(line.startswith(start) for line in lines), start
    assert "  pneumo predict --model models/unet/100/labels-0 data/siim/dicom-images-test \\" in lines
    assert max(map(len, lines)) <= 80 and "labels-\n" not in predict_help  # nothing split at a hyphen
    score_help = subprocess.run([*PNEUMO, "score", "--help"], capture_output=True, text=True, env=env).stdout
    assert "  pneumo score submission.csv data/siim/train-rle.csv --json" in score_help.splitlines()
    assert "train-\n" not in score_help and "  3  an unexpected error" in score_help


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
        (2, [], [], ["a.dcm", "b.dcm"]),
    ),
    "a lossy copy is another image": (
        [("a.dcm", "film", JPEG2000Lossless), ("b.dcm", "film", JPEG2000)],
        (2, [], [], ["a.dcm", "b.dcm"]),
    ),
    "two copies and a different image": (
        [("a.dcm", "film", ExplicitVRBigEndian), ("b.dcm", "other", RLELossless), ("c.dcm", "film", RLELossless)],
        (2, [], [], ["a.dcm", "b.dcm", "c.dcm"]),
    ),
}


@pytest.mark.parametrize("case", ONE_UID)
def test_predict_files_sharing_one_uid(dicom_corpus, dicom_writer, model_dir, tmp_path, caplog, case):
    """When every file is refused nothing is predicted: exit 2, nothing written, each refusal on
    stderr (here: the log records)."""
    files, (code, predicted, copies, refused) = ONE_UID[case]
    _, _, sources = dicom_corpus
    film = sources["8bit-1.2.840.10008.1.2.1.dcm"]
    other = copy.deepcopy(film)
    other.PixelData = np.ascontiguousarray(film.pixel_array[::-1]).tobytes()  # the film upside down
    for name, image, syntax in files:
        lossy = {"j2k_cr": [20]} if syntax == JPEG2000 else {}
        dicom_writer(film if image == "film" else other, syntax, tmp_path / "in" / name, **lossy)
    out = tmp_path / "out" / "s.csv"
    assert _predict(model_dir, out, tmp_path / "in") == code
    if code == 2:
        assert not out.parent.exists()
        errors = {}
        for record in caplog.records:
            if record.getMessage().startswith("error: "):
                file, reason = record.getMessage()[len("error: ") :].split(": ", 1)
                errors[Path(file).name] = reason
    else:
        rows = [line.split(",")[0] for line in out.read_text().splitlines()[1:]]
        assert rows == [film.SOPInstanceUID] * len(predicted)
        files_csv = out.with_name("s.csv.files.csv").read_text().splitlines()[1:]
        assert [Path(line.split(",", 1)[1]).name for line in files_csv] == predicted
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


def test_a_folder_without_any_dicom_exits_2_and_writes_nothing(model_dir, tmp_path, capsys, caplog):
    """Files that match the pattern but are no DICOM: each refused by name, in pneumo's own words
    (no pydicom hint about a force=True that no flag offers), exit 2, not one file written."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.dcm").write_text("ImageId,EncodedPixels\n")
    (folder / "empty.dcm").write_bytes(b"")
    before = sorted(tmp_path.rglob("*"))
    assert _predict(model_dir, tmp_path / "out" / "s.csv", folder, extra=["--overlays", str(tmp_path / "o")]) == 2
    assert sorted(tmp_path.rglob("*")) == before
    err = capsys.readouterr().err
    assert "nothing predicted: all 2 input file(s) refused" in err and "nothing written" in err
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 2 and all("not a readable DICOM file" in r for r in refusals)
    assert not any("force" in r for r in [*refusals, err])


def test_every_argument_problem_is_named_at_once_before_torch_is_imported(tmp_path):
    """A missing folder and a missing model: both named, exit 2, in a fresh process that never
    imports torch (which takes seconds), so the answer comes at once."""
    code = (
        "import sys, time; start = time.perf_counter(); from pneumo.cli import main; "
        f"code = main(['predict', {str(tmp_path / 'nowhere')!r}, '--model', {str(tmp_path / 'x')!r}, "
        f"'--out', {str(tmp_path / 'p.csv')!r}]); "
        "print(code, 'torch' in sys.modules, round(time.perf_counter() - start, 2))"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - start
    exit_code, torch_imported, seconds = proc.stdout.split()
    assert (exit_code, torch_imported) == ("2", "False"), proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [
        f"pneumo predict: error: {tmp_path / 'nowhere'}: no such file or folder",
        f"pneumo predict: error: {tmp_path / 'x'}: no such model folder (expected e.g. models/unet/100/labels-0)",
    ]
    assert not list(tmp_path.glob("p.csv*"))
    print(f"missing folder and model: exit 2 in {seconds} s in-process, {wall:.2f} s with the interpreter")


def test_output_paths_that_cannot_be_written_are_named_before_any_work(model_dir, real_dicoms, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "folder.csv").mkdir()
    code = _predict(
        model_dir, tmp_path / "folder.csv", real_dicoms[0], extra=["--overlays", str(tmp_path / "a-file" / "o")]
    )
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "is a folder" in err[0] and f"{tmp_path / 'a-file'} is a file, not a folder" in err[1]


@pytest.mark.parametrize("argument, value", [("--device", "gpu"), ("--device", "cuda:x"), ("--batch-size", "0")])
def test_bad_argument_values_are_refused_by_argparse(model_dir, real_dicoms, tmp_path, capsys, argument, value):
    argv = ["predict", str(real_dicoms[0]), "--model", str(model_dir), "--out", str(tmp_path / "s.csv")]
    assert main([*argv, argument, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {argument}" in err and repr(value) in err and not (tmp_path / "s.csv").exists()


def test_an_unexpected_error_is_one_line_and_exit_code_3(model_dir, real_dicoms, tmp_path, capsys, monkeypatch):
    """The CLI's last guard: a bug ends in one line naming the error and exit 3; the traceback
    only with --debug."""

    def broken(**_):
        raise RuntimeError("something nobody foresaw\non two lines")

    monkeypatch.setattr(engine, "predict", broken)
    argv = ["predict", str(real_dicoms[0]), "--model", str(model_dir), "--out", str(tmp_path / "s.csv")]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("pneumo predict: unexpected error: RuntimeError: something nobody foresaw on two lines")
    assert "--debug" in err
    assert main([*argv, "--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.splitlines()[-1].startswith("pneumo predict: unexpected")


def test_one_file_that_breaks_an_unguarded_step_costs_only_itself(model_dir, real_dicoms, tmp_path, monkeypatch):
    """Whatever a step raises for one file (here: reading raises a bare RuntimeError, and for
    another file encoding its row does), that file is refused by name with the error, leaves no
    row and no overlay, and every other file is predicted."""
    inputs = sorted(real_dicoms[:4], key=lambda p: p.stem)  # rows come in ImageId order
    broken_read, broken_row = inputs[0], inputs[1]
    read, encode = dicom.read_dicom, rle.encode

    def read_dicom(path):
        if Path(path) == broken_read:
            raise RuntimeError("a reader bug")
        return read(path)

    calls = iter(range(100))

    def encode_row(mask):
        if next(calls) == 0:  # the first row encoded: broken_row's, since broken_read has none
            raise MemoryError("no memory for this one")
        return encode(mask)

    monkeypatch.setattr(dicom, "read_dicom", read_dicom)
    monkeypatch.setattr(rle, "encode", encode_row)
    out, overlays = tmp_path / "s.csv", tmp_path / "o"
    assert _predict(model_dir, out, *inputs, extra=["--overlays", str(overlays)]) == 1
    errors = _errors(out)
    assert sorted(errors) == sorted([broken_read.name, broken_row.name])
    assert "unexpected RuntimeError: a reader bug" in errors[broken_read.name]
    assert "unexpected MemoryError: no memory for this one" in errors[broken_row.name]
    rows = [line.split(",")[0] for line in out.read_text().splitlines()[1:]]
    assert sorted(rows) == sorted(p.stem for p in inputs if p not in (broken_read, broken_row))
    assert sorted(p.stem for p in overlays.glob("*.png")) == sorted(rows)


@pytest.mark.parametrize(
    "value, cell",
    [
        ("1.2.3", "1.2.3"),
        ("-1", "-1"),  # SIIM's empty mask: a number, not a formula
        ("1 2 3 4", "1 2 3 4"),
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("=x.dcm: not a readable DICOM file", "'=x.dcm: not a readable DICOM file"),
    ],
)
def test_csv_cells_never_start_a_formula(value, cell):
    assert engine.csv_cell(value) == cell


@pytest.mark.parametrize("name", ["../x.png", "a/../../x.png", "sub/x.png", "/tmp/x.png", "..", ".", ""])
def test_an_output_name_that_leaves_its_folder_is_refused(tmp_path, name):
    with pytest.raises(engine.OutputPathError, match="outside"):
        engine.confined(tmp_path / "overlays", name)


def test_a_symlink_planted_in_the_output_folder_is_refused(tmp_path):
    folder = tmp_path / "overlays"
    folder.mkdir()
    (folder / "1.2.3.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(engine.OutputPathError):
        engine.confined(folder, "1.2.3.png")
    assert engine.confined(folder, "1.2.4.png") == (folder / "1.2.4.png").resolve()


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
    for device, needle in (("cuda:7", cuda_needle), ("gpu", "'gpu' is not a device")):
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

    only_broken = tmp_path / "only-broken"
    only_broken.mkdir()
    (only_broken / "broken.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(PredictError, match=r"^predict_test: nothing predicted: all 1 test file\(s\) refused"):
        predict_test.predict_test(**{**job, "input_dir": only_broken}, out_dir=tmp_path / "nothing", strict=False)
    assert not (tmp_path / "nothing").exists()

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


# `pneumo predict --masks`: files other tools read (formats/masks.py, formats/seg.py), each holding
# exactly the pixels of the CSV's RLE


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """dicom3tools' IOD checker; skipped where absent, except in CI."""
    return find_dciodvfy()


def predict(model_dir: Path, films: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--model", str(model_dir), str(films), "--out", str(out), "--device", "cpu", *extra])


def test_predict_masks_hold_the_csv_rle(model_dir, realdata, dciodvfy, tmp_path):
    """All three kinds and the probability maps on the real films: exit 0, one file of each per
    film, each mask exactly the film's RLE in the CSV (positive and empty films alike); each SEG
    valid, referencing its film; each probability map at the film's geometry."""
    films = realdata / "siim" / "dicom-images-train"
    out, folder = tmp_path / "s.csv", tmp_path / "masks"
    code = predict(model_dir, films, out, "--masks", "png,nifti", "--masks", "dicom-seg", "--masks-dir", str(folder),
                   "--probabilities", "--batch-size", "4")  # fmt: skip
    assert code == 0
    table = rle.read_csv(out)
    headers = {h.SOPInstanceUID: h for h in (dicom.read_dataset(p, header_only=True) for p in films.rglob("*.dcm"))}
    assert sorted(table.rles) == sorted(headers)
    suffixes = (".png", ".nii.gz", ".seg.dcm", ".probability.png")
    assert sorted(p.name for p in folder.iterdir()) == sorted(i + s for i in headers for s in suffixes)
    empty = 0
    for image_id, (text,) in table.rles.items():
        header = headers[image_id]
        mask = rle.decode(text, header.Rows, header.Columns)
        empty += not mask.any()
        png = cv2.imread(str(folder / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and np.array_equal(png, mask.astype(np.uint8) * 255)
        nifti = np.asarray(nibabel.load(folder / f"{image_id}.nii.gz").dataobj)
        assert nifti.shape == (header.Columns, header.Rows, 1) and np.array_equal(nifti[:, :, 0].T, mask)
        check_seg((folder / f"{image_id}.seg.dcm").read_bytes(), header, mask, tmp_path / "check.dcm", dciodvfy)
        probabilities = cv2.imread(str(folder / f"{image_id}.probability.png"), cv2.IMREAD_UNCHANGED)
        assert probabilities.shape == mask.shape and probabilities.dtype == np.uint8
    assert 0 < empty < len(headers)


@pytest.mark.parametrize("kind", sorted(masks.FORMATS))
def test_predict_each_mask_kind_alone(model_dir, real_dicoms, tmp_path, kind):
    """Each kind on its own, into the default folder: `masks` beside the CSV."""
    assert predict(model_dir, real_dicoms[0], tmp_path / "s.csv", "--masks", kind) == 0
    (image_id,) = rle.read_csv(tmp_path / "s.csv").rles
    assert [p.name for p in (tmp_path / "masks").iterdir()] == [image_id + masks.FORMATS[kind].suffix]


@pytest.mark.slow  # a fresh interpreter imports the command line (no torch: refused before)
def test_predict_seg_without_the_extra_names_it(model_dir, real_dicoms, tmp_path):
    """Where highdicom is not installed, --masks dicom-seg is refused before anything is read or
    written (exit 2), with the command that installs it; PNG masks still work there."""
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("highdicom", "nibabel"):
            raise ModuleNotFoundError(f"blocked: {{name}}", name=name)
sys.meta_path.insert(0, Block())
import pneumo.cli
args = ["predict", "--model", {str(model_dir)!r}, {str(real_dicoms[0])!r}, "--device", "cpu", "--masks"]
sys.exit(pneumo.cli.main(args + sys.argv[1:]))
"""
    refused = subprocess.run([sys.executable, "-c", code, "dicom-seg,nifti", "--out", str(tmp_path / "a" / "s.csv")],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "--masks dicom-seg needs highdicom" in refused.stderr and "--masks nifti needs nibabel" in refused.stderr
    assert refused.stderr.count("pip install 'pneumo[interop]'") == 2 and not (tmp_path / "a").exists()
    png = subprocess.run([sys.executable, "-c", code, "png", "--out", str(tmp_path / "b" / "s.csv")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert png.returncode == 0, png.stderr
    assert len(list((tmp_path / "b" / "masks").glob("*.png"))) == 1


def test_predict_refuses_png_masks_where_the_overlays_go(model_dir, real_dicoms, tmp_path, capsys):
    """PNG masks and overlays are both `<ImageId>.png`: one folder for both is refused (exit 2)."""
    folder = tmp_path / "pictures"
    code = predict(model_dir, real_dicoms[0], tmp_path / "s.csv", "--masks", "png", "--masks-dir", str(folder),
                   "--overlays", str(folder))  # fmt: skip
    assert code == 2 and "--masks-dir" in capsys.readouterr().err and not folder.exists()
    assert predict(model_dir, real_dicoms[0], tmp_path / "s.csv", "--probabilities", "--masks-dir", str(folder),
                   "--overlays", str(folder)) == 0  # fmt: skip


def test_predict_masks_argument_lists_the_kinds(capsys):
    assert MASK_FORMATS == tuple(sorted(masks.FORMATS))  # the command line names them without importing them
    assert main(["predict", "--model", "m", "x.dcm", "--out", "s.csv", "--masks", "png,jpeg"]) == 2
    assert "'jpeg' is not a mask format: dicom-seg, nifti, png" in capsys.readouterr().err
