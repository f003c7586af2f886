"""Mask files (formats/masks.py): NIfTI through nibabel and PNG through OpenCV at the film's
geometry and spacing, the probability PNG, and the registry of mask kinds."""

import copy

import cv2
import nibabel
import numpy as np
import pydicom
import pytest
from seg_checks import labelled_films

from pneumo.formats import masks, seg


@pytest.fixture(scope="module")
def labelled(realdata, real_dicoms):
    """(file, header, its train-rle.csv mask) of each real SIIM film."""
    return labelled_films(realdata, real_dicoms)


def test_nifti_and_png_masks_are_at_the_film_geometry(labelled, tmp_path):
    """A film that is not square (a crop of a real positive film, its header to match): the PNG
    is rows x columns, 0 / 255; the NIfTI (columns, rows, 1), 0 / 1, with the film's spacing."""
    _, header, full = next(item for item in labelled if item[2].any())
    rows, cols = np.nonzero(full)
    top, left = min(max(0, rows.min() - 40), full.shape[0] - 700), min(max(0, cols.min() - 10), full.shape[1] - 500)
    mask = full[top : top + 700, left : left + 500]
    assert mask.shape == (700, 500) and mask.any() and not mask.all()
    header = copy.deepcopy(header)
    header.Rows, header.Columns = mask.shape
    header.PixelSpacing = [0.2, 0.125]  # rows apart, columns apart
    png = cv2.imdecode(np.frombuffer(masks.png_mask(mask, header), np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.shape == mask.shape and png.dtype == np.uint8 and set(np.unique(png)) == {0, 255}
    assert np.array_equal(png == 255, mask)
    (tmp_path / "m.nii.gz").write_bytes(masks.nifti_mask(mask, header))
    image = nibabel.load(tmp_path / "m.nii.gz")
    data = np.asarray(image.dataobj)
    assert data.shape == (500, 700, 1) and data.dtype == np.uint8 and set(np.unique(data)) == {0, 1}
    assert np.array_equal(data[:, :, 0].T == 1, mask)
    assert np.allclose(image.header.get_zooms(), (0.125, 0.2, 1.0))
    assert np.allclose(image.affine, np.diag([-0.125, -0.2, 1, 1]))  # LPS -> RAS, as ITK writes the film
    assert masks.nifti_mask(mask, header) == masks.nifti_mask(mask, header)  # no time stamp in the gzip


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # set here on purpose
@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"PixelSpacing": [0.2, 0.125]}, (0.125, 0.2)),
        ({"ImagerPixelSpacing": [0.3, 0.3]}, (0.3, 0.3)),
        ({"PixelSpacing": [0.2, 0.125], "ImagerPixelSpacing": [0.3, 0.3]}, (0.125, 0.2)),
        ({"PixelSpacing": ["0", "0.1"], "ImagerPixelSpacing": [0.3, 0.3]}, (0.3, 0.3)),
        ({"PixelSpacing": ["nan", "0.1"]}, (1.0, 1.0)),
        ({"PixelSpacing": "0.1"}, (1.0, 1.0)),
        ({}, (1.0, 1.0)),
    ],
)
def test_spacing_of_a_film(tags, expected):
    ds = pydicom.Dataset()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    assert masks.spacing(ds) == pytest.approx(expected)


def test_probability_png_holds_each_probability_to_within_half_a_step():
    probabilities = np.linspace(-0.1, 1.1, 12 * 7, dtype=np.float32).reshape(12, 7)
    png = cv2.imdecode(np.frombuffer(masks.png_probabilities(probabilities), np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.shape == (12, 7) and png.dtype == np.uint8
    assert np.abs(png / 255 - np.clip(probabilities, 0, 1)).max() <= 1 / 510 + 1e-6
    assert (png[0, 0], png[-1, -1]) == (0, 255)


def test_mask_formats_registry_names_the_valid_kinds():
    assert set(masks.FORMATS) == {"dicom-seg", "nifti", "png"}
    suffixes = [f.suffix for f in masks.FORMATS.values()]
    assert len(set(suffixes)) == 3 and masks.PROBABILITY_SUFFIX not in suffixes
    with pytest.raises(ValueError, match="unknown mask format 'jpeg'; valid: dicom-seg, nifti, png"):
        masks.by_name("jpeg")
    assert masks.problems(["png", "nifti", "dicom-seg"]) == []  # the dev install has the interop extra


@pytest.mark.parametrize(
    ("mask", "pixels"),
    [
        ([[True, False], [False, False]], [[255, 0], [0, 0]]),  # the first pixel
        ([[False, False], [False, True]], [[0, 0], [0, 255]]),  # the last pixel
        ([[0, 3], [1, 0]], [[0, 255], [255, 0]]),  # any non-zero value is set
        (np.zeros((3, 5), bool), np.zeros((3, 5))),  # an empty mask, rows x columns
    ],
)
def test_png_mask_is_0_or_255_at_the_mask_geometry(mask, pixels):
    png = cv2.imdecode(np.frombuffer(masks.png_mask(np.asarray(mask)), np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and np.array_equal(png, np.asarray(pixels, np.uint8))


@pytest.mark.parametrize(
    ("missing", "kinds", "expected"),
    [
        (set(), ["png", "nifti", "dicom-seg"], []),
        ({"highdicom"}, ["png", "dicom-seg", "dicom-seg"], ["--masks dicom-seg needs highdicom"]),  # each kind once
        ({"highdicom", "nibabel"}, ["nifti", "dicom-seg"], ["--masks nifti needs nibabel", "--masks dicom-seg needs"]),
        ({"highdicom", "nibabel"}, ["png"], []),  # PNG needs nothing beyond the base
    ],
)
def test_problems_name_each_kind_whose_module_is_missing_and_how_to_install_it(monkeypatch, missing, kinds, expected):
    monkeypatch.setattr(masks, "_installed", lambda module: module not in missing)
    found = masks.problems(kinds)
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found, strict=True))
    assert all(f.endswith("which is not installed: pip install 'pneumo[interop]'") for f in found)


def test_writers_by_suffix_each_kind_once():
    algorithm = seg.Algorithm(name="n", version="1", parameters={})
    found = masks.writers(["png", "nifti", "png"], algorithm)
    assert list(found) == [".png", ".nii.gz"] and found[".png"] is masks.png_mask
    assert found[".nii.gz"] is masks.nifti_mask
