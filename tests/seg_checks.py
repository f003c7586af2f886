"""Checks of the mask files other tools read, shared by test_seg.py, test_masks.py and
test_predict.py: dicom3tools' `dciodvfy`, the SEG checker (`check_seg`) and the real SIIM films
with their own RLE labels (`labelled_films`)."""

import os
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pneumo.formats import dicom, rle

DICOM3TOOLS = "apt-get install dicom3tools"


def find_dciodvfy() -> str:
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


def labelled_films(realdata, real_dicoms) -> list[tuple[Path, pydicom.Dataset, np.ndarray]]:
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
