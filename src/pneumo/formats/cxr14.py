"""NIH ChestX-ray14 on disk: `images/<patient>_<follow-up>.png` and `Data_Entry_2017.csv`.

The label CSV comes in two published shapes: the 2017 original (trailing comma on the
header, CRLF) and the 2020 version; the bracketed column names hold commas, so columns
are found by name in the header. `Finding Labels` is `|`-separated; `No Finding` is a
label of its own.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ALL_CLASSES = (
    "No Finding",
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
DEFAULT_CLASSES = ("No Finding", "Nodule", "Infiltration", "Effusion", "Atelectasis", "Pneumothorax")


class CXR14Error(ValueError):
    """An image or label row that cannot be used."""


def patient_of(image_index: str) -> str:
    """CXR-14 file names are `<8-digit patient>_<3-digit follow-up>.png`."""
    return image_index.split("_")[0]


def read_png(path: str | Path) -> np.ndarray:
    """Read a CXR-14 PNG (L, LA, RGB or RGBA; 8 or 16 bit) as uint8 grayscale (H, W); a
    CXR14Error naming the file for anything else, whatever OpenCV makes of it."""
    try:
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # OpenCV raises for some damaged or oversized files instead of returning None
        raise CXR14Error(f"{path}: unreadable PNG ({' '.join(str(e).split())[:200]})") from None
    if pixels is None:
        raise CXR14Error(f"{path}: unreadable or truncated PNG")
    if pixels.ndim == 3 and pixels.shape[2] in (1, 2):  # gray, gray + alpha
        pixels = pixels[:, :, 0]
    elif pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, code)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise CXR14Error(f"{path}: unsupported PNG pixel type {pixels.dtype} shape {pixels.shape}")
    return pixels


@dataclass
class LabelTable:
    """Label rows by image name: patient id and the multi-hot vector over `classes`."""

    classes: tuple[str, ...]
    patients: dict[str, str] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)  # images whose row was bad


def read_labels(path: str | Path, classes: tuple[str, ...] = DEFAULT_CLASSES) -> LabelTable:
    """Parse Data_Entry_2017(.csv|_v2020.csv) into multi-hot rows over `classes`.

    Known CXR-14 findings outside `classes` are dropped; a name that is no CXR-14 finding
    at all is an error naming the row (never silently a wrong label)."""
    path = Path(path)
    unknown = set(classes) - set(ALL_CLASSES)
    if unknown:
        raise CXR14Error(f"class list has names that are no CXR-14 finding: {sorted(unknown)}; valid: {ALL_CLASSES}")
    column = {name: i for i, name in enumerate(classes)}
    table = LabelTable(classes=tuple(classes))
    opener = _open_maybe_gzip(path)
    with opener as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        try:
            i_image, i_labels, i_patient = (header.index(n) for n in ("Image Index", "Finding Labels", "Patient ID"))
        except ValueError:
            raise CXR14Error(
                f"{path}: header lacks 'Image Index', 'Finding Labels' or 'Patient ID': {header[:4]}"
            ) from None
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                image, findings, patient = row[i_image].strip(), row[i_labels].strip(), row[i_patient].strip()
            except IndexError:
                table.errors.append(f"{path}:{lineno}: too few fields ({len(row)})")
                continue
            names = [n.strip() for n in findings.split("|") if n.strip()]
            bad = [n for n in names if n not in ALL_CLASSES]
            if bad or not names:
                table.errors.append(f"{path}:{lineno}: {image}: unknown label(s) {bad or [findings]}")
                table.rejected.add(image)
                continue
            vector = np.zeros(len(classes), dtype=np.uint8)
            vector[[column[n] for n in names if n in column]] = 1
            table.labels[image] = vector
            table.patients[image] = f"{int(patient):08d}" if patient.isdigit() else patient
    return table


def _open_maybe_gzip(path: Path):
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")
