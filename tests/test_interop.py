"""Masks where other tools read them (formats/masks.py, formats/seg.py): DICOM SEG checked by
dicom3tools' `dciodvfy` and read back through highdicom and pydicom, NIfTI through nibabel, PNG
through OpenCV, each against the mask of the real SIIM films' own RLE labels; then `pneumo
predict --masks` end to end, whose files must hold exactly the pixels of its CSV's RLE."""

import copy
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import cv2
import highdicom as hd
import nibabel
import numpy as np
import pydicom
import pytest
from tiny_model import train_tiny_model

from pneumo.cli import MASK_FORMATS, main
from pneumo.formats import dicom, masks, rle, seg

PNEUMO = [sys.executable, "-m", "pneumo.cli"]
ALGORITHM = seg.Algorithm(
    name="pneumo U-Net, encoder initialisation test",
    version="0.1.0+000000000000",
    parameters={"variant": "test", "top": "0.5"},
)
DICOM3TOOLS = "apt-get install dicom3tools"


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """dicom3tools' IOD checker. Skips where it is absent, unless in CI (.ci/run installs it)."""
    found = shutil.which("dciodvfy")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"dciodvfy not found in CI: .ci/run installs it (`{DICOM3TOOLS}`)")
        pytest.skip(f"dciodvfy (dicom3tools) not installed: `{DICOM3TOOLS}` (Debian, Ubuntu)")
    return found


def verify(dciodvfy: str, path: Path) -> list[str]:
    """dciodvfy's Error and Warning lines for one file."""
    proc = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(("Error", "Warning"))]


@pytest.fixture(scope="module")
def labelled(realdata, real_dicoms) -> list[tuple[Path, pydicom.Dataset, np.ndarray]]:
    """(file, header, its train-rle.csv mask) of each real SIIM film: positive and empty ones."""
    table = rle.read_csv(realdata / "siim" / "train-rle.csv")
    out = []
    for path in real_dicoms:
        header = dicom.read_dataset(path, header_only=True)
        out.append((path, header, rle.render(table.rles[header.SOPInstanceUID], header.Rows, header.Columns)))
    assert 0 < sum(m.any() for _, _, m in out) < len(out)
    return out


def check_seg(data: bytes, header: pydicom.Dataset, mask: np.ndarray, path: Path, dciodvfy: str) -> list[str]:
    """Assert that the SEG `data` is the binary SEG of `mask` on the film `header`; return its
    dciodvfy warnings (it must have no error)."""
    path.write_bytes(data)
    lines = verify(dciodvfy, path)
    assert not [line for line in lines if line.startswith("Error")], lines
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.SegmentationStorage and ds.SegmentationType == "BINARY"
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (header.Rows, header.Columns, 1)
    assert np.array_equal(ds.pixel_array.astype(bool), mask)  # pydicom unpacks the 1-bit frame
    assert ds.StudyInstanceUID == header.StudyInstanceUID and ds.PatientID == header.PatientID
    assert ds.SeriesInstanceUID != header.SeriesInstanceUID
    (series,) = ds.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == header.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence] == [header.SOPInstanceUID]
    (frame,) = ds.PerFrameFunctionalGroupsSequence
    (source,) = frame.DerivationImageSequence[0].SourceImageSequence
    assert (source.ReferencedSOPInstanceUID, source.ReferencedSOPClassUID) == (
        header.SOPInstanceUID,
        header.SOPClassUID,
    )
    (segment,) = ds.SegmentSequence
    assert segment.SegmentLabel == "Pneumothorax" and segment.SegmentAlgorithmType == "AUTOMATIC"
    kind, category = segment.SegmentedPropertyTypeCodeSequence[0], segment.SegmentedPropertyCategoryCodeSequence[0]
    assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == ("36118008", "SCT", "Pneumothorax")
    assert (category.CodeValue, category.CodingSchemeDesignator) == ("49755003", "SCT")
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # DCM: Artificial Intelligence
    read = hd.seg.segread(path)
    pixels = read.get_pixels_by_source_instance([header.SOPInstanceUID], segment_numbers=[1])
    assert pixels.shape == (1, header.Rows, header.Columns, 1) and np.array_equal(pixels[0, :, :, 0] > 0, mask)
    assert read.get_source_image_uids() == [(header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID)]
    return lines


