"""Derive the location map that `synthesize` draws pneumothorax positions from: where the
pneumothorax regions of the public SIIM-ACR training labels sit on the film.

Without it the phantoms put every pneumothorax at the apex or lateral wall of a lung that
barely moves, and a predictor that sees no image (the `location_prior` baseline) scores far
better than on real films. The map keeps only what the phantoms need: every mask row of the
label file is one region (an image's rows are its separate regions, as the phantoms write
them), and the map counts the regions' centroids (mean pixel position) on a coarse GRID x GRID
grid of normalised film coordinates: x to the image's right, y down, both 0..1, so the
patient's right lung is on the left half (x < 0.5). One CSV row per cell, empty cells included:

    x0,x1,y0,y1,regions

Centroids are placed in cells by integer arithmetic on exact pixel sums, so the file is
byte-identical on any machine (`tests/test_synthesize.py` reruns this on the real labels).

    python tools/location_map.py ../shared/realdata/siim/all-train-rle.csv.gz data/siim_location_map.csv
"""

from __future__ import annotations

import argparse
import csv
import gzip
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pneumo.formats import rle

GRID = 16  # cells per side: 64 px cells on a 1,024 px film; ~4 across a lung, so apex, wall and base differ
FILM = 1024  # every SIIM-ACR training film is 1024 x 1024


def region_cells(text: str, grid: int = GRID, film: int = FILM) -> tuple[int, int]:
    """(column, row) of the grid cell holding the centroid of one EncodedPixels region,
    measured at pixel centres: cell = floor((sum + n/2) * grid / (film * n)), in integers."""
    starts, ends = rle.runs(text, film, film)
    lengths = ends - starts
    flat = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
    cols, rows = np.divmod(flat, film)  # column-major: flat = column * height + row
    n = int(flat.size)
    return tuple(((2 * int(s.sum()) + n) * grid) // (2 * film * n) for s in (cols, rows))


def read_labels(path: Path) -> rle.RLETable:
    """A SIIM mask CSV, plain or gzipped (as ../shared/realdata ships the full one); any
    malformed row is an error."""
    with tempfile.TemporaryDirectory() as tmp:
        source = path
        if path.suffix == ".gz":
            source = Path(tmp) / path.stem
            with gzip.open(path, "rb") as f, open(source, "wb") as g:
                shutil.copyfileobj(f, g)
        table = rle.read_csv(source)
    if table.errors:
        raise ValueError(f"{path}: {len(table.errors)} malformed rows, first: {table.errors[0]}")
    return table


def location_map(rle_csv: Path, grid: int = GRID, film: int = FILM) -> np.ndarray:
    """Region centroid counts, shape (grid rows = y, grid columns = x), from a SIIM mask CSV."""
    table = read_labels(rle_csv)
    counts = np.zeros((grid, grid), np.int64)
    for rows in table.rles.values():
        for text in rows:
            if text.strip() != rle.EMPTY:
                col, row = region_cells(text, grid, film)
                counts[row, col] += 1
    return counts


def write_map(counts: np.ndarray, path: Path) -> None:
    grid = counts.shape[0]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["x0", "x1", "y0", "y1", "regions"])
        for row in range(grid):
            for col in range(grid):  # cell bounds are multiples of 1/grid: exact decimals for grid = 16
                writer.writerow(
                    [f"{col / grid:g}", f"{(col + 1) / grid:g}", f"{row / grid:g}", f"{(row + 1) / grid:g}"]
                    + [int(counts[row, col])]
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, help="SIIM train-rle CSV (1024 px films), plain or .gz")
    parser.add_argument("out", type=Path, help="location map CSV to write")
    args = parser.parse_args()
    counts = location_map(args.labels)
    write_map(counts, args.out)
    print(f"{args.out}: {int(counts.sum())} regions on a {GRID} x {GRID} grid")


if __name__ == "__main__":
    main()
