"""pneumo.cxr14 on the real ChestX-ray14 samples and on broken inputs."""

import gzip

import cv2
import numpy as np
import pytest

from pneumo.formats import cxr14


def test_reads_all_real_pngs_including_rgba(realdata):
    files = sorted((realdata / "cxr14" / "images").glob("*.png"))
    assert len(files) == 40
    modes = {cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ndim for p in files}
    assert modes == {2, 3}  # both L and RGBA files are in the sample
    for p in files:
        pixels = cxr14.read_png(p)
        assert pixels.shape == (1024, 1024) and pixels.dtype == np.uint8


def test_labels_2020_and_2017_layouts(realdata, tmp_path):
    table = cxr14.read_labels(realdata / "cxr14" / "all-Data_Entry_2017_v2020.csv.gz")
    assert len(table.labels) == 112120 and not table.errors
    assert len(set(table.patients.values())) == 30805
    # the 2017 original: trailing comma on the header, CRLF
    with gzip.open(realdata / "cxr14" / "all-Data_Entry_2017_v2020.csv.gz", "rt") as f:
        lines = f.read().splitlines()[:200]
    old = tmp_path / "Data_Entry_2017.csv"
    old.write_bytes(("\r\n".join([lines[0] + ","] + [line + "," for line in lines[1:]]) + "\r\n").encode())
    old_table = cxr14.read_labels(old, cxr14.ALL_CLASSES)
    assert len(old_table.labels) == 199 and not old_table.errors
    first = old_table.labels["00000001_000.png"]
    assert first[cxr14.ALL_CLASSES.index("Cardiomegaly")] == 1 and first.sum() == 1


def test_sample_labels_are_multi_hot(realdata):
    table = cxr14.read_labels(realdata / "cxr14" / "Data_Entry_2017.csv")
    assert len(table.labels) == 40
    assert table.patients["00000100_000.png"] == "00000100"
    row = dict(zip(table.classes, table.labels["00000100_000.png"], strict=False))
    assert row == {"No Finding": 0, "Nodule": 0, "Infiltration": 1, "Effusion": 1, "Atelectasis": 1, "Pneumothorax": 0}
    assert sum(v[-1] for v in table.labels.values()) == 10  # the 10 Pneumothorax films


def test_unknown_label_is_a_row_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("Image Index,Finding Labels,Follow-up #,Patient ID\na.png,Nodule,0,1\nb.png,Dragon|Nodule,0,2\n")
    table = cxr14.read_labels(path)
    assert list(table.labels) == ["a.png"] and table.rejected == {"b.png"}
    assert table.errors == [f"{path}:3: b.png: unknown label(s) ['Dragon']"]


def test_class_list_must_be_cxr14_findings():
    with pytest.raises(cxr14.CXR14Error, match="Dragon"):
        cxr14.read_labels("unused.csv", ("Nodule", "Dragon"))


def test_bad_pngs(realdata, tmp_path):
    good = next((realdata / "cxr14" / "images").glob("*.png")).read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[: len(good) // 3])
    with pytest.raises(cxr14.CXR14Error, match="truncated.png"):
        cxr14.read_png(truncated)
    deep = tmp_path / "sixteen.png"
    cv2.imwrite(str(deep), (np.arange(256, dtype=np.uint16).reshape(16, 16) * 256))
    assert np.array_equal(cxr14.read_png(deep), np.arange(256, dtype=np.uint8).reshape(16, 16))
