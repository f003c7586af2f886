"""The `pneumo` command line: `pneumo predict` turns DICOMs into a SIIM submission CSV,
`pneumo score` scores such a CSV against labels in the same format."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pneumo import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pneumo",
        description="Pneumothorax segmentation on chest X-rays (U-Net, ResNet34 encoder). "
        "The pipeline itself runs with `dvc repro`; this command applies a trained model and scores its output.",
    )
    parser.add_argument("--version", action="version", version=f"pneumo {__version__}")
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
    p.set_defaults(run=_predict)
    _add_score(commands)
    args = parser.parse_args(argv)
    return args.run(args)


def _predict(args: argparse.Namespace) -> int:
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


def _pixels(text: str) -> int:
    """An argparse type: a positive whole number of pixels."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of pixels, got {text!r}")
    return int(text)


def _add_score(commands) -> None:
    p = commands.add_parser(
        "score",
        help="score a SIIM submission CSV against labels in the same format",
        description="Score SUBMISSION (ImageId,EncodedPixels: one row per image, -1 when empty, SIIM's relative "
        "column-major RLE, as `pneumo predict` writes) against LABELS in the same format (train-rle.csv: several "
        "rows of one image are its regions, OR-ed). Prints SIIM's metric (the mean over images of Dice, an empty "
        "prediction on an empty image scoring 1, so predicting nothing scores the share of empty images), the mean "
        "Dice on the images with a pneumothorax, the Dice of all pixels pooled, and image-level counts: images, "
        "positives in the labels, predicted positives, true/false positives and negatives. No AUC: a submission "
        "holds masks, not scores. Nothing is scored when a row is malformed (each one listed as FILE:ROW: ImageId: "
        "reason), when the submission has two rows for one ImageId, or when an ImageId is in one file only "
        "(counted, the first few named) unless --allow-missing.",
        epilog="exit codes: 0 scored; 2 not scored: bad arguments, an unreadable file, malformed rows, a duplicated "
        "submission ImageId, ImageIds in one file only without --allow-missing. "
        "example: pneumo score submission.csv data/siim/train-rle.csv --json",
    )
    p.add_argument("submission", type=Path, metavar="SUBMISSION", help="submission CSV: ImageId,EncodedPixels")
    p.add_argument("labels", type=Path, metavar="LABELS", help="labels CSV in the same format (train-rle.csv)")
    p.add_argument(
        "--size",
        type=_pixels,
        metavar="N",
        default=1024,
        help="image height and width in pixels the RLE counts in (default 1024: SIIM films are 1024 x 1024)",
    )
    p.add_argument(
        "--height", type=_pixels, metavar="H", help="image height in pixels, when not square (default: --size)"
    )
    p.add_argument(
        "--width", type=_pixels, metavar="W", help="image width in pixels, when not square (default: --size)"
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="score the ImageIds both files hold and say how many of the others were left out",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(run=_score)


def _score(args: argparse.Namespace) -> int:
    from pneumo.core.score import ScoreError, score  # numpy and scikit-learn only once the arguments are valid

    height, width = args.height or args.size, args.width or args.size
    try:
        result = score(args.submission, args.labels, height, width, allow_missing=args.allow_missing)
    except ScoreError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        print(f"pneumo score: error: not scored, {len(e.problems)} problem(s) above", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"submission": str(args.submission), "labels": str(args.labels), **result}))
        return 0
    r = result
    dice_positive = "n/a (no positive image)" if r["dice_positive"] is None else f"{r['dice_positive']:.4f}"
    rows = [
        ("SIIM metric (mean Dice, empty/empty = 1)", f"{r['siim_dice']:.4f}"),
        ("Dice on positive images (mean)", dice_positive),
        ("Dice pooled over all pixels", f"{r['dice_pooled']:.4f}"),
        ("images scored", r["images"]),
        ("positive in labels", r["positive_images"]),
        ("predicted positive", r["predicted_positive_images"]),
        ("true / false positives", f"{r['true_positives']} / {r['false_positives']}"),
        ("true / false negatives", f"{r['true_negatives']} / {r['false_negatives']}"),
    ]
    if args.allow_missing:
        rows.append(("left out: not in labels / not in submission", f"{r['not_in_labels']} / {r['not_in_submission']}"))
    print(f"{args.submission} against {args.labels}, images {height} x {width} (height x width)")
    for name, value in rows:
        print(f"  {name:<46}{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
