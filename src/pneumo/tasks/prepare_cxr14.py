"""`prepare_cxr14`: decode a ChestX-ray14 root (PNGs + label CSV) into the prepared-array
format with one 0/1 column per class, leaving out every patient that appears in the
prepared SIIM data (leakage control).

The leakage map (SIIM ImageId -> CXR-14 file) is found, not configured: `siim-to-nih.csv`
inside the SIIM root when there is one (the synthetic data and the real samples carry
theirs), else the one shipped in `data/`. When the SIIM data is real and the map matches
fewer than `min_matched` of its images, the stage fails: pretraining would silently
include SIIM patients."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pneumo.formats import cxr14, dicom
from pneumo.formats.prepared import (
    PrepareError,
    find_csv,
    find_files,
    finish,
    fresh_tmp,
    patient_split,
    resize,
    stream,
)

LABEL_CSVS = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")  # the 2017 release and its 2020 revision
MAP_NAME = "siim-to-nih.csv"


class LeakageError(RuntimeError):
    """The leakage map cannot be the map of the SIIM data at hand."""


def _decode_cxr14(job: tuple[str, int]) -> tuple[str, object]:
    path, size = job
    try:
        return "ok", (resize(cxr14.read_png(path), size), None, None)
    except cxr14.CXR14Error as e:
        return "error", str(e)
    except dicom.STOPS:
        raise
    except BaseException as e:  # one file's problem, never the run's (a decoder's panic too)
        return "error", dicom.unexpected(path, e)


def leakage_map(siim_root: Path, shipped: Path) -> Path:
    """The SIIM -> CXR-14 map: the SIIM root's own, else the shipped one."""
    own = Path(siim_root) / MAP_NAME
    return own if own.is_file() else Path(shipped)


def excluded_patients(siim_index: Path, siim_to_nih: Path, min_matched: float = 0.0) -> tuple[set[str], dict]:
    """CXR-14 patients that appear in the prepared SIIM data (leakage control), and counts:
    SIIM images, those the map matches. Raises LeakageError when the SIIM images are real
    (not the embedded phantoms) and the map matches fewer than `min_matched` of them."""
    with open(siim_index, newline="") as f:
        siim_ids = {row["image_id"] for row in csv.DictReader(f)}
    with open(siim_to_nih, newline="", encoding="utf-8-sig") as f:
        nih_of = {row["Kaggle_ID"]: row["NIH_ID"] for row in csv.DictReader(f)}
    matched = siim_ids & nih_of.keys()
    real = [i for i in siim_ids if not i.startswith(dicom.SYNTHETIC_UID_ROOT)]
    share = len(matched & set(real)) / len(real) if real else 1.0
    if real and share < min_matched:
        raise LeakageError(
            f"{siim_to_nih}: the leakage map matches {len(matched & set(real))} of the {len(real)} real SIIM images "
            f"({share:.0%} < prepare_cxr14.min_matched {min_matched:.0%}), so pretraining would include SIIM "
            f"patients. Put the map of this SIIM data (Kaggle_ID,NIH_ID) at <data.siim_root>/{MAP_NAME}, or set "
            "prepare_cxr14.exclude_siim_patients: false if its patients cannot be in CXR-14"
        )
    patients = {cxr14.patient_of(nih_of[i]) for i in matched}
    return patients, {"siim_images": len(siim_ids), "siim_matched": len(matched)}


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
    leakage: dict | None = None,
) -> dict:
    """CXR-14 root (PNGs anywhere below it: `images/`, `images_001/images/`, ...; label CSV)
    -> images.npy, index.csv with one 0/1 column per class."""
    labels_path = find_csv(root, labels_csv, LABEL_CSVS)
    table = cxr14.read_labels(labels_path, tuple(classes))
    files = find_files(root, ".png")
    if not files:
        raise PrepareError(f"{root}: no .png files found (searched recursively, any case)")
    errors = list(table.errors)
    by_name: dict[str, list[Path]] = {}
    for p in files:
        by_name.setdefault(p.stem + ".png", []).append(p)  # the label rows name them `<patient>_<n>.png`
    labelled = []
    for name, paths in sorted(by_name.items()):
        if len(paths) > 1:
            errors += [
                f"{p}: skipped: image {name} is also the file {paths[0] if p != paths[0] else paths[1]}" for p in paths
            ]
        elif name in table.labels:
            labelled.append(paths[0])
        elif name not in table.rejected:
            errors.append(f"{paths[0]}: no row in {labels_path.name}")
    excluded = [p for p in labelled if table.patients[p.stem + ".png"] in exclude_patients]
    kept_files = [p for p in labelled if table.patients[p.stem + ".png"] not in exclude_patients]
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
    names = [Path(job[0]).stem + ".png" for job, _ in kept]
    splits = patient_split([table.patients[n] for n in names], split, seed)
    rows = [(n, table.patients[n], splits[table.patients[n]], *table.labels[n].tolist()) for n in names]
    report = {
        "images": len(rows),
        **(leakage or {}),  # SIIM images, those the leakage map matched
        "excluded_leakage": len(excluded),  # CXR-14 films of SIIM patients, left out
        "excluded_leakage_patients": len({table.patients[p.stem + ".png"] for p in excluded}),
        "skipped": len(errors),
        "errors": errors,
    }
    report |= {f"{s}_images": sum(r[2] == s for r in rows) for s in split}
    return finish(tmp, out_dir, ["image_id", "patient_id", "split", *classes], rows, report, strict)
