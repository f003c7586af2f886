"""Benchmark (not a test): `pneumo.dicom.read_dicom` per transfer syntax, and every
installed pydicom decoder plugin on the same files, on the real SIIM radiographs re-encoded
in each syntax (`write_as` of the tests' `tests/dicom_writers.py`), 8-bit as published and 12-bit (the 8-bit
values spread over 12 bits, as CR/DX detectors store them).

Prints one JSON line per (syntax, bits, decoder): ms per 1024x1024 image (median over the
files and repeats) and whether the decode is exact (lossless syntaxes) or its largest
error in stored values (lossy ones). JPEG Extended 12-bit has no encoder here: it is timed
on pydicom's own 12-bit test file `JPGExtended.dcm` (1024x256).
Usage: python benchmarks/dicom_decode.py [--files 3] [--repeats 5]
"""

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from common import REALDATA, emit
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
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
)

from pneumo.formats import dicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's DICOM writers
from dicom_writers import write_as  # noqa: E402

SYNTAXES = {  # syntax: encoder options (lossy ones)
    ImplicitVRLittleEndian: {},
    ExplicitVRLittleEndian: {},
    ExplicitVRBigEndian: {},
    DeflatedExplicitVRLittleEndian: {},
    RLELossless: {},
    JPEGLossless: {},
    JPEGLosslessSV1: {},
    JPEGLSLossless: {},
    JPEGLSNearLossless: {"jls_error": 2},
    JPEG2000Lossless: {},
    JPEG2000: {"j2k_cr": [20]},
}

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--realdata", type=Path, default=REALDATA)
parser.add_argument("--files", type=int, default=3, help="real SIIM files re-encoded per syntax")
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()


def twelve_bit(ds: pydicom.Dataset) -> pydicom.Dataset:
    out = copy.deepcopy(ds)
    pixels = ds.pixel_array.astype(np.uint16)
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.BitsAllocated, out.BitsStored, out.HighBit = 16, 12, 11
    out.PixelData = ((pixels << 4) | (pixels >> 4)).tobytes()
    out["PixelData"].VR = "OW"
    return out


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure(files: list[Path], truth: list[np.ndarray], syntax: str, bits: int) -> None:
    ms = statistics.median(timed(lambda f=f: dicom.read_dicom(f), args.repeats) for f in files)
    emit(syntax=pydicom.uid.UID(syntax).name, bits=bits, decoder="pneumo.read_dicom", ms_per_image=round(ms, 2))
    decoder = get_decoder(syntax)
    for plugin in sorted(decoder.available_plugins) or [""]:
        try:
            datasets = [pydicom.dcmread(f) for f in files]
            times = [
                timed(lambda d=d, p=plugin: decoder.as_array(d, index=0, decoding_plugin=p), args.repeats)
                for d in datasets
            ]
            arrays = [decoder.as_array(d, index=0, decoding_plugin=plugin)[0] for d in datasets]
        except Exception as e:
            emit(syntax=pydicom.uid.UID(syntax).name, bits=bits, decoder=plugin, error=" ".join(str(e).split())[:200])
            continue
        error = max(int(np.abs(a.astype(np.int64) - t).max()) for a, t in zip(arrays, truth, strict=True))
        emit(
            syntax=pydicom.uid.UID(syntax).name,
            bits=bits,
            decoder=plugin or "numpy",
            ms_per_image=round(statistics.median(times), 2),
            max_error=error,
        )


with tempfile.TemporaryDirectory() as tmp:
    sources = sorted((args.realdata / "siim" / "dicom-images-train").rglob("*.dcm"))[: args.files]
    originals = [pydicom.dcmread(f) for f in sources]
    measure(sources, [d.pixel_array for d in originals], JPEGBaseline8Bit, 8)  # as published: the cv2 path
    for bits, datasets in ((8, originals), (12, [twelve_bit(d) for d in originals])):
        truth = [d.pixel_array for d in datasets]
        for syntax, options in SYNTAXES.items():
            files = []
            for k, ds in enumerate(datasets):
                files.append(Path(tmp) / f"{syntax}-{bits}-{k}.dcm")
                write_as(ds, syntax, files[-1], **options)
            measure(files, truth, syntax, bits)
    extended = Path(get_testdata_file("JPGExtended.dcm"))
    measure(
        [extended],
        [get_decoder(JPEGExtended12Bit).as_array(pydicom.dcmread(extended), decoding_plugin="pylibjpeg")[0]],
        JPEGExtended12Bit,
        12,
    )
