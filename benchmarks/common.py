"""Shared by the benchmark scripts: where the real samples are, the real SIIM files
replicated into a batch big enough to time, and one JSON line per measurement."""

import json
import shutil
from pathlib import Path

from pneumo.formats import rle

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def replicate_siim(realdata: Path, root: Path, copies: int) -> list[Path]:
    """The 10 real SIIM DICOMs copied `copies` times under new names, with their RLE rows,
    as a SIIM root (dicom-images-train/ + train-rle.csv): real content, hence real decode cost."""
    siim = realdata / "siim"
    files = sorted((siim / "dicom-images-train").rglob("*.dcm"))
    rows = rle.read_csv(siim / "train-rle.csv").rles
    lines = ["ImageId, EncodedPixels"]
    for k in range(copies):
        for f in files:
            dest = root / "dicom-images-train" / f"s{k}" / f"{f.stem}.{k}.dcm"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
            lines += [f"{f.stem}.{k},{r}" for r in rows[f.stem]]
    (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
    return sorted(root.rglob("*.dcm"))
