"""DVC stage `prepare_siim`: decode the SIIM-ACR DICOMs and RLE masks under `data.siim_root`
into packed uint8 arrays + index.csv with a patient-level split."""

import argparse
import json
from pathlib import Path

from pneumo import params
from pneumo.formats.prepared import decode_workers
from pneumo.progress import log_to_stderr
from pneumo.tasks.prepare_siim import prepare_siim


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--root",
        type=Path,
        required=True,
        help="SIIM root: DICOMs found recursively (stage-1 or stage-2 layout) + RLE CSV",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--metrics", type=Path, required=True, help="counts as a DVC metrics file")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    counts = prepare_siim(
        root=args.root,
        rle_csv=p["prepare_siim"]["rle_csv"],
        out_dir=args.out,
        image_size=p["data"]["image_size"],
        split=p["prepare_siim"]["split"],
        seed=p["seed"],
        strict=p["data"]["strict"],
        workers=decode_workers(),  # the environment's: any count writes the same bytes
    )
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(counts, indent=1) + "\n")


if __name__ == "__main__":
    main()
