"""DICOM writers for the tests: every transfer syntax re-encoded from the real samples, and
files without a meta header. Test-only, so they stay out of `pneumo.formats`, which every
DVC stage depends on. conftest.py hands them to test modules as fixtures."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLossless,
    JPEGLosslessSV1,
)

from pneumo.formats.dicom import DicomError

UNCOMPRESSED = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)


def write_as(source: pydicom.Dataset, syntax: str, path: Path, **options) -> None:
    """Write a grayscale dataset with its pixels re-encoded in `syntax`: how the tests make
    every transfer syntax from the real samples. Encoders: numpy for the uncompressed and
    deflated syntaxes, pydicom's RLE, pyjpegls (JPEG-LS; `jls_error` for near-lossless),
    pylibjpeg-openjpeg (JPEG 2000; `j2k_cr` for lossy) and GDCM (JPEG Lossless, process 14
    and SV1: pydicom has no encoder for it)."""
    ds = copy.deepcopy(source)
    pixels = ds.pixel_array if ds.file_meta.TransferSyntaxUID not in UNCOMPRESSED else source.pixel_array
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    if syntax in UNCOMPRESSED:
        dtype = np.dtype(f"{'u' if ds.PixelRepresentation == 0 else 'i'}{ds.BitsAllocated // 8}")
        dtype = dtype.newbyteorder(">" if syntax == ExplicitVRBigEndian else "<")
        ds.PixelData = pixels.astype(dtype).tobytes()
        ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
        ds.file_meta.TransferSyntaxUID = syntax
        for tag in ("LossyImageCompression", "LossyImageCompressionMethod"):
            ds.pop(tag, None)
        implicit, little = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
        pydicom.dcmwrite(path, ds, implicit_vr=implicit, little_endian=little, enforce_file_format=True)
    elif syntax in (JPEGLossless, JPEGLosslessSV1):
        import gdcm  # test dependency (the `dev` extra): pydicom cannot encode JPEG Lossless

        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / "plain.dcm"
            write_as(source, ExplicitVRLittleEndian, plain)
            reader = gdcm.ImageReader()
            reader.SetFileName(str(plain))
            if not reader.Read():
                raise DicomError(f"{plain}: GDCM cannot read it")
            change = gdcm.ImageChangeTransferSyntax()
            target = gdcm.TransferSyntax.JPEGLosslessProcess14_1 if syntax == JPEGLosslessSV1 else None
            change.SetTransferSyntax(gdcm.TransferSyntax(target or gdcm.TransferSyntax.JPEGLosslessProcess14))
            change.SetInput(reader.GetImage())
            if not change.Change():
                raise DicomError(f"{path}: GDCM cannot encode {UID(syntax).name}")
            writer = gdcm.ImageWriter()
            writer.SetFileName(str(path))
            writer.SetFile(reader.GetFile())
            writer.SetImage(change.GetOutput())
            if not writer.Write():
                raise DicomError(f"{path}: GDCM cannot write it")
    else:
        ds.compress(syntax, pixels, generate_instance_uid=False, **options)
        ds.save_as(path, enforce_file_format=True)


def write_without_meta(source: pydicom.Dataset, path: Path) -> None:
    """Write a dataset as older systems do: implicit VR little endian, no 128-byte preamble,
    no 'DICM' prefix, no file meta header."""
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.dcm"
        write_as(source, ImplicitVRLittleEndian, plain)
        ds = pydicom.dcmread(plain)
    ds.preamble = None
    del ds.file_meta
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pydicom.filewriter.write_dataset(pydicom.filebase.DicomFileLike(f), ds)
