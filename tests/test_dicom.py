"""pneumo.dicom on the real SIIM files, their variants, broken files, and a corpus of every
transfer syntax written from the real films (conftest.dicom_corpus)."""

import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.tag import Tag
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


def _malformed(tmp_path, name: str, change) -> Path:
    """An 8 x 8 film written after `change(ds)` edits its header (value checks off: pydicom
    would refuse to write most of these)."""
    path = _uncompressed(tmp_path, (np.arange(64) * 4).astype(np.uint8).reshape(8, 8), name=name)
    ds = pydicom.dcmread(path)
    with pydicom.config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        change(ds)
        ds.save_as(path)
    return path


def _set(**values):
    def change(ds):
        for keyword, value in values.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)

    return change


def _raw(tag: int, vr: str, value: bytes):
    """Set an element's bytes as written, whatever its VR allows: how a damaged file holds it."""

    def change(ds):
        ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)

    return change


# a header a damaged or hostile file can have -> what its refusal says
MALFORMED_HEADERS = {
    "NumberOfFrames '1A' (badVR.dcm)": (_raw(0x00280008, "IS", b"1A"), "malformed NumberOfFrames value '1A'"),
    "no Rows": (_set(Rows=None), "no Rows in its header"),
    "Rows 0": (_set(Rows=0), "image size 0 x 8 (Rows x Columns)"),
    "65535 x 65535": (_set(Rows=65535, Columns=65535), "image size 65535 x 65535"),
    "Columns of 3 bytes": (_raw(0x00280011, "US", b"\x08\x00\x00"), "unreadable Columns (BytesLengthException"),
    "BitsAllocated 12": (_set(BitsAllocated=12), "BitsAllocated 12, BitsStored 8"),
    "BitsStored 16 in 8": (_set(BitsStored=16), "BitsAllocated 8, BitsStored 16"),
    "no PhotometricInterpretation": (_set(PhotometricInterpretation=None), "no PhotometricInterpretation"),
    "PixelRepresentation 2": (_set(PixelRepresentation=2), "PixelRepresentation 2"),
    "NumberOfFrames 'x'": (_raw(0x00280008, "IS", b"x "), "malformed NumberOfFrames value 'x'"),
    "pixel data too short": (_set(PixelData=b"\x00" * 10), "less than expected"),
    "RescaleSlope 'nan'": (_set(RescaleSlope="nan"), "cannot apply its modality/VOI LUT"),
    "WindowWidth 'inf'": (_set(WindowCenter="10", WindowWidth="inf"), "cannot apply its modality/VOI LUT"),
    "two SOPInstanceUIDs": (_set(SOPInstanceUID="1.2.3\\4.5.6"), "SOPInstanceUID holds 2 values"),
    "a path for a UID": (_set(SOPInstanceUID="../../x"), "SOPInstanceUID '../../x' is not a valid DICOM UID"),
    "transfer syntax 'x'": (lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "x/y"), "transfer syntax"),
}


