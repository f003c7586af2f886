"""`prepare_cxr14`: decode a ChestX-ray14 root (PNGs + label CSV) into the prepared-array
format with one 0/1 column per class, leaving out every patient that appears in the
prepared SIIM data (leakage control)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pneumo.formats import cxr14
from pneumo.formats.prepared import PrepareError, finish, fresh_tmp, patient_split, resize, stream


def _decode_cxr14(job: tuple[str, int]) -> tuple[str, object]:
    path, size = job
    try:
        return "ok", resize(cxr14.read_png(path), size)
    except cxr14.CXR14Error as e:
        return "error", str(e)


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
    tmp = fresh_tmp(out_dir)
    kept, decode_errors = stream(
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
    return finish(tmp, out_dir, ["image_id", "patient_id", "split", *classes], rows, report, strict)
