"""Prepare stages on the real samples, and a batch with bad inputs: every good input still
comes out, every bad one is reported by name."""

import json
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from pneumo.formats import cxr14, dicom, prepared, rle
from pneumo.tasks import prepare_cxr14, prepare_siim

SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}


def small_cxr14(root: Path, out: Path, exclude: set[str], **kwargs) -> dict:
    """prepare_cxr14 at 16 px, one class, everything in train, one worker: the layout and
    leakage tests' run."""
    return prepare_cxr14.prepare_cxr14(
        root=root,
        labels_csv="Data_Entry_2017.csv",
        out_dir=out,
        image_size=16,
        classes=["Pneumothorax"],
        max_images=0,
        split={"train": 1.0},
        seed=0,
        workers=1,
        exclude_patients=exclude,
        **{"strict": True, **kwargs},
    )


def test_prepare_siim_on_real_samples(realdata, tmp_path):
    out = tmp_path / "siim"
    counts = prepare_siim.prepare_siim(
        root=realdata / "siim",
        rle_csv="train-rle.csv",
        out_dir=out,
        image_size=128,
        split=SPLIT,
        seed=0,
        strict=True,
        workers=2,
    )
    images, masks = np.load(out / "images.npy", mmap_mode="r"), np.load(out / "masks.npy", mmap_mode="r")
    assert images.shape == masks.shape == (10, 128, 128) and images.dtype == masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    index = (out / "index.csv").read_text().splitlines()
    assert index[0] == "image_id,patient_id,split,has_pneumothorax,mask_pixels" and len(index) == 11
    rows = [line.split(",") for line in index[1:]]
    assert sum(int(r[3]) for r in rows) == counts["positive"] == 5 and counts["positive_below_4px"] == 0
    assert counts["unlabelled_files"] == 1  # variants/monochrome1-variant.dcm: a folder no CSV row names
    for i, r in enumerate(rows):
        assert int(r[4]) == masks[i].sum() and (int(r[3]) == 1) == (masks[i].sum() > 0)
    table = rle.read_csv(realdata / "siim" / "train-rle.csv")
    big = rle.render(table.rles[rows[1][0]], 1024, 1024)
    assert np.array_equal(masks[1], prepared.resize_mask(big, 128))
    assert not (tmp_path / "siim.tmp").exists()


