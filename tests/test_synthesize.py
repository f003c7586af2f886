"""The embedded synthetic dataset (`tasks/synthesize.py`): real formats, readable by the same
readers, calibrated on the public SIIM label statistics; the location map tools that place its
pneumothoraces where real ones lie. The phantoms themselves: tests/test_phantoms.py."""

import csv
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from pneumo.formats import cxr14, dicom, rle
from pneumo.tasks import synthesize


@pytest.fixture(scope="session")
def shipped_map(root):
    return root / "data" / "siim_location_map.csv"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, shipped_map):
    root = tmp_path_factory.mktemp("synthetic")
    summary = synthesize.synthesize(
        siim_dir=root / "siim",
        cxr14_dir=root / "cxr14",
        n_siim=300,
        n_test=5,
        n_cxr14=200,
        size=128,
        positive_rate=0.222,
        log_area_mean=-4.83,
        log_area_std=1.09,
        regions_per_image=[0.766, 0.167, 0.042, 0.025],
        one_sided=0.7,
        shared_fraction=0.2,
        rgba_fraction=0.05,
        finding_rate=0.65,
        seed=0,
        location_map=shipped_map,
    )
    return root, summary


def test_siim_files_are_jpeg_baseline_dicoms_in_the_siim_tree(synthetic):
    root, summary = synthetic
    files = sorted((root / "siim" / "dicom-images-train").rglob("*.dcm"))
    assert len(files) == 300
    assert len(list((root / "siim" / "dicom-images-test").rglob("*.dcm"))) == 5
    import pydicom

    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 8
    assert ds.PatientID and ds.ViewPosition in ("PA", "AP") and len(ds.PixelSpacing) == 2
    assert files[0].parent.name == ds.SeriesInstanceUID and files[0].parent.parent.name == ds.StudyInstanceUID
    assert np.array_equal(dicom.read_image(files[0]), ds.pixel_array)


def test_siim_labels_match_the_real_statistics(synthetic):
    root, summary = synthetic
    table = rle.read_csv(root / "siim" / "train-rle.csv")
    assert not table.errors and len(table.rles) == 300
    assert (root / "siim" / "train-rle.csv").read_text().startswith("ImageId, EncodedPixels\n")
    positive = {k: v for k, v in table.rles.items() if v != ["-1"]}
    assert 0.15 < len(positive) / 300 < 0.3  # real: 0.222
    areas = [rle.render(v, 128, 128).mean() for v in positive.values()]
    assert 0.002 < np.median(areas) < 0.03  # real median: 0.0082
    assert max(len(v) for v in positive.values()) >= 2  # several regions -> several rows
    for rows in positive.values():  # regions are disjoint
        assert rle.render(rows, 128, 128).sum() == sum(rle.decode(r, 128, 128).sum() for r in rows)


def test_cxr14_files_and_labels(synthetic):
    root, summary = synthetic
    labels = cxr14.read_labels(root / "cxr14" / "Data_Entry_2017.csv")
    assert (root / "cxr14" / "Data_Entry_2017.csv").read_text().splitlines()[0] == synthesize.CXR14_HEADER
    pngs = sorted((root / "cxr14" / "images").glob("*.png"))
    assert len(pngs) == len(labels.labels) == 200 and not labels.errors
    assert all(cxr14.read_png(p).shape == (128, 128) for p in pngs)
    counts = np.sum(list(labels.labels.values()), axis=0)
    assert (counts > 0).all()  # every class occurs


