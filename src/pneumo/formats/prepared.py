"""The prepared-array format between the prepare stages and everything after them:
`images.npy` (N, S, S uint8, memory-mappable), `masks.npy` (SIIM only, 0/1) and
`index.csv` (image_id, patient_id, split, labels), written into a temporary folder that is
renamed into place at the end, so a killed run leaves nothing DVC would accept. Also the
rules that define it: image and mask resizing, the patient-level split."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from pneumo.progress import progress

SMALL_MASK_PIXELS = 4  # a positive mask below this many pixels at the working size is counted apart


class PrepareError(RuntimeError):
    """Raised in strict mode when any input was bad; lists every problem."""


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 image to size x size (area averaging when shrinking)."""
    if pixels.shape == (size, size):
        return pixels
    shrink = pixels.shape[0] >= size and pixels.shape[1] >= size
    return cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a 0/1 mask to size x size without erasing small findings.

    Each small pixel's coverage is the share of it the full-size mask covers (area
    averaging). Pixels at least half covered are kept, the usual rule; but a region (a
    connected patch of covered pixels) none of whose pixels reaches half coverage would
    vanish, turning a labelled pneumothorax into an empty image that training and scoring
    then treat as negative. Such a region keeps its most-covered pixels, as many as its
    area in small pixels (at least one): the label survives and its area is kept, so image
    labels and masks agree at the working resolution and a region is never grown beyond
    its own footprint."""
    if not mask.any():
        return np.zeros((size, size), np.uint8)
    # masks from rle.render are transposed views of column-major buffers; area resizing to a
    # square commutes with transposition, so resize the contiguous buffer instead of copying
    transposed = not mask.flags.c_contiguous and mask.T.flags.c_contiguous
    source = mask.T if transposed else mask
    coverage = resize((source != 0).astype(np.float32), size)
    small = coverage >= 0.5
    count, regions = cv2.connectedComponents((coverage > 0).astype(np.uint8), connectivity=8)
    kept = np.unique(regions[small])
    for k in np.setdiff1d(np.arange(1, count), kept):  # regions that would vanish
        pixels = np.flatnonzero(regions == k)
        share = coverage.flat[pixels]
        n_keep = max(1, int(round(float(share.sum()))))
        small.flat[pixels[np.argsort(-share, kind="stable")[:n_keep]]] = True
    small = small.astype(np.uint8)
    return small.T.copy() if transposed else small


def patient_split(patients: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each patient to a split (all images of a patient in one split), seeded."""
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    bounds = np.cumsum([fractions[name] for name in fractions]) / sum(fractions.values()) * len(unique)
    names = list(fractions)
    return {unique[k]: names[int(np.searchsorted(bounds, rank, side="right"))] for rank, k in enumerate(order)}


def stream(jobs: list, decode: Callable, size: int, out_dir: Path, workers: int, desc: str, with_masks: bool):
    """Decode jobs in order across processes, writing good images into memmaps. `decode(job)`
    returns ("ok", (image, mask or None, meta)) or ("error", message); returns the
    [(job, meta)] of the good ones and the error messages."""
    n = len(jobs)
    images = np.lib.format.open_memmap(out_dir / "images.npy", "w+", np.uint8, (n, size, size))
    masks = np.lib.format.open_memmap(out_dir / "masks.npy", "w+", np.uint8, (n, size, size)) if with_masks else None
    kept, errors, count = [], [], 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(decode, jobs, chunksize=8) if workers > 1 else map(decode, jobs)
        for job, (status, value) in progress(zip(jobs, results, strict=False), desc, total=n, unit="files"):
            if status == "error":
                errors.append(value)
                continue
            image, mask, meta = value
            images[count] = image
            if with_masks:
                masks[count] = mask
            kept.append((job, meta))  # the pixels live in the memmaps only: memory stays flat in N
            count += 1
    for name, array in (("images.npy", images), ("masks.npy", masks)):
        if array is not None and count < n:  # drop the slots of skipped files
            array.flush()
            compact = np.lib.format.open_memmap(out_dir / f"{name}.part", "w+", np.uint8, (count, size, size))
            compact[:] = array[:count]
            compact.flush()
            del compact
            os.replace(out_dir / f"{name}.part", out_dir / name)
    return kept, errors


def finish(tmp: Path, out_dir: Path, index_header: list[str], index_rows: list, report: dict, strict: bool) -> dict:
    if strict and report["errors"]:
        shutil.rmtree(tmp)
        raise PrepareError(f"{len(report['errors'])} bad input(s) (data.strict=true):\n" + "\n".join(report["errors"]))
    with open(tmp / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(index_header)
        writer.writerows(index_rows)
    with open(tmp / "report.json", "w") as f:
        json.dump(report, f, indent=1)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return {k: v for k, v in report.items() if k != "errors"}


def fresh_tmp(out_dir: Path) -> Path:
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def load_prepared(folder: Path) -> tuple[np.ndarray, np.ndarray | None, list[dict]]:
    """(images memmap, masks memmap or None, index rows) of a prepared folder."""
    folder = Path(folder)
    images = np.load(folder / "images.npy", mmap_mode="r")
    masks = np.load(folder / "masks.npy", mmap_mode="r") if (folder / "masks.npy").exists() else None
    with open(folder / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(images):
        raise PrepareError(f"{folder}: index.csv has {len(rows)} rows for {len(images)} images")
    return images, masks, rows


def split_indices(rows: list[dict], split: str) -> np.ndarray:
    return np.array([i for i, r in enumerate(rows) if r["split"] == split], dtype=np.int64)


def find_files(root: Path, suffix: str) -> list[Path]:
    """Files under `root` (recursively) whose extension is `suffix` in any case, sorted: the
    published datasets unpack into different layouts (`images/`, `images_001/images/`,
    `dicom-images-train/<study>/<series>/`, a flat `stage_2_images/`) and upper-case names."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() == suffix and p.is_file())


def find_csv(root: Path, name: str, published: tuple[str, ...]) -> Path:
    """`root/name`, or else the one of the `published` names of that file present in `root`."""
    for candidate in (name, *published):
        if (Path(root) / candidate).is_file():
            return Path(root) / candidate
    raise PrepareError(f"{root}: no label CSV: neither {name!r} nor any of {list(published)} is there")
