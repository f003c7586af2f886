"""Chest radiograph DICOMs (SIIM-ACR and other scanners) -> 8-bit grayscale arrays; and the
writer of the synthetic generator's SIIM-like files, so that one reader serves real and
synthetic files. (The tests' writers of other transfer syntaxes are in tests/dicom_writers.py.)

JPEG Baseline 8-bit (the SIIM transfer syntax) is decoded by cv2 straight from the
encapsulated frame (~1.5x faster than pydicom+Pillow here, bit-identical on the real files).
Every other transfer syntax goes through pydicom with the plugin named in `DECODERS`
(measured in benchmarks/README.md), so the result does not depend on which other plugins
happen to be installed. Stored values then go through the modality LUT (rescale) and the
VOI LUT or window, as pydicom applies them, and are scaled to 8 bits over the VOI output
range (the image's own range when the file has no VOI); MONOCHROME1 is inverted.

Colour, multi-frame and pixel-less files (RT, SR, ...) and transfer syntaxes no installed
plugin decodes are refused with a one-line `DicomError` naming the file and the reason.
Files without the 128-byte preamble and file meta header, as older systems write them, are
read with pydicom's `force=True` when they hold an image dataset.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
SYNTHETIC_UID_ROOT = "1.2.826.0.1.3680043.10.1234"  # the embedded phantoms' private root: never a real study

# The pydicom plugin that decodes each compressed transfer syntax, first installed one wins.
# pydicom alone would take gdcm > pylibjpeg > pillow, whatever is installed; naming them
# keeps results independent of that. Choice and timings: benchmarks/README.md (DICOM decoding).
DECODERS: dict[str, tuple[str, ...]] = {
    JPEGBaseline8Bit: ("pillow", "pylibjpeg"),  # 12/16-bit or odd files only; 8-bit goes through cv2
    JPEGExtended12Bit: ("pylibjpeg", "pillow"),  # 12-bit: only libjpeg decodes it (gdcm and Pillow refuse)
    JPEGLossless: ("pylibjpeg",),
    JPEGLosslessSV1: ("pylibjpeg",),
    JPEGLSLossless: ("pyjpegls", "pylibjpeg"),
    JPEGLSNearLossless: ("pyjpegls", "pylibjpeg"),
    JPEG2000Lossless: ("pylibjpeg", "pillow"),
    JPEG2000: ("pylibjpeg", "pillow"),
    RLELossless: ("pylibjpeg", "pydicom"),
}


class DicomError(ValueError):
    """A file that does not hold a readable grayscale radiograph."""


@dataclass
class Radiograph:
    pixels: np.ndarray  # uint8 (H, W), MONOCHROME2 sense: bright = dense
    image_id: str  # SOPInstanceUID (the SIIM ImageId; SIIM names each file by it), else the file stem
    patient_id: str
    path: Path | None = None  # the file it was read from


def _one_line(e: Exception) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def read_dataset(path: str | Path, *, header_only: bool = False) -> pydicom.Dataset:
    """The dataset of a DICOM file, with a transfer syntax in its file meta. A file without
    the preamble and meta header (older systems write bare datasets) is read with
    `force=True` and kept only if it holds an image; its transfer syntax is the encoding
    pydicom found (uncompressed)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # pydicom only warns when a file ends inside an element, and then returns a dataset
            # without any element: a partial download would read as a file without pixel data
            warnings.filterwarnings("error", "End of file reached", UserWarning)
            ds = pydicom.dcmread(path, stop_before_pixels=header_only)
    except UserWarning as e:
        part = "pixel data" if not header_only and _header_complete(path) else "header"
        raise DicomError(f"{path}: truncated file: its {part} is cut off ({str(e).split(' in file ')[0]})") from None
    except InvalidDicomError as e:
        reason = _one_line(e)
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=header_only)
            image = all(k in ds for k in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"))
        except Exception:  # pydicom raises many types for broken files
            image = False
        if not image:
            raise DicomError(f"{path}: not a readable DICOM file ({reason}; no image dataset without it)") from None
    except Exception as e:
        raise DicomError(f"{path}: not a readable DICOM file ({_one_line(e)})") from None
    meta = ds.get("file_meta") or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        if implicit is None:
            raise DicomError(f"{path}: no transfer syntax in the file and none could be inferred")
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
        ds.file_meta = meta
    return ds


def _header_complete(path: Path) -> bool:
    """Whether the file reads in full up to its pixel data."""
    try:
        read_dataset(path, header_only=True)
    except DicomError:
        return False
    return True


def image_id_of(ds: pydicom.Dataset, path: Path) -> str:
    """ImageId: the SOPInstanceUID (SIIM names each file `<SOPInstanceUID>.dcm`, so both
    agree there; elsewhere the UID is what identifies the image across copies and renames),
    the file stem only when the dataset has none."""
    return str(ds.get("SOPInstanceUID", "") or path.stem)


def read_image_id(path: str | Path) -> str:
    """The ImageId of a file from its header alone (no pixel decoding)."""
    path = Path(path)
    return image_id_of(read_dataset(path, header_only=True), path)


def _check_image(ds: pydicom.Dataset, path: Path) -> None:
    """Refuse, naming the reason, anything but one grayscale frame of integer pixels."""
    if "PixelData" not in ds:
        kind = ds.get("SOPClassUID")
        what = f"{UID(kind).name}, modality {ds.get('Modality', '?')}" if kind else "no SOP class"
        other = " (float pixel data)" if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds else ""
        raise DicomError(f"{path}: no pixel data{other}: not an image ({what})")
    photometric = ds.get("PhotometricInterpretation", "")
    samples = ds.get("SamplesPerPixel", 1)
    if samples != 1 or photometric not in GRAYSCALE:
        raise DicomError(
            f"{path}: colour image (PhotometricInterpretation {photometric!r}, {samples} sample(s) per pixel): "
            "only grayscale (MONOCHROME1/2) radiographs are read"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DicomError(f"{path}: multi-frame image ({frames} frames): only single-frame radiographs are read")


def _decode(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax == JPEGBaseline8Bit and ds.BitsAllocated == 8:
        try:
            return _decode_jpeg_baseline(ds, path)
        except DicomError:
            raise
        except Exception as e:  # a damaged encapsulation
            raise DicomError(f"{path}: cannot decode JPEG Baseline pixel data ({_one_line(e)})") from None
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomError(f"{path}: unsupported transfer syntax {syntax.name!r} ({syntax}): no decoder exists") from None
    if not decoder.is_available:
        missing = "; ".join(f"{k}: {', '.join(v)}" for k, v in decoder.missing_dependencies.items())
        raise DicomError(f"{path}: no decoder installed for transfer syntax {syntax.name!r} (plugins need {missing})")
    plugin = next((p for p in DECODERS.get(syntax, ()) if p in decoder.available_plugins), "")
    try:
        pixels, _ = decoder.as_array(ds, index=0, decoding_plugin=plugin)
    except Exception as e:  # plugins raise many types
        raise DicomError(f"{path}: cannot decode {syntax.name} pixel data ({_one_line(e)})") from None
    if pixels.ndim != 2:
        raise DicomError(f"{path}: expected one 2-D frame, got pixel array of shape {pixels.shape}")
    return pixels


def to_uint8(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    """Stored values -> 8-bit display values, MONOCHROME2 sense: modality LUT (rescale),
    then the VOI LUT or else the first window, as pydicom applies them, scaled to 8 bits over
    the range the VOI maps into; without VOI, over the image's own range. 8-bit images
    without any LUT are returned as stored. Integer images go through a table of their
    value range (the same numbers, ~10x faster than the per-pixel float chain)."""
    has_voi = bool(ds.get("VOILUTSequence")) or "WindowCenter" in ds
    rescale = (float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0))
    has_modality = bool(ds.get("ModalityLUTSequence")) or rescale != (1.0, 0.0)  # GDCM writes an identity rescale
    if pixels.dtype == np.uint8 and not has_voi and not has_modality:
        out = pixels
    elif pixels.dtype.kind in "iu" and pixels.size > 2**16 and int(pixels.max()) - int(pixels.min()) < 2**20:
        first = int(pixels.min())
        offsets = pixels.astype(np.int64) - first if pixels.dtype.itemsize >= 2 else pixels - np.uint8(first)
        present = np.bincount(offsets.ravel()) > 0
        table = _display(ds, np.arange(first, first + present.size), present)
        out = table[offsets]
    else:
        out = _display(ds, pixels, None)
    return 255 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


def _display(ds: pydicom.Dataset, stored: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    """The LUT chain of `to_uint8` on stored values; the image's own range is taken over the
    values `present` (all when None)."""
    values = apply_modality_lut(stored, ds)
    if ds.get("VOILUTSequence"):
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        outputs = apply_voi(np.arange(descriptor[1], descriptor[1] + (descriptor[0] or 2**16)), ds)
        values, lo, hi = apply_voi(values, ds), float(outputs.min()), float(outputs.max())
    elif "WindowCenter" in ds:
        lo, hi = (float(v) for v in apply_windowing(np.array([-np.inf, np.inf]), ds))
        values = apply_windowing(values, ds)
    else:
        shown = values if present is None else values[present]
        lo, hi = float(shown.min()), float(shown.max())
    values = values.astype(np.float64)
    scaled = (values - lo) * 255 / (hi - lo) if hi != lo else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _check_jpeg_stream(frame: bytes, path: Path) -> None:
    """Refuse a truncated frame, or one whose entropy-coded scan holds a byte sequence no
    encoder writes (0xFF must be followed by 0x00 or a restart marker): libjpeg (cv2 and
    Pillow alike) only warns on those and returns a silently damaged image."""
    end = len(frame.rstrip(b"\x00")) - 2
    if frame[end : end + 2] != b"\xff\xd9":
        raise DicomError(f"{path}: JPEG frame is truncated (no end-of-image marker)")
    sos = frame.find(b"\xff\xda")
    if sos < 0:
        raise DicomError(f"{path}: JPEG frame has no start-of-scan marker")
    scan = np.frombuffer(frame, np.uint8)[sos + 2 + int.from_bytes(frame[sos + 2 : sos + 4], "big") : end]
    after_ff = scan[1:][scan[:-1] == 0xFF]
    bad = np.flatnonzero((after_ff != 0) & ((after_ff < 0xD0) | (after_ff > 0xD7)))
    if bad.size or (scan.size and scan[-1] == 0xFF):
        raise DicomError(f"{path}: JPEG frame is corrupted ({bad.size} invalid marker(s) inside the compressed scan)")


def _decode_jpeg_baseline(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    _check_jpeg_stream(frame, path)
    pixels = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.shape != (ds.Rows, ds.Columns):
        raise DicomError(f"{path}: JPEG frame does not decode to {ds.Rows}x{ds.Columns} grayscale")
    return pixels


def read_dicom(path: str | Path) -> Radiograph:
    """Read one radiograph; raise DicomError with a one-line reason naming the file."""
    path = Path(path)
    ds = read_dataset(path)
    _check_image(ds, path)
    pixels = _decode(ds, path)
    try:
        pixels = to_uint8(ds, pixels)
    except Exception as e:  # malformed LUT or window tags
        raise DicomError(f"{path}: cannot apply its modality/VOI LUT ({_one_line(e)})") from None
    return Radiograph(pixels, image_id_of(ds, path), str(ds.get("PatientID", "")), path)


def read_image(path: str | Path) -> np.ndarray:
    """The radiograph in a DICOM file as uint8 (H, W), MONOCHROME2 sense."""
    return read_dicom(path).pixels


def write_jpeg_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    patient_id: str,
    view_position: str,
    pixel_spacing_mm: float,
    quality: int = 95,
) -> None:
    """Write an 8-bit MONOCHROME2 radiograph as a JPEG Baseline DICOM laid out like SIIM's."""
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DicomError(f"{path}: JPEG encoding failed")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.SeriesDescription = f"view: {view_position}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [f"{pixel_spacing_mm:.3f}", f"{pixel_spacing_mm:.3f}"]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg.tobytes()])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
