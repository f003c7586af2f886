"""DVC stage `predict_test`: a SIIM submission CSV (+ overlays) for the DICOMs under
`predict_test.input_dir`, from the run (of any variant) with the best validation SIIM Dice."""

import argparse
import json
import sys
from pathlib import Path

from pneumo import params
from pneumo.progress import log_to_stderr
from pneumo.tasks.predict_test import predict_test


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", type=Path, required=True, help="folder of test DICOMs")
    parser.add_argument("--evaluations", type=Path, required=True, help="folder of evaluate's <variant>-<run>.json")
    parser.add_argument("--models", type=Path, required=True, help="folder of the <variant>-<run> model folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    try:
        done = predict_test(
            evaluations=args.evaluations,
            models=args.models,
            variants=p["train_unet"]["variants"],
            runs=p["runs"],
            input_dir=args.input,
            out_dir=args.out,
            batch_size=p["predict_test"]["batch_size"],
            device=p["device"],
            strict=p["data"]["strict"],
        )
    except ValueError as e:  # a one-line reason (PredictError is one too)
        sys.exit(str(e))
    print(json.dumps(done))


if __name__ == "__main__":
    main()
