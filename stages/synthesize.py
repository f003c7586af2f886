"""DVC stage `synthesize`: write the embedded default dataset (synthetic phantoms) in the
real SIIM-ACR and ChestX-ray14 on-disk formats, pneumothoraces placed by the location map of
the real SIIM labels."""

import argparse
import json
from pathlib import Path

from pneumo import params
from pneumo.progress import log_to_stderr
from pneumo.tasks import synthesize


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--siim", type=Path, required=True, help="SIIM root to write")
    parser.add_argument("--cxr14", type=Path, required=True, help="CXR-14 root to write")
    parser.add_argument(
        "--location-map", type=Path, required=True, help="where real pneumothoraces lie (tools/location_map.py)"
    )
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    summary = synthesize.synthesize(
        siim_dir=args.siim, cxr14_dir=args.cxr14, location_map=args.location_map, seed=p["seed"], **p["synthesize"]
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
