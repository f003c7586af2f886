"""The `pneumo` command line: `pneumo predict` turns DICOMs into a SIIM submission CSV."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pneumo",
        description="Pneumothorax segmentation on chest X-rays (U-Net, ResNet34 encoder). "
        "The pipeline itself runs with `dvc repro`; this command applies a trained model.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "predict",
        help="predict pneumothorax masks for DICOM files and write a SIIM submission CSV",
        description="Predict a pneumothorax mask for every DICOM given (files, or folders searched "
        "recursively, e.g. SIIM's dicom-images-test/) and write one CSV row per image: "
        "ImageId (the SOPInstanceUID), EncodedPixels (SIIM's relative column-major RLE, -1 when empty). "
        "Grayscale single-frame images in any transfer syntax pydicom's plugins decode are read; the others "
        "(colour, multi-frame, no pixel data, truncated, unsupported syntax, unreadable) are listed with their "
        "reason on stderr and in OUT.errors.csv, and claim no ImageId. Files sharing one ImageId are decoded and "
        "compared: identical pixels are one image, predicted once from the first file in path order, the other "
        "files listed in OUT.duplicates.csv with the file used; if the pixels differ, all are refused, each naming "
        "the others, since one row cannot say which is right. OUT.files.csv maps each row to its file.",
        epilog="exit codes: 0 every file predicted, or a copy of a predicted image (OUT.duplicates.csv); "
        "1 some files listed in OUT.errors.csv, the others predicted; "
        "2 nothing predicted: bad arguments, no input files, unusable model folder or device. "
        "example: pneumo predict --model models/unet/labels-0 data/siim/dicom-images-test "
        "--out submission.csv --overlays overlays/",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM file or folder (searched recursively)")
    p.add_argument(
        "--pattern",
        default="*.dcm",
        help="file names searched for in folders, any case (default *.dcm; '*' for files without extension)",
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="model folder written by the pipeline (model.safetensors + postprocess.json), e.g. models/unet/labels-0",
    )
    p.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    p.add_argument(
        "--overlays",
        type=Path,
        help="also write a PNG per image with the predicted outline, "
        "and index.html, a contact sheet of them, into this folder",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, the default), cpu, cuda or cuda:N")
    args = parser.parse_args(argv)

    from pneumo.core.predict import PredictError, predict  # heavy imports only once the arguments are valid

    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        done, errors = predict(
            model_dir=args.model,
            inputs=args.inputs,
            out_csv=args.out,
            overlays_dir=args.overlays,
            batch_size=args.batch_size,
            device=args.device,
            pattern=args.pattern,
        )
    except PredictError as e:
        print(f"pneumo predict: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{done} image(s) predicted -> {args.out}; {len(errors)} file(s) not predicted"
        + (f" (listed in {args.out}.errors.csv)" if errors else ""),
        file=sys.stderr,
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
