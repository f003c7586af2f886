"""pneumo.dicom on the real SIIM files, their variants, and broken files."""

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from pneumo.formats import dicom, rle


def test_reads_all_real_files_like_pydicom(real_dicoms):
    for path in real_dicoms:
        image = dicom.read_dicom(path)
        assert image.pixels.shape == (1024, 1024) and image.pixels.dtype == np.uint8
        assert image.image_id == path.stem and image.patient_id
        # the cv2 fast path is bit-identical to pydicom + Pillow on these files
        assert np.array_equal(image.pixels, pydicom.dcmread(path).pixel_array)


def test_monochrome1_is_inverted(realdata):
    variant = realdata / "siim" / "variants" / "monochrome1-variant.dcm"
    uid = pydicom.dcmread(variant).SOPInstanceUID
    original = next((realdata / "siim" / "dicom-images-train").rglob(f"{uid}.dcm"))
    assert np.array_equal(dicom.read_image(variant), 255 - dicom.read_image(original))


def test_real_masks_match_their_rle(realdata, real_dicoms):
    table = rle.read_csv(realdata / "siim" / "train-rle.csv")
    assert len(table.rles["1.2.276.0.7230010.3.1.4.8323329.307.1517875162.311533"]) == 4
    positives = 0
    for path in real_dicoms:
        h, w = dicom.read_image(path).shape
        rows = table.rles[path.stem]
        mask = rle.render(rows, h, w)
        run_pixels = sum(int(n) for r in rows if r != "-1" for n in r.split()[1::2])
        if len(rows) == 1:
            assert mask.sum() == run_pixels
        else:  # image ...307's four rows overlap: OR-ed, a sum would count pixels twice
            assert mask.sum() < run_pixels
            assert np.array_equal(mask, np.logical_or.reduce([rle.decode(r, h, w) for r in rows]))
        positives += mask.any()
        for r in rows:
            assert rle.encode(rle.decode(r, h, w)) == r
    assert positives == 5


def _uncompressed(tmp_path, pixels, photometric="MONOCHROME2", bits=8, name="x.dcm", samples=1):
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = pydicom.uid.SecondaryCaptureImageStorage, "1.2.3", "p"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def test_uncompressed_and_16bit_monochrome1(tmp_path):
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    eight = (np.arange(64) * 4).astype(np.uint8).reshape(8, 8)
    assert np.array_equal(dicom.read_image(_uncompressed(tmp_path, eight, name="a.dcm")), eight)
    out = dicom.read_image(_uncompressed(tmp_path, ramp, "MONOCHROME1", 16, name="b.dcm"))
    assert out.dtype == np.uint8 and out[0, 0] == 255 and out[-1, -1] == 0  # windowed, then inverted
    assert (np.diff(out.ravel().astype(int)) <= 0).all()


@pytest.mark.parametrize(
    "kind", ["zero-byte", "not-dicom", "truncated", "no-pixels", "rgb", "jpeg-truncated", "jpeg-corrupted"]
)
def test_bad_files_raise_one_line_error_naming_the_file(tmp_path, real_dicoms, kind):
    path = tmp_path / f"{kind}.dcm"
    raw = real_dicoms[0].read_bytes()
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "not-dicom":
        path.write_text("hello, I am a text file\n")
    elif kind == "truncated":
        path.write_bytes(raw[:1000])
    elif kind == "no-pixels":
        ds = pydicom.dcmread(real_dicoms[0])
        del ds.PixelData
        ds.save_as(path)
    elif kind == "rgb":
        path = _uncompressed(tmp_path, np.zeros((4, 4, 3), np.uint8), "RGB", name="rgb.dcm", samples=3)
    elif kind == "jpeg-truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "jpeg-corrupted":  # garbage mid-stream: cv2 and Pillow would decode it with a warning only
        damaged = bytearray(raw)
        middle = len(raw) // 2
        damaged[middle : middle + 64] = bytes((0xFF if i % 7 == 0 else 0x5A) for i in range(64))
        path.write_bytes(bytes(damaged))
    with pytest.raises(dicom.DicomError) as err:
        dicom.read_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