def test_shared_films_are_mapped_like_siim_to_nih(synthetic):
    root, summary = synthetic
    with open(root / "siim" / "siim-to-nih.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["shared_images"] == 60
    row = rows[0]
    siim_file = next((root / "siim" / "dicom-images-train").rglob(f"{row['Kaggle_ID']}.dcm"))
    # the same film: lossless PNG in CXR-14, JPEG in SIIM (as in the real datasets)
    diff = dicom.read_image(siim_file).astype(int) - cxr14.read_png(root / "cxr14" / "images" / row["NIH_ID"])
    assert np.abs(diff).mean() < 3


@pytest.mark.slow
def test_the_same_seed_writes_the_same_bytes_in_any_process(tmp_path, shipped_map):
    """The dataset must not depend on Python's per-process string hashing (set order):
    two processes with different PYTHONHASHSEED write byte-identical files."""
    import hashlib
    import os

    script = (
        "import sys; from pathlib import Path; from pneumo.tasks import synthesize; out = Path(sys.argv[1]); "
        "synthesize.synthesize(siim_dir=out / 'siim', cxr14_dir=out / 'cxr14', n_siim=20, n_test=0, n_cxr14=60, "
        "size=64, positive_rate=0.3, log_area_mean=-4.0, log_area_std=1.0, regions_per_image=[1.0], one_sided=0.7, "
        "shared_fraction=0.2, rgba_fraction=0.05, finding_rate=0.9, seed=0, location_map=Path(sys.argv[2]))"
    )
    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", script, str(out), str(shipped_map)], env=env, check=True)
        files = sorted(p for p in out.rglob("*") if p.is_file())
        digests.append({p.relative_to(out): hashlib.md5(p.read_bytes()).hexdigest() for p in files})
    assert len(digests[0]) == 83 and digests[0] == digests[1]


def _location_map_tool(root):
    spec = importlib.util.spec_from_file_location("location_map", root / "tools" / "location_map.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "encoded, cell",
    [
        ("0 1", (0, 0)),  # the first pixel: top left
        ("1048575 1", (15, 15)),  # the last pixel: bottom right
        ("1023 1", (0, 15)),  # column-major: pixel 1023 is the bottom of the first column, not the top right
        ("65536 1", (1, 0)),  # pixel 65536 = 64 x 1024: the top of column 64, in the second cell across
        ("62 2", (0, 0)),  # rows 62-63 of column 0: centroid 63.0 px from the top, inside the first cell
        ("63 2", (0, 1)),  # rows 63-64: centroid 64.0 px, exactly on the cell edge: the next cell (floor)
        ("0 1 1048574 1", (8, 8)),  # the first and the last pixel: centroid exactly at the film's centre
    ],
)
def test_a_region_is_counted_in_the_cell_of_its_centroid(root, encoded, cell):
    assert _location_map_tool(root).region_cells(encoded) == cell


def test_the_shipped_location_map_is_reproduced_from_the_real_labels(root, all_train_rle, shipped_map, tmp_path):
    out = tmp_path / "map.csv"
    subprocess.run([sys.executable, str(root / "tools" / "location_map.py"), str(all_train_rle), str(out)], check=True)
    assert out.read_bytes() == shipped_map.read_bytes()


def _real_location_prior_tool(root, monkeypatch):
    monkeypatch.syspath_prepend(str(root / "tools"))  # it imports location_map's reader
    spec = importlib.util.spec_from_file_location("real_location_prior", root / "tools" / "real_location_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_regions_grow_about_their_centroid_by_the_area_factor(root, realdata, monkeypatch):
    """tools/real_location_prior.py grows each real region (the README compares the phantoms'
    location prior with real masks grown to the default's areas): area x factor, same centroid."""
    tool = _real_location_prior_tool(root, monkeypatch)
    table = rle.read_csv(realdata / "siim" / "train-rle.csv")
    regions = [t for rows in table.rles.values() for t in rows if t.strip() != rle.EMPTY]
    assert len(regions) >= 5
    for text in regions:
        before, after = tool.grown(text, 1.0), tool.grown(text, 3.3)
        assert after.sum() / before.sum() == pytest.approx(3.3, rel=0.05)
        centroid = [np.argwhere(m).mean(0) for m in (before, after)]
        assert np.abs(centroid[0] - centroid[1]).max() < 1.0


def test_the_real_location_prior_is_perfect_when_every_mask_is_the_same_and_poor_when_they_scatter(root, monkeypatch):
    tool = _real_location_prior_tool(root, monkeypatch)
    same = np.zeros((40, 16, 16), np.uint8)
    same[:, 4:8, 2:6] = 1
    assert tool.prior_dice(same, seed=0) == pytest.approx(1.0)
    scattered = np.zeros((40, 16, 16), np.uint8)
    for i in range(40):  # one 2x2 patch per film, each somewhere else
        r, c = divmod(3 * i % 64, 8)
        scattered[i, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = 1
    assert tool.prior_dice(scattered, seed=0) < 0.2
