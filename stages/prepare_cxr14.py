"""DVC stage `prepare_cxr14`: decode the ChestX-ray14 PNGs and labels under `data.cxr14_root`
into packed uint8 arrays + a multi-hot index.csv, leaving out every patient that appears in
the prepared SIIM data (leakage control)."""

import argparse
import json
import logging
import sys
from pathlib import Path

from pneumo import params
from pneumo.formats.prepared import decode_workers
from pneumo.progress import log_to_stderr
from pneumo.tasks.prepare_cxr14 import LeakageError, excluded_patients, leakage_map, prepare_cxr14


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--root",
        type=Path,
        required=True,
        help="CXR-14 root: PNGs found recursively (images/ or images_001/images/...) + label CSV",
    )
    parser.add_argument("--siim-index", type=Path, required=True, help="prepared SIIM index.csv")
    parser.add_argument("--siim-root", type=Path, required=True, help="SIIM root: its siim-to-nih.csv, if any, wins")
    parser.add_argument(
        "--shipped-map", type=Path, required=True, help="SIIM ImageId -> CXR-14 file map shipped in data/"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--metrics", type=Path, required=True, help="counts as a DVC metrics file")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    exclude, leakage = set(), {}
    if p["prepare_cxr14"]["exclude_siim_patients"]:
        mapping = leakage_map(args.siim_root, args.shipped_map)
        logging.getLogger("prepare_cxr14").info(f"leakage map: {mapping}")
        try:
            exclude, leakage = excluded_patients(args.siim_index, mapping, p["prepare_cxr14"]["min_matched"])
        except LeakageError as e:
            sys.exit(f"prepare_cxr14: {e}")
    counts = prepare_cxr14(
        root=args.root,
        labels_csv=p["prepare_cxr14"]["labels_csv"],
        out_dir=args.out,
        image_size=p["data"]["image_size"],
        classes=p["prepare_cxr14"]["classes"],
        max_images=p["prepare_cxr14"]["max_images"],
        split=p["prepare_cxr14"]["split"],
        seed=p["seed"],
        strict=p["data"]["strict"],
        workers=decode_workers(),  # the environment's: any count writes the same bytes
        exclude_patients=exclude,
        leakage=leakage,
    )
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(counts, indent=1) + "\n")


if __name__ == "__main__":
    main()
