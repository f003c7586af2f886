"""Prepare stages: decode a SIIM or CXR-14 root into packed, memory-mappable uint8 arrays
plus an index CSV, with a patient-level split.

Decoding runs in a process pool and streams into `np.lib.format.open_memmap`, so peak
memory does not grow with the number of images. Everything is written to a temporary
folder that is renamed into place at the end: a run killed half-way leaves nothing DVC
would accept. Bad inputs become one-line errors naming the file or row; with
`strict=False` they are skipped, counted and listed in `report.json`, and every good
input still comes out.
"""

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
from tqdm import tqdm

from pneumo import cxr14, dicom, rle

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


def _decode_siim(job: tuple[str, list[str] | None, int]) -> tuple[str, object]:
    path, rles, size = job
    try:
        image = dicom.read_dicom(path)
        if rles is None:
            return "error", f"{path}: image {image.image_id} has no row in the RLE CSV"
        h, w = image.pixels.shape
        small = resize_mask(rle.render(rles, h, w), size)  # labels are those of the working resolution
        return "ok", (image.image_id, image.patient_id, resize(image.pixels, size), small, int(small.any()))
    except (dicom.DicomError, rle.RLEError) as e:
        return "error", f"{path}: {e}" if str(path) not in str(e) else str(e)


def _decode_cxr14(job: tuple[str, int]) -> tuple[str, object]:
    path, size = job
    try:
        return "ok", resize(cxr14.read_png(path), size)
    except cxr14.CXR14Error as e:
        return "error", str(e)


def _stream(jobs: list, decode: Callable, size: int, out_dir: Path, workers: int, desc: str, with_masks: bool):
    """Decode jobs in order across processes, writing good images into memmaps."""
    n = len(jobs)
    images = np.lib.format.open_memmap(out_dir / "images.npy", "w+", np.uint8, (n, size, size))
    masks = np.lib.format.open_memmap(out_dir / "masks.npy", "w+", np.uint8, (n, size, size)) if with_masks else None
    kept, errors, count = [], [], 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(decode, jobs, chunksize=8) if workers > 1 else map(decode, jobs)
        for job, (status, value) in tqdm(zip(jobs, results, strict=False), total=n, desc=desc, disable=None):
            if status == "error":
                errors.append(value)
                continue
            if with_masks:
                images[count], masks[count] = value[2], value[3]
            else:
                images[count] = value
            kept.append((job, value))
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


def _finish(tmp: Path, out_dir: Path, index_header: list[str], index_rows: list, report: dict, strict: bool) -> dict:
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


def _fresh_tmp(out_dir: Path) -> Path:
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def prepare_siim(
    *,
    root: Path,
    rle_csv: str,
    out_dir: Path,
    image_size: int,
    split: dict[str, float],
    seed: int,
    strict: bool,
    workers: int,
) -> dict:
    """SIIM root (dicom-images-train/**.dcm + RLE CSV) -> images.npy, masks.npy, index.csv."""
    table = rle.read_csv(root / rle_csv)
    files = sorted((root / "dicom-images-train").rglob("*.dcm"), key=lambda p: p.stem)
    if not files:
        raise PrepareError(f"{root / 'dicom-images-train'}: no .dcm files found")
    # an image with a malformed row would get a mask missing that region: skip it instead
    rejected = [f"{p}: skipped: its RLE CSV has a malformed row" for p in files if p.stem in table.rejected]
    files = [p for p in files if p.stem not in table.rejected]
    jobs = [(str(p), table.rles.get(p.stem), image_size) for p in files]
    tmp = _fresh_tmp(out_dir)
    kept, errors = _stream(jobs, _decode_siim, image_size, tmp, workers, "prepare_siim", with_masks=True)
    seen = {p.stem for p in files} | table.rejected
    errors = (
        table.errors
        + rejected
        + errors
        + [f"{root / rle_csv}: row for image {i} has no DICOM file" for i in table.rles if i not in seen]
    )
    values = [v for _, v in kept]
    splits = patient_split([v[1] for v in values], split, seed)
    rows = [(v[0], v[1], splits[v[1]], v[4], int(v[3].sum())) for v in values]
    report = {
        "images": len(rows),
        "positive": sum(r[3] for r in rows),
        # positives that image_size shows with fewer than SMALL_MASK_PIXELS pixels: hard to learn or score
        f"positive_below_{SMALL_MASK_PIXELS}px": sum(0 < r[4] < SMALL_MASK_PIXELS for r in rows),
        "skipped": len(errors),
        "errors": errors,
    }
    report |= {f"{s}_images": sum(r[2] == s for r in rows) for s in split}
    report |= {f"{s}_positive": sum(r[2] == s and r[3] for r in rows) for s in split}
    return _finish(
        tmp, out_dir, ["image_id", "patient_id", "split", "has_pneumothorax", "mask_pixels"], rows, report, strict
    )


def excluded_patients(siim_index: Path, siim_to_nih: Path) -> set[str]:
    """CXR-14 patients that appear in the prepared SIIM data (leakage control)."""
    with open(siim_index, newline="") as f:
        siim_ids = {row["image_id"] for row in csv.DictReader(f)}
    with open(siim_to_nih, newline="", encoding="utf-8-sig") as f:
        return {cxr14.patient_of(row["NIH_ID"]) for row in csv.DictReader(f) if row["Kaggle_ID"] in siim_ids}


def prepare_cxr14(
    *,
    root: Path,
    labels_csv: str,
    out_dir: Path,
    image_size: int,
    classes: list[str],
    max_images: int,
    split: dict[str, float],
    seed: int,
    strict: bool,
    workers: int,
    exclude_patients: set[str],
) -> dict:
    """CXR-14 root (images/*.png + label CSV) -> images.npy, index.csv with one 0/1 column per class."""
    table = cxr14.read_labels(root / labels_csv, tuple(classes))
    files = sorted((root / "images").glob("*.png"))
    if not files:
        raise PrepareError(f"{root / 'images'}: no .png files found")
    errors = list(table.errors)
    labelled = []
    for p in files:
        if p.name in table.labels:
            labelled.append(p)
        elif p.name not in table.rejected:
            errors.append(f"{p}: no row in {labels_csv}")
    excluded = [p for p in labelled if table.patients[p.name] in exclude_patients]
    kept_files = [p for p in labelled if table.patients[p.name] not in exclude_patients]
    if max_images and len(kept_files) > max_images:
        pick = np.sort(np.random.default_rng(seed).choice(len(kept_files), max_images, replace=False))
        kept_files = [kept_files[i] for i in pick]
    tmp = _fresh_tmp(out_dir)
    kept, decode_errors = _stream(
        [(str(p), image_size) for p in kept_files],
        _decode_cxr14,
        image_size,
        tmp,
        workers,
        "prepare_cxr14",
        with_masks=False,
    )
    errors += decode_errors
    names = [Path(job[0]).name for job, _ in kept]
    splits = patient_split([table.patients[n] for n in names], split, seed)
    rows = [(n, table.patients[n], splits[table.patients[n]], *table.labels[n].tolist()) for n in names]
    report = {"images": len(rows), "excluded_leakage": len(excluded), "skipped": len(errors), "errors": errors}
    report |= {f"{s}_images": sum(r[2] == s for r in rows) for s in split}
    return _finish(tmp, out_dir, ["image_id", "patient_id", "split", *classes], rows, report, strict)


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
