"""DVC stage `prepare_siim`: decode the SIIM-ACR DICOMs and RLE masks under `data.siim_root`
into packed uint8 arrays + index.csv with a patient-level split."""

import argparse
import json
import logging
from pathlib import Path

from pneumo import params
from pneumo.tasks.prepare_siim import prepare_siim

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument(
    "--root", type=Path, required=True, help="SIIM root: DICOMs found recursively (stage-1 or stage-2 layout) + RLE CSV"
)
parser.add_argument("--out", type=Path, required=True, help="output folder")
parser.add_argument("--metrics", type=Path, required=True, help="counts as a DVC metrics file")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

p = params.load()
data, stage = p["data"], p["prepare_siim"]
counts = prepare_siim(
    root=args.root,
    rle_csv=stage["rle_csv"],
    out_dir=args.out,
    image_size=data["image_size"],
    split=stage["split"],
    seed=p["seed"],
    strict=data["strict"],
    workers=data["workers"],
)
args.metrics.parent.mkdir(parents=True, exist_ok=True)
args.metrics.write_text(json.dumps(counts, indent=1) + "\n")
