"""DVC stage `baselines`: predictions without image content scored on the test split, one
per_image.csv each, as `evaluate` writes for every U-Net: `all_empty`, and
`location_prior` (the mean training mask, thresholded on validation)."""

import argparse
import json
from pathlib import Path

from pneumo.progress import log_to_stderr
from pneumo.tasks.baselines import baselines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--siim", type=Path, required=True, help="prepared SIIM folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for <baseline>/per_image.csv")
    parser.add_argument("--metrics", type=Path, required=True, help="summary metrics JSON to write")
    args = parser.parse_args(argv)
    log_to_stderr()

    summary = baselines(siim_dir=args.siim, out_dir=args.out, metrics_path=args.metrics)
    print(json.dumps({name: round(row["dice_positive"], 4) for name, row in summary.items()}))


if __name__ == "__main__":
    main()
