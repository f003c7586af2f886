"""Benchmark (not a test): `prepare_siim` throughput on the real SIIM DICOMs against the raw
JPEG decode of the same frames, and RLE decode+encode of all 12,954 published rows.

Prints one JSON line per measurement. The 10 real files are replicated under new names
to make a batch big enough to time (the content, hence the decode cost, is real).
Usage: python benchmarks/prepare.py [--copies 30] [--realdata ../shared/realdata]
"""

import argparse
import gzip
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
from common import REALDATA, emit, replicate_siim
from pydicom.encaps import generate_frames

from pneumo.formats import rle
from pneumo.tasks import prepare_siim

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--realdata", type=Path, default=REALDATA)
parser.add_argument("--copies", type=int, default=30, help="replicas of the 10 real files")
parser.add_argument("--image-size", type=int, default=256)
args = parser.parse_args()
siim = args.realdata / "siim"


with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp) / "siim"
    copies = replicate_siim(args.realdata, root, args.copies)
    n = len(copies)

    frames = [next(generate_frames(pydicom.dcmread(f).PixelData, number_of_frames=1)) for f in copies]
    t = time.perf_counter()
    for frame in frames:
        cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_UNCHANGED)
    raw = (time.perf_counter() - t) / n
    emit(measure="raw_jpeg_decode", images=n, ms_per_image=round(raw * 1e3, 2))

    t = time.perf_counter()
    for f in copies:
        ds = pydicom.dcmread(f)
        ds.pixel_array_options(decoding_plugin="pillow")  # pydicom would take gdcm or pylibjpeg first when installed
        _ = ds.pixel_array
    emit(measure="pydicom_pillow_decode", images=n, ms_per_image=round((time.perf_counter() - t) / n * 1e3, 2))

    for workers in (1, os.cpu_count() or 1):
        out = Path(tmp) / f"out{workers}"
        t = time.perf_counter()
        prepare_siim.prepare_siim(
            root=root,
            rle_csv="train-rle.csv",
            out_dir=out,
            image_size=args.image_size,
            split={"train": 0.8, "val": 0.1, "test": 0.1},
            seed=0,
            strict=True,
            workers=workers,
        )
        dt = time.perf_counter() - t
        emit(
            measure="prepare_siim",
            workers=workers,
            images=n,
            images_per_s=round(n / dt, 1),
            ms_per_image_per_core=round(dt / n * workers * 1e3, 2),
            ratio_to_raw_decode_per_core=round(dt / n * workers / raw, 2),
        )

    unpacked = Path(tmp) / "all.csv"
    with gzip.open(siim / "all-train-rle.csv.gz", "rb") as f, open(unpacked, "wb") as g:
        shutil.copyfileobj(f, g)
    t = time.perf_counter()
    table = rle.read_csv(unpacked)
    all_rows = [r for rs in table.rles.values() for r in rs]
    for r in all_rows:
        rle.encode(rle.decode(r, 1024, 1024))
    emit(measure="rle_decode_encode_all_rows", rows=len(all_rows), seconds=round(time.perf_counter() - t, 2))