def test_seg_of_each_real_film_passes_dciodvfy_and_reads_back_to_its_labels(labelled, dciodvfy, tmp_path):
    """Every SIIM sample, positive or empty: its SEG is valid, holds exactly its train-rle.csv mask
    and references it. SIIM's Patient's Age `29` (AS wants `029Y`) is emptied, not copied."""
    writer = seg.SegWriter(ALGORITHM)
    warnings = set()
    for _, header, mask in labelled:
        out = tmp_path / f"{header.SOPInstanceUID}.seg.dcm"
        warnings |= {line.split(" - ")[1] for line in check_seg(writer(mask, header), header, mask, out, dciodvfy)}
        ds = pydicom.dcmread(out)
        assert ds.PatientAge == "" and header.PatientAge != ""  # SIIM's own age is no valid AS
        algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (ALGORITHM.name, ALGORITHM.version)
        assert ds.ManufacturerModelName == ALGORITHM.name
    # what the SIIM films bring with them: an empty Study ID, a patient's name that is one UUID
    assert warnings <= {
        "Missing attribute or value that would be needed to build DICOMDIR",
        "Value dubious for this VR",
    }


def test_one_seg_series_per_source_series(labelled):
    """The SEGs of one run: one new series for each source series, numbered within it."""
    writer = seg.SegWriter(ALGORITHM)
    (_, first, mask), (_, second, _) = labelled[:2]
    a, b = (pydicom.dcmread(pydicom.filebase.DicomBytesIO(writer(mask, first))) for _ in range(2))
    c = pydicom.dcmread(pydicom.filebase.DicomBytesIO(writer(mask, second)))
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != c.SeriesInstanceUID
    assert (a.InstanceNumber, b.InstanceNumber, c.InstanceNumber) == (1, 2, 1)
    assert len({a.SOPInstanceUID, b.SOPInstanceUID, c.SOPInstanceUID}) == 3


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # set here on purpose
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mask": (1024, 1023)}, "mask is 1024 x 1023, the film 1024 x 1024"),
        ({"StudyInstanceUID": "1.2.03"}, "StudyInstanceUID '1.2.03' is no valid DICOM UID"),
        ({"SeriesInstanceUID": ""}, "SeriesInstanceUID '' is no valid DICOM UID"),
        ({"SOPClassUID": "1.2.x"}, "SOPClassUID '1.2.x' is no valid DICOM UID"),
    ],
)
def test_seg_refuses_what_it_cannot_reference(labelled, change, reason):
    _, header, mask = labelled[0]
    header = copy.deepcopy(header)
    for keyword, value in change.items():
        if keyword == "mask":
            mask = np.zeros(value, bool)
        else:
            setattr(header, keyword, value)
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        seg.segmentation(header, mask, ALGORITHM, series_uid="1.2.3")


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


def test_interop_is_an_extra_that_dev_installs(root):
    """highdicom and nibabel are needed only for --masks: an extra (`interop`), named by the
    error message, that the `dev` extra (what `make` installs) includes; not the base."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert not names & {"highdicom", "nibabel"}
    assert {r.split(">")[0].lower() for r in extras[seg.EXTRA]} == {"highdicom", "nibabel"}
    assert any(r.startswith("pneumo[") and seg.EXTRA in r for r in extras["dev"])
    assert seg.INSTALL == "pip install 'pneumo[interop]'"


@pytest.fixture(scope="module")
def model_dir(tiny_siim, unet_run) -> Path:
    """A U-Net trained for one epoch on the real samples at 32 px (tests/tiny_model.py)."""
    return train_tiny_model(tiny_siim, unet_run)


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
