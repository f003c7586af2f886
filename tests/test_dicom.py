"""pneumo.dicom on the real SIIM files, their variants, broken files, and a corpus of every
transfer syntax written from the real films (conftest.dicom_corpus)."""

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEGLSNearLossless

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


def reference(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    """The display rule written out independently: pydicom's modality and VOI LUT chain, then
    8 bits over the VOI output range (PS3.3 C.11.2: a window maps into the range of the
    rescaled stored values; a VOI LUT into its entries' bit depth), else the image's range;
    8-bit films without LUTs (an identity rescale is none) as stored."""
    luts = any(k in ds for k in ("VOILUTSequence", "WindowCenter", "ModalityLUTSequence"))
    luts |= (ds.get("RescaleSlope", 1), ds.get("RescaleIntercept", 0)) != (1, 0)
    if stored.dtype == np.uint8 and not luts:  # 8-bit as stored, like SIIM's
        return 255 - stored if ds.PhotometricInterpretation == "MONOCHROME1" else stored
    values = apply_voi_lut(apply_modality_lut(stored, ds), ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        lo, hi = 0, 2 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1
    elif "WindowCenter" in ds:
        lo, hi = (
            (0, 2**ds.BitsStored - 1)
            if ds.PixelRepresentation == 0
            else (-(2 ** (ds.BitsStored - 1)), 2 ** (ds.BitsStored - 1) - 1)
        )
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        lo, hi = lo * slope + intercept, hi * slope + intercept
    else:
        lo, hi = values.min(), values.max()
    out = np.clip(np.rint((values - lo) * 255 / (hi - lo)), 0, 255).astype(np.uint8)
    return 255 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


def pydicom_pixels(path) -> tuple[pydicom.Dataset, np.ndarray]:
    """pydicom's own pixel_array of a file (a file without meta header gets the transfer
    syntax pydicom found when reading it)."""
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.get("file_meta", {}):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    return ds, ds.pixel_array


def test_corpus_every_grayscale_file_is_read_like_pydicom(dicom_corpus):
    folder, expect, sources = dicom_corpus
    readable = [name for name, reason in expect.items() if reason is None]
    assert len(readable) == 24
    for name in readable:
        image = dicom.read_dicom(folder / name)
        ds, pixels = pydicom_pixels(folder / name)
        assert image.pixels.dtype == np.uint8 and image.pixels.shape == pixels.shape, name
        assert np.array_equal(image.pixels, reference(ds, pixels)), name  # pydicom's pixels, the same LUTs
        if name in sources:  # against the values it was written from: exact unless the syntax is lossy
            source = sources[name]
            truth = reference(source, source.pixel_array)
            lossy = any(f"-{uid}.dcm" in name for uid in (JPEGLSNearLossless, JPEG2000))
            diff = np.abs(image.pixels.astype(int) - truth)
            assert (diff.mean() < 3 and diff.max() < 40) if lossy else not diff.any(), (name, diff.mean(), diff.max())
    windowed = dicom.read_image(folder / "rescale-window.dcm")
    assert windowed.min() == 0 and windowed.max() == 255  # the window clips both ends of this film
    assert image.image_id and dicom.read_dicom(folder / "no-meta-header").image_id.startswith("1.2.826")


def test_corpus_every_other_file_is_refused_with_its_reason(dicom_corpus):
    folder, expect, _ = dicom_corpus
    refused = {name: reason for name, reason in expect.items() if reason is not None}
    assert len(refused) == 6
    for name, reason in refused.items():
        with pytest.raises(dicom.DicomError) as err:
            dicom.read_dicom(folder / name)
        message = str(err.value)
        assert message.startswith(f"{folder / name}: ") and reason in message and "\n" not in message, message


def test_window_follows_the_dicom_rule(real_dicoms, grayscale_dataset, dicom_writer, tmp_path):
    """A window maps stored values linearly between center -/+ width/2 (LINEAR, PS3.3
    C.11.2.1.2) after the rescale; the 8-bit output spans the rescaled stored range."""
    stored = np.array([[0, 1000, 1500, 2000, 4095]] * 4, np.uint16)
    ds = grayscale_dataset(
        pydicom.dcmread(real_dicoms[0]),
        stored,
        12,
        "1.2.3",
        RescaleSlope=1,
        RescaleIntercept=-1000,
        WindowCenter=500,
        WindowWidth=1001,
    )
    dicom_writer(ds, pydicom.uid.ExplicitVRLittleEndian, tmp_path / "w.dcm")
    row = dicom.read_image(tmp_path / "w.dcm")[0]
    # rescaled -1000, 0, 500, 1000, 3095; window [0, 1000] -> output range [-1000, 3095]
    expected = np.rint((np.array([-1000, -1000, 0.5 * 4095 - 1000, 3095, 3095]) + 1000) * 255 / 4095)
    assert np.abs(row.astype(int) - expected).max() <= 1, row