@pytest.mark.parametrize("case", MALFORMED_HEADERS)
def test_malformed_header_values_are_refused_before_decoding(tmp_path, case):
    change, reason = MALFORMED_HEADERS[case]
    path = _malformed(tmp_path, "x.dcm", change)
    with pytest.raises(dicom.DicomError) as err:
        dicom.read_dicom(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and reason in message and "\n" not in message, message


def test_a_jpeg_frame_of_another_size_than_its_header_is_refused(real_dicoms, tmp_path):
    """libjpeg allocates what the stream says, so the stream's size is checked against Rows and
    Columns before decoding (a fuzzed header could otherwise ask for 65535 x 65535)."""
    ds = pydicom.dcmread(real_dicoms[0])
    ds.Rows = 512
    ds.save_as(tmp_path / "x.dcm")
    with pytest.raises(dicom.DicomError, match="JPEG frame is 1024x1024, its header says 512x1024"):
        dicom.read_dicom(tmp_path / "x.dcm")


def test_a_file_larger_than_any_radiograph_is_not_read(real_dicoms, monkeypatch):
    monkeypatch.setattr(dicom, "MAX_FILE_BYTES", 1000)
    with pytest.raises(dicom.DicomError, match="larger than any single radiograph this reads"):
        dicom.read_image_id(real_dicoms[0])


def test_a_refusal_is_one_line_whatever_the_file_name(tmp_path):
    path = tmp_path / "two\nlines\x00.dcm".replace("\x00", "")
    path.write_text("not a DICOM")
    with pytest.raises(dicom.DicomError) as err:
        dicom.read_dicom(path)
    assert "two\\nlines.dcm" in str(err.value) and "\n" not in str(err.value)


def test_pydicom_warnings_about_a_file_are_logged_with_its_name_not_printed(real_dicoms, tmp_path, caplog):
    """A value longer than DICOM allows: pydicom warns when the reader looks at it; the reader logs
    each warning once, at DEBUG, naming the file, and lets none out."""
    path = _malformed(tmp_path, "x.dcm", _raw(0x00100020, "LO", b"p" * 70))  # PatientID: 64 characters allowed
    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG, logger="pneumo.formats.dicom"):
        warnings.simplefilter("error")  # a warning that got out would raise here
        dicom.read_dicom(path)
        dicom.read_dicom(real_dicoms[0])
    logged = [r.getMessage() for r in caplog.records]
    assert [m for m in logged if m.startswith(f"{path}: ")] == [
        f"{path}: The value length (70) exceeds the maximum length of 64 allowed for VR LO."
    ]


def test_the_not_a_dicom_refusal_offers_no_flag_we_do_not_have(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("hello")
    with pytest.raises(dicom.DicomError) as err:
        dicom.read_image_id(path)
    assert "not a readable DICOM file (no 'DICM' prefix" in str(err.value) and "force" not in str(err.value)


def test_a_decoder_panic_is_a_refusal(tmp_path, capfd, caplog):
    """Found by tests/test_fuzz.py: pylibjpeg-rle (Rust) panics on some damaged RLE segments, and
    pyo3's PanicException derives from BaseException, past any `except Exception`. pydicom's
    MR_small_RLE.dcm with one byte of its first segment flipped is such a file."""
    source = Path(get_testdata_file("MR_small_RLE.dcm"))
    data = bytearray(source.read_bytes())
    data[pydicom.dcmread(source).get_item(0x7FE00010).value_tell + 28] ^= 0xFF
    path = tmp_path / "rle.dcm"
    path.write_bytes(bytes(data))
    ds = pydicom.dcmread(path)
    try:
        get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=0, decoding_plugin="pylibjpeg")
    except Exception:
        pytest.skip("pylibjpeg-rle no longer panics on this file")  # it raises an ordinary error: nothing to prove
    except BaseException as e:
        assert not isinstance(e, Exception) and type(e).__name__ == "PanicException"
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="pneumo.formats.dicom"):
        with pytest.raises(
            dicom.DicomError, match=r"cannot decode RLE Lossless pixel data \(PanicException: index out"
        ):
            dicom.read_dicom(path)
    assert capfd.readouterr().err == ""  # Rust's panic message (and backtrace) went to the log, not the terminal
    assert any(r.getMessage().startswith(f"{path}: decoder: ") and "panicked" in r.getMessage() for r in caplog.records)


def test_a_native_decoders_own_warning_names_its_file(real_dicoms, tmp_path, capfd, caplog):
    """One bit flipped in a real film's JPEG scan: libjpeg still returns an image, and prints
    "Corrupt JPEG data" on the process's stderr itself, naming nothing. The reader catches it at
    the file descriptor and logs it at WARNING with the file's name: the film may be damaged."""
    data = bytearray(real_dicoms[0].read_bytes())
    data[pydicom.dcmread(real_dicoms[0]).get_item(0x7FE00010).value_tell + 6985] ^= 0x01
    path = tmp_path / "damaged.dcm"
    path.write_bytes(bytes(data))
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="pneumo.formats.dicom"):
        assert dicom.read_dicom(path).pixels.shape == (1024, 1024)
    assert capfd.readouterr().err == ""
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message.startswith(f"{path}: decoder: Corrupt JPEG data")
