"""The prepared-array format between the prepare stages and everything after them:
`images.npy` (N, S, S uint8, memory-mappable), `masks.npy` (SIIM only, 0/1) and
`index.csv` (image_id, patient_id, split, labels), written into a temporary folder that is
renamed into place at the end, so a killed run leaves nothing DVC would accept. Also the
rules that define it: image and mask resizing, the patient-level split."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from pneumo.progress import progress

log = logging.getLogger(__name__)

SMALL_MASK_PIXELS = 4  # a positive mask below this many pixels at the working size is counted apart


def decode_workers(env: dict[str, str] | None = None) -> int:
    """How many processes the prepare stages decode with: $PNEUMO_DECODE_WORKERS, else one per
    CPU core. An environment variable, not a param: the output is the same for any count, so
    setting it never reruns a stage. A malformed value is an error naming the variable."""
    text = (os.environ if env is None else env).get("PNEUMO_DECODE_WORKERS", "").strip()
    if not text:
        return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"PNEUMO_DECODE_WORKERS={text!r}: expected a whole number >= 1")
    return int(text)


class PrepareError(RuntimeError):
    """Raised in strict mode when any input was bad; lists every problem."""


def _area_sums(pixels: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Area averaging to size x size in exact integers: (sums, d), each small pixel's mean being
    sums / d. Per axis, in units where an input pixel is `size` long and an output pixel `m`
    (the input length), every boundary is an integer: input pixel i lies in output
    i * size // m, except a `right` part past that output's end, which belongs to the next.
    No float is rounded, so the result cannot depend on the CPU (OpenCV's INTER_AREA rounds
    differently in its SIMD and scalar paths)."""
    out = pixels
    for axis, dtype in ((0, np.int32), (1, np.int64)):  # int32 holds one axis's sums; both need int64
        rows = np.moveaxis(out, axis, 0)
        m = rows.shape[0]
        i = np.arange(m)
        first = i * size // m
        right = np.maximum(0, (i + 1) * size - (first + 1) * m)
        starts = np.searchsorted(first, np.arange(size))
        cut = np.flatnonzero(right)  # at most one input pixel straddles each boundary
        if not len(cut):  # an integer factor (1024 -> 64): plain block sums
            scaled = np.add.reduceat(rows, starts, axis=0, dtype=dtype) * dtype(size)
        else:
            rows = rows.astype(dtype)
            scaled = np.add.reduceat(rows * (size - right)[:, None], starts, axis=0)
            scaled[first[cut] + 1] += rows[cut] * right[cut, None]
        out = np.moveaxis(scaled, 0, axis)
    return out, pixels.shape[0] * pixels.shape[1]


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 image to size x size: exact area averaging (rounded half up) when
    shrinking, OpenCV's bit-exact bilinear otherwise; the same bytes on every CPU."""
    if pixels.shape == (size, size):
        return pixels
    if pixels.shape[0] >= size and pixels.shape[1] >= size:
        sums, d = _area_sums(pixels, size)
        return ((2 * sums + d) // (2 * d)).astype(np.uint8)
    return cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR_EXACT)