def _bad_siim_root(realdata, tmp_path):
    root = tmp_path / "siim"
    shutil.copytree(realdata / "siim" / "dicom-images-train", root / "dicom-images-train")
    bad_dir = root / "dicom-images-train" / "bad" / "bad"
    bad_dir.mkdir(parents=True)
    (bad_dir / "zero.dcm").write_bytes(b"")
    (bad_dir / "text.dcm").write_text("not a dicom")
    first = sorted((realdata / "siim" / "dicom-images-train").rglob("*.dcm"))[0]
    raw = first.read_bytes()
    (bad_dir / "truncated.dcm").write_bytes(raw[:5000])
    damaged = bytearray(raw)  # garbage mid-stream in the JPEG scan
    damaged[len(raw) // 2 : len(raw) // 2 + 64] = bytes((0xFF if i % 7 == 0 else 0x5A) for i in range(64))
    (bad_dir / "jpeg-corrupted.dcm").write_bytes(bytes(damaged))
    no_pixels = pydicom.dcmread(first)
    del no_pixels.PixelData
    no_pixels.save_as(bad_dir / "no-pixels.dcm")
    csv_text = (realdata / "siim" / "train-rle.csv").read_text()
    csv_text += "no-such-image,-1\n1.2.276.0.7230010.3.1.4.8323329.300.1517875162.258081,1 2 3\n"
    (root / "train-rle.csv").write_text(
        csv_text.replace("1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819,-1\n", "")
    )
    return root


def test_bad_inputs_are_skipped_and_listed(realdata, tmp_path):
    root = _bad_siim_root(realdata, tmp_path)
    out = tmp_path / "out"
    counts = prepare_siim.prepare_siim(
        root=root, rle_csv="train-rle.csv", out_dir=out, image_size=32, split=SPLIT, seed=0, strict=False, workers=2
    )
    report = json.loads((out / "report.json").read_text())
    # 10 real files: one lost its only CSV row, one has a malformed extra row; 5 broken files
    assert counts["images"] == 8 and np.load(out / "images.npy").shape == (8, 32, 32)
    errors = "\n".join(report["errors"])
    for needle in (
        "jpeg-corrupted.dcm: JPEG frame is corrupted",
        "no-pixels.dcm: no pixel data",
        "zero.dcm",
        "text.dcm",
        "truncated.dcm",
        "no-such-image",
        "850819 has no row",
        ":15: 1.2.276.0.7230010.3.1.4.8323329.300.1517875162.258081: odd count",
        "258081.dcm: skipped",
    ):
        assert needle in errors, needle
    assert report["skipped"] == len(report["errors"]) == 9


def test_strict_mode_fails_naming_every_bad_input(realdata, tmp_path):
    root = _bad_siim_root(realdata, tmp_path)
    with pytest.raises(prepared.PrepareError) as err:
        prepare_siim.prepare_siim(
            root=root,
            rle_csv="train-rle.csv",
            out_dir=tmp_path / "out",
            image_size=32,
            split=SPLIT,
            seed=0,
            strict=True,
            workers=1,
        )
    assert "zero.dcm" in str(err.value) and "no-such-image" in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_prepare_cxr14_with_leakage_exclusion(realdata, tmp_path):
    siim_index = tmp_path / "siim_index.csv"
    siim_index.write_text("image_id,patient_id,split,has_pneumothorax,mask_pixels\nK1,x,train,0,0\n")
    mapping = tmp_path / "map.csv"
    mapping.write_text("Kaggle_ID,NIH_ID\nK1,00000100_005.png\nK2,00000442_000.png\n")
    exclude, counts = prepare_cxr14.excluded_patients(siim_index, mapping)
    assert exclude == {"00000100"} and counts == {"siim_images": 1, "siim_matched": 1}
    out = tmp_path / "cxr14"
    counts = prepare_cxr14.prepare_cxr14(
        root=realdata / "cxr14",
        labels_csv="Data_Entry_2017.csv",
        out_dir=out,
        image_size=32,
        classes=["No Finding", "Pneumothorax"],
        max_images=0,
        split={"train": 0.8, "val": 0.2},
        seed=0,
        strict=True,
        workers=2,
        exclude_patients=exclude,
    )
    assert counts["images"] == 39 and counts["excluded_leakage"] == counts["excluded_leakage_patients"] == 1
    assert np.load(out / "images.npy").shape == (39, 32, 32)
    lines = (out / "index.csv").read_text().splitlines()
    assert lines[0] == "image_id,patient_id,split,No Finding,Pneumothorax"
    assert sum(int(line.split(",")[-1]) for line in lines[1:]) == 10
    assert not any(line.startswith("00000100_") for line in lines)


def test_cxr14_bad_inputs_are_skipped_and_listed(realdata, tmp_path):
    root = tmp_path / "cxr14"
    shutil.copytree(realdata / "cxr14" / "images", root / "images")
    good = sorted((root / "images").glob("*.png"))
    good[0].write_bytes(good[0].read_bytes()[:2000])  # truncated PNG
    cv2.imwrite(str(good[1]), np.full((64, 64), 40000, np.uint16))  # 16-bit PNG: converted, kept
    cv2.imwrite(str(root / "images" / "99999999_000.png"), np.zeros((8, 8), np.uint8))  # no label row
    rows = (realdata / "cxr14" / "Data_Entry_2017.csv").read_text().splitlines()
    rows[3] = rows[3].replace(rows[3].split(",")[1], "Dragon", 1)  # unknown label
    (root / "Data_Entry_2017.csv").write_text("\r\n".join(rows) + "\r\n", encoding="utf-8-sig")  # BOM + CRLF
    out = tmp_path / "out"
    counts = prepare_cxr14.prepare_cxr14(
        root=root,
        labels_csv="Data_Entry_2017.csv",
        out_dir=out,
        image_size=32,
        classes=["No Finding", "Pneumothorax"],
        max_images=0,
        split={"train": 1.0},
        seed=0,
        strict=False,
        workers=2,
        exclude_patients=set(),
    )
    errors = "\n".join(json.loads((out / "report.json").read_text())["errors"])
    assert counts["images"] == 38 and counts["skipped"] == 3
    assert good[0].name in errors and "unreadable or truncated PNG" in errors
    assert "99999999_000.png: no row" in errors and "unknown label(s) ['Dragon']" in errors
    assert np.load(out / "images.npy").shape == (38, 32, 32)


@pytest.mark.slow
def test_killed_prepare_leaves_no_output(realdata, tmp_path):
    root = tmp_path / "siim"
    lines = ["ImageId, EncodedPixels"]
    table = (realdata / "siim" / "train-rle.csv").read_text().splitlines()[1:]
    for k in range(60):
        for f in (realdata / "siim" / "dicom-images-train").rglob("*.dcm"):
            (root / "dicom-images-train" / str(k)).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / "dicom-images-train" / str(k) / f"{f.stem}.{k}.dcm")
        lines += [f"{r.split(',')[0]}.{k},{r.split(',', 1)[1]}" for r in table]
    (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "prepared"
    call = f"prepare_siim(root=Path({str(root)!r}), rle_csv='train-rle.csv', out_dir=Path({str(out)!r}), "
    call += "image_size=256, split={'train': 1.0}, seed=0, strict=False, workers=1)"
    code = f"from pathlib import Path; from pneumo.tasks.prepare_siim import prepare_siim; {call}"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not (out.with_name("prepared.tmp") / "images.npy").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert proc.poll() is None, "prepare finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # only the .tmp folder is left, which no stage declares


def _prepared_siim_index(realdata, tmp_path):
    out = tmp_path / "siim"
    prepare_siim.prepare_siim(
        root=realdata / "siim",
        rle_csv="train-rle.csv",
        out_dir=out,
        image_size=16,
        split=SPLIT,
        seed=0,
        strict=True,
        workers=1,
    )
    return out / "index.csv"


def test_leakage_guard_fails_when_the_map_does_not_fit_the_real_siim_data(realdata, root, tmp_path):
    """The real SIIM samples with a map of other images (as with the synthetic map left in
    place), or one matching only half of them: the stage refuses, naming the map."""
    index = _prepared_siim_index(realdata, tmp_path)
    ids = [line.split(",")[0] for line in index.read_text().splitlines()[1:]]
    shipped = (root / "data" / "siim-to-nih.csv").read_text().splitlines()
    others = tmp_path / "other-map.csv"
    others.write_text("\n".join([r for r in shipped if r.split(",")[0] not in ids][:200]) + "\n")
    half = tmp_path / "half-map.csv"
    half.write_text("\n".join([shipped[0], *(r for r in shipped if r.split(",")[0] in ids[:5])]) + "\n")
    for mapping, matched in ((others, 0), (half, 5)):
        with pytest.raises(prepare_cxr14.LeakageError) as err:
            prepare_cxr14.excluded_patients(index, mapping, min_matched=0.9)
        message = str(err.value)
        assert str(mapping) in message and f"matches {matched} of the 10 real SIIM images" in message
        assert "\n" not in message and "siim-to-nih.csv" in message
    # a SIIM root without its own map falls back to the shipped one; one with its own map uses it
    assert prepare_cxr14.leakage_map(tmp_path, root / "data" / "siim-to-nih.csv") == root / "data" / "siim-to-nih.csv"
    assert prepare_cxr14.leakage_map(realdata / "siim", others) == realdata / "siim" / "siim-to-nih.csv"


def test_real_map_on_real_samples_excludes_the_siim_patients(realdata, root, tmp_path):
    index = _prepared_siim_index(realdata, tmp_path)
    table = cxr14.read_labels(realdata / "cxr14" / "Data_Entry_2017.csv")
    for mapping in (realdata / "siim" / "siim-to-nih.csv", root / "data" / "siim-to-nih.csv"):
        exclude, counts = prepare_cxr14.excluded_patients(index, mapping, min_matched=0.9)
        assert counts == {"siim_images": 10, "siim_matched": 10} and len(exclude) == 10
    sample_patients = set(table.patients.values())
    out = tmp_path / "cxr14"
    counts = small_cxr14(realdata / "cxr14", out, exclude, leakage={"siim_images": 10, "siim_matched": 10})
    films = [n for n, patient in table.patients.items() if patient in exclude]
    assert counts["excluded_leakage"] == len(films) and counts["images"] == 40 - len(films)
    assert counts["excluded_leakage_patients"] == len(exclude & sample_patients) and counts["siim_matched"] == 10
    kept = {line.split(",")[1] for line in (out / "index.csv").read_text().splitlines()[1:]}
    assert not kept & exclude


def test_siim_stage_2_layout_upper_case_and_duplicates(realdata, tmp_path):
    """Flat stage_2_images/ with upper-case names, stage_2_train.csv found although the
    param names train-rle.csv, an unlabelled test folder, one image present twice."""
    root = tmp_path / "siim"
    files = sorted((realdata / "siim" / "dicom-images-train").rglob("*.dcm"))
    (root / "stage_2_images").mkdir(parents=True)
    (root / "stage_2_test_images").mkdir()
    for f in files:
        shutil.copy(f, root / "stage_2_images" / f"{f.stem}.DCM")
    shutil.copy(files[0], root / "stage_2_images" / "copy-of-first.dcm")
    (root / "stage_2_images" / "again").mkdir()
    shutil.copy(files[1], root / "stage_2_images" / "again" / files[1].name)
    shutil.copy(files[2], root / "stage_2_test_images" / "test-1.dcm")
    shutil.copy(realdata / "siim" / "train-rle.csv", root / "stage_2_train.csv")
    out = tmp_path / "out"
    counts = prepare_siim.prepare_siim(
        root=root, rle_csv="train-rle.csv", out_dir=out, image_size=16, split=SPLIT, seed=0, strict=False, workers=1
    )
    errors = json.loads((out / "report.json").read_text())["errors"]
    assert counts["images"] == 9 and counts["unlabelled_files"] == 1 and counts["skipped"] == 3
    assert sum(f"image {files[1].stem} is also the file" in e for e in errors) == 2
    assert any("copy-of-first.dcm: image copy-of-first has no row" in e for e in errors)


def test_cxr14_mirror_layout_and_2020_label_file(realdata, tmp_path):
    """images_001/images/, images_002/images/ with upper-case names; only
    Data_Entry_2017_v2020.csv present while the param names Data_Entry_2017.csv."""
    root = tmp_path / "cxr14"
    files = sorted((realdata / "cxr14" / "images").glob("*.png"))
    for k, f in enumerate(files):
        folder = root / f"images_00{1 + k % 2}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / (f.name if k % 3 else f.stem + ".PNG"))
    shutil.copy(realdata / "cxr14" / "Data_Entry_2017.csv", root / "Data_Entry_2017_v2020.csv")
    out = tmp_path / "out"
    counts = small_cxr14(root, out, set())
    assert counts["images"] == 40
    names = [line.split(",")[0] for line in (out / "index.csv").read_text().splitlines()[1:]]
    assert sorted(names) == sorted(f.name for f in files)
    with pytest.raises(prepared.PrepareError, match="no label CSV"):
        small_cxr14(root / "images_001", out, set())


SMALL_SIIM = {"rle_csv": "train-rle.csv", "image_size": 16, "split": SPLIT, "seed": 0, "strict": True, "workers": 1}


def copy_root(source: Path, dest: Path, folder: str, link: bool) -> Path:
    """A dataset root made of `source`'s label files plus `folder`, copied or symlinked, and a
    link back to the root itself (a cycle, which discovery must visit once)."""
    dest.mkdir()
    for f in source.iterdir():
        if f.is_file():
            shutil.copy(f, dest / f.name)
    if link:
        (dest / folder).symlink_to(source / folder, target_is_directory=True)
    else:
        shutil.copytree(source / folder, dest / folder)
    (dest / "loop").symlink_to(dest, target_is_directory=True)
    return dest


@pytest.mark.parametrize("dataset, folder", [("siim", "dicom-images-train"), ("cxr14", "images")])
def test_a_symlinked_image_folder_prepares_as_its_copy(realdata, tmp_path, caplog, dataset, folder):
    outputs = {}
    for link in (False, True):
        root = copy_root(realdata / dataset, tmp_path / f"root-{link}", folder, link)
        out = tmp_path / f"out-{link}"
        if dataset == "siim":
            prepare_siim.prepare_siim(**SMALL_SIIM, root=root, out_dir=out)
        else:
            small_cxr14(root, out, set())
        outputs[link] = [(out / name).read_bytes() for name in ("images.npy", "index.csv")]
    assert outputs[True] == outputs[False] and outputs[True][1].count(b"\n") == {"siim": 11, "cxr14": 41}[dataset]
    assert f"{tmp_path / 'root-True' / folder}: a symlinked folder inside the dataset root" in caplog.text


@pytest.mark.slow
def test_dvc_hashes_a_linked_root_but_not_a_linked_folder_inside_one(tmp_path):
    """Why prepare warns about symlinked folders and the README says to link the root:
    DVC follows a dependency that is itself a symlink, not symlinked folders inside it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_text("1")
    repo = tmp_path / "repo"
    (repo / "inner").mkdir(parents=True)
    (repo / "linked").symlink_to(data, target_is_directory=True)
    (repo / "inner" / "images").symlink_to(data, target_is_directory=True)
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  root: {cmd: echo > root.txt, deps: [linked], outs: [root.txt]}\n"
        "  inside: {cmd: echo > inside.txt, deps: [inner], outs: [inside.txt]}\n"
    )
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*dvc, "repro", "-q"], cwd=repo, check=True)
    (data / "a.png").write_text("2")
    status = subprocess.run([*dvc, "status"], cwd=repo, check=True, capture_output=True, text=True).stdout
    assert "root:" in status and "inside:" not in status


def test_prepare_siim_survives_any_file(realdata, tmp_path, monkeypatch):
    """With data.strict false, a file the reader refuses for a hostile UID or a malformed header
    value (pydicom's badVR.dcm: NumberOfFrames '1A'), and one whose decoding raises an error no
    check foresaw, are each skipped and listed by name; every other film comes out."""
    root = tmp_path / "siim"
    shutil.copytree(realdata / "siim" / "dicom-images-train", root / "dicom-images-train")
    films = sorted((root / "dicom-images-train").rglob("*.dcm"))
    hostile, bad_vr, unforeseen = films[0], films[1], films[2]
    ds = pydicom.dcmread(hostile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.SOPInstanceUID = "../../x"
        ds.save_as(hostile)
    shutil.copy(get_testdata_file("badVR.dcm"), bad_vr)
    shutil.copy(realdata / "siim" / "train-rle.csv", root / "train-rle.csv")
    read = dicom.read_dicom

    def read_dicom(path):
        if Path(path) == unforeseen:
            raise ZeroDivisionError("a check nobody wrote")
        return read(path)

    monkeypatch.setattr(dicom, "read_dicom", read_dicom)  # one worker: decoded in this process
    out = tmp_path / "out"
    counts = prepare_siim.prepare_siim(**{**SMALL_SIIM, "strict": False}, root=root, out_dir=out)
    errors = json.loads((out / "report.json").read_text())["errors"]
    assert counts["images"] == 7 and len(errors) == 3
    reasons = {Path(e.split(": ", 1)[0]): e for e in errors}
    assert "SOPInstanceUID '../../x' is not a valid DICOM UID" in reasons[hostile]
    assert "malformed NumberOfFrames value '1A'" in reasons[bad_vr]
    assert "unexpected ZeroDivisionError: a check nobody wrote" in reasons[unforeseen]
    assert all("\n" not in e for e in errors)


def test_prepare_cxr14_survives_any_file(realdata, tmp_path, monkeypatch):
    root = tmp_path / "cxr14"
    shutil.copytree(realdata / "cxr14", root)
    pngs = sorted((root / "images").glob("*.png"))
    read = cxr14.read_png

    def read_png(path):
        if Path(path) == pngs[0]:
            raise MemoryError("an absurd size")
        return read(path)

    monkeypatch.setattr(cxr14, "read_png", read_png)
    out = tmp_path / "out"
    counts = small_cxr14(root, out, set(), strict=False)
    errors = json.loads((out / "report.json").read_text())["errors"]
    assert counts["images"] == 39 and errors == [f"{pngs[0]}: unexpected MemoryError: an absurd size"]


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16"])
def test_read_png_takes_every_channel_layout(tmp_path, mode):
    """Gray, gray + alpha (which OpenCV cannot even write), colour, colour + alpha, 16-bit."""
    from PIL import Image

    value = 100 * 257 if mode == "I;16" else 100
    Image.new(mode, (8, 8), value if mode in ("L", "I;16") else (value,) * len(mode)).save(tmp_path / "x.png")
    gray = cxr14.read_png(tmp_path / "x.png")
    assert gray.shape == (8, 8) and gray.dtype == np.uint8 and int(gray[0, 0]) == 100
