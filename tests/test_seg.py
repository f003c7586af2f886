"""DICOM SEG (formats/seg.py) where other tools read it: checked by dicom3tools' `dciodvfy` and
read back through highdicom and pydicom against the mask of the real SIIM films' own RLE
labels; one SEG series per source series; what it refuses; the extra that installs it."""

import copy
import tomllib

import numpy as np
import pydicom
import pytest
from seg_checks import check_seg, find_dciodvfy, labelled_films

from pneumo.formats import seg

ALGORITHM = seg.Algorithm(
    name="pneumo U-Net, encoder initialisation test",
    version="0.1.0+000000000000",
    parameters={"variant": "test", "top": "0.5"},
)


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """dicom3tools' IOD checker; skipped where absent, except in CI."""
    return find_dciodvfy()


@pytest.fixture(scope="module")
def labelled(realdata, real_dicoms):
    """(file, header, its train-rle.csv mask) of each real SIIM film."""
    return labelled_films(realdata, real_dicoms)


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