def _coverage(mask: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Share of each small pixel that a 0/1 mask covers, as exact fractions (numerators, d)."""
    if mask.shape[0] >= size and mask.shape[1] >= size:
        return _area_sums(mask, size)
    return cv2.resize(mask * np.uint8(255), (size, size), interpolation=cv2.INTER_LINEAR_EXACT).astype(np.int64), 255


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a 0/1 mask to size x size without erasing small findings.

    Each small pixel's coverage is the share of it the full-size mask covers (area
    averaging). Pixels at least half covered are kept, the usual rule; but a region (a
    connected patch of covered pixels) none of whose pixels reaches half coverage would
    vanish, turning a labelled pneumothorax into an empty image that training and scoring
    then treat as negative. Such a region keeps its most-covered pixels, as many as its
    area in small pixels (at least one): the label survives and its area is kept, so image
    labels and masks agree at the working resolution and a region is never grown beyond
    its own footprint. Coverage is computed in exact integers, so ties break the same way
    on every CPU."""
    if not mask.any():
        return np.zeros((size, size), np.uint8)
    # masks from rle.render are transposed views of column-major buffers; area resizing to a
    # square commutes with transposition, so resize the contiguous buffer instead of copying
    transposed = not mask.flags.c_contiguous and mask.T.flags.c_contiguous
    source = mask.T if transposed else mask
    covered, d = _coverage((source != 0).astype(np.uint8), size)
    small = 2 * covered >= d
    count, regions = cv2.connectedComponents((covered > 0).astype(np.uint8), connectivity=8)
    kept = np.unique(regions[small])
    for k in np.setdiff1d(np.arange(1, count), kept):  # regions that would vanish
        pixels = np.flatnonzero(regions == k)
        share = covered.flat[pixels]
        n_keep = max(1, round(int(share.sum()) / d))
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


# The CXR-14 splits any encoder trains on or selects by (pretraining, autoencoder, ssl, clustering);
# prepare_cxr14's `probe` split is the linear probe's alone, so it scores films no encoder has seen.
SEEN_SPLITS = ("train", "val")


def seen_indices(rows: list[dict]) -> np.ndarray:
    """The films of the splits an encoder may see (`SEEN_SPLITS`), in index order."""
    return np.array([i for i, r in enumerate(rows) if r["split"] in SEEN_SPLITS], dtype=np.int64)


def share_indices(rows: list[dict], share: int, split: str = "train") -> np.ndarray:
    """The films of `split` that a `share` percent subset keeps, in index order: whole
    patients, taken in the order of the SHA-256 of their id, separately among the patients
    with a finding and those without, until each group holds `share`% of its films (rounded
    up). The order depends on nothing but the ids, so the subset is the same for every
    variant and run, and nested: a smaller share is inside a larger one."""
    if not 0 < share <= 100:
        raise ValueError(f"share {share!r}: expected a percentage in (0, 100]")
    indices = split_indices(rows, split)
    if share == 100:
        return indices
    films: dict[str, list[int]] = {}
    for i in indices:
        films.setdefault(rows[i]["patient_id"], []).append(int(i))
    positive = {p: any(int(rows[i]["mask_pixels"]) > 0 for i in fs) for p, fs in films.items()}
    kept: list[int] = []
    for group in (True, False):
        patients = sorted((p for p in films if positive[p] == group), key=lambda p: hashlib.sha256(p.encode()).digest())
        want = math.ceil(share * sum(len(films[p]) for p in patients) / 100)
        taken = 0
        for p in patients:
            if taken >= want:
                break
            kept += films[p]
            taken += len(films[p])
    return np.array(sorted(kept), dtype=np.int64)


def walk_files(root: Path, keep: Callable[[Path], bool]) -> list[Path]:
    """Files under `root` (recursively) for which `keep(path)` holds, sorted. Symlinked folders
    are followed (a 42 GB `images/` usually lives on another disk; Python 3.11's `Path.rglob`
    does not descend into them), each real folder once, so a link back up the tree cannot loop.
    Paths stay under `root` as written, not resolved."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: a cycle or a second route
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        found += [p for p in (Path(folder) / f for f in files) if p.is_file() and keep(p)]
    return sorted(found)


def find_files(root: Path, suffix: str) -> list[Path]:
    """Files under `root` (recursively, through symlinked folders) whose extension is `suffix`
    in any case, sorted: the published datasets unpack into different layouts (`images/`,
    `images_001/images/`, `dicom-images-train/<study>/<series>/`, a flat `stage_2_images/`)
    and upper-case names.

    DVC hashes a dependency that is itself a symlink (or an absolute path elsewhere) by its
    target's files, but skips symlinked folders inside it (`tests/test_prepare.py` checks
    both): files there are read, yet changing them reruns nothing. Such folders get a warning."""
    for folder, dirs, _ in os.walk(root):
        for name in dirs:
            if os.path.islink(os.path.join(folder, name)):
                log.warning(
                    f"{os.path.join(folder, name)}: a symlinked folder inside the dataset root: its files are read, "
                    "but DVC does not hash them, so changing them reruns nothing. Link the root itself instead "
                    f"(or give its real path as the param): ln -s /real/dataset {root}"
                )
    return walk_files(root, lambda p: p.suffix.lower() == suffix)


def find_csv(root: Path, name: str, published: tuple[str, ...]) -> Path:
    """`root/name`, or else the one of the `published` names of that file present in `root`."""
    for candidate in (name, *published):
        if (Path(root) / candidate).is_file():
            return Path(root) / candidate
    raise PrepareError(f"{root}: no label CSV: neither {name!r} nor any of {list(published)} is there")
