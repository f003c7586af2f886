"""Chest radiograph DICOMs (SIIM-ACR layout) -> 8-bit grayscale arrays; and the writer the
synthetic generator uses, so that one reader serves real and synthetic files.

JPEG Baseline (the SIIM transfer syntax) is decoded by cv2 straight from the encapsulated
frame (~2x faster than pydicom+Pillow here, bit-identical on the real files); every other
transfer syntax goes through pydicom's own handlers. MONOCHROME1 is inverted, more than
8 stored bits are windowed to 8 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
SYNTHETIC_UID_ROOT = "1.2.826.0.1.3680043.10.1234"  # the embedded phantoms' private root: never a real study


class DicomError(ValueError):
    """A file that does not hold a readable grayscale radiograph."""


@dataclass
class Radiograph:
    pixels: np.ndarray  # uint8 (H, W), MONOCHROME2 sense: bright = dense
    image_id: str  # SOPInstanceUID, the SIIM ImageId
    patient_id: str


def _to_uint8(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float32)
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
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
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # pydicom raises many types for broken files
        raise DicomError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        raise DicomError(f"{path}: DICOM has no PixelData")
    photometric = ds.get("PhotometricInterpretation", "")
    if ds.get("SamplesPerPixel", 1) != 1 or photometric not in GRAYSCALE:
        raise DicomError(f"{path}: unsupported PhotometricInterpretation {photometric!r} (need MONOCHROME1/2)")
    try:
        syntax = ds.file_meta.TransferSyntaxUID
        if syntax == JPEGBaseline8Bit and ds.BitsAllocated == 8:
            pixels = _decode_jpeg_baseline(ds, path)
        else:
            pixels = ds.pixel_array
    except DicomError:
        raise
    except Exception as e:
        raise DicomError(f"{path}: cannot decode pixel data ({type(e).__name__}: {e})") from None
    if pixels.ndim != 2:
        raise DicomError(f"{path}: expected one 2-D frame, got pixel array of shape {pixels.shape}")
    pixels = _to_uint8(ds, pixels)
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    return Radiograph(pixels, str(ds.get("SOPInstanceUID", path.stem)), str(ds.get("PatientID", "")))


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
