"""SIIM-ACR run-length encoding: masks <-> the `EncodedPixels` strings of `train-rle.csv`.

The SIIM format, checked on the published file: numbers come in `start length` pairs; the
first start is a 0-based offset and every later start is the gap from the end of the
previous run ("relative" RLE); pixels are counted in column-major order (fill a flat
array of width*height, reshape to (width, height), transpose). `-1` (also ` -1` or an
empty field) means no pneumothorax. Several rows for one image are OR-ed.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EMPTY = "-1"


class RLEError(ValueError):
    """An EncodedPixels string that cannot describe a mask of the given size."""


# ASCII digits only (int() would also take '१' or '1_0'), at most 12 of them: 10^12 is far beyond
# any image's pixel count and keeps the running sums of `runs` exact in int64 (a 19-digit number
# would overflow them, or numpy's conversion)
_NUMBERS = re.compile(r"[0-9]{1,12}(?:\s+[0-9]{1,12})*", re.ASCII)
_NUMBER = re.compile(r"-?[0-9]+", re.ASCII)


def _parse(rle: str) -> np.ndarray:
    text = rle.strip()
    if text in ("", EMPTY):
        return np.zeros(0, dtype=np.int64)
    tokens = text.split()
    if not _NUMBERS.fullmatch(" ".join(tokens)):
        bad = next((t for t in tokens if not _NUMBER.fullmatch(t)), None)
        if bad is not None:
            raise RLEError(f"non-numeric token {bad[:40]!r}")
        negative = next((t for t in tokens if t.startswith("-")), None)
        if negative is not None:
            raise RLEError(f"negative number {negative[:40]}")
        raise RLEError(f"number {max(tokens, key=len)[:40]} is larger than any image (at most 12 digits)")
    if len(tokens) % 2:
        raise RLEError(f"odd count of numbers ({len(tokens)}): RLE needs start/length pairs")
    return np.array(tokens, dtype=np.int64)


def runs(rle: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Absolute (starts, ends) of the runs in column-major flat order; validated."""
    numbers = _parse(rle)
    gaps, lengths = numbers[0::2], numbers[1::2]
    if (lengths == 0).any():
        raise RLEError("run of length 0")
    ends = np.cumsum(gaps + lengths)
    starts = ends - lengths
    if ends.size and ends[-1] > height * width:
        raise RLEError(f"run ends at pixel {int(ends[-1])}, past the image end ({height * width} pixels)")
    return starts, ends


def decode(rle: str, height: int, width: int) -> np.ndarray:
    """Decode one SIIM EncodedPixels string into a bool mask of shape (height, width)."""
    return render([rle], height, width)


def encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = pneumothorax) as a relative, column-major SIIM string.

    A run that touches the first or the last pixel is kept (the widely copied Kaggle
    `mask2rle` drops a run that ends at the last pixel)."""
    flat = np.asarray(mask, dtype=bool).T.ravel()
    if not flat.any():
        return EMPTY
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat[0]:
        edges = np.concatenate(([0], edges))
    if flat[-1]:
        edges = np.concatenate((edges, [flat.size]))
    starts, ends = edges[0::2], edges[1::2]
    gaps = starts - np.concatenate(([0], ends[:-1]))
    return " ".join(np.column_stack((gaps, ends - starts)).ravel().astype(str))


@dataclass
class RLETable:
    """Rows of a SIIM mask CSV grouped by image, plus the rows that could not be used."""

    rles: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)  # images with a malformed row: no mask is trustworthy


def read_csv(path: str | Path) -> RLETable:
    """Read `ImageId, EncodedPixels` rows (header/values with or without the leading space,
    BOM and CRLF tolerated). Malformed rows become one-line errors naming the row."""
    path = Path(path)
    table = RLETable()
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != ["ImageId", "EncodedPixels"]:
            raise RLEError(f"{path}: header is {header!r}, expected 'ImageId, EncodedPixels'")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip():
                table.errors.append(f"{path}:{lineno}: expected 2 fields 'ImageId,EncodedPixels', got {row!r}")
                continue
            image_id, rle = row[0].strip(), row[1].strip()
            try:
                _parse(rle)
            except RLEError as e:
                table.errors.append(f"{path}:{lineno}: {image_id}: {e}")
                table.rejected.add(image_id)
                continue
            table.rles.setdefault(image_id, []).append(rle)
    return table


def render(rles: list[str], height: int, width: int) -> np.ndarray:
    """OR together the regions of one image (several rows = several regions, never summed).

    Returns a (height, width) view of a column-major buffer: no transpose is copied."""
    flat = np.zeros(height * width, dtype=bool)
    for text in rles:
        starts, ends = runs(text, height, width)
        lengths = ends - starts
        # index of every masked pixel without a Python loop: +1 within a run, a jump at each start
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        flat[np.arange(offsets.size) + offsets] = True
    return flat.reshape(width, height).T
