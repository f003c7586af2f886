"""The `pneumo` command line: `pneumo predict` turns DICOMs into a SIIM submission CSV,
`pneumo score` scores such a CSV against labels in the same format.

Nothing heavy is imported at module level: `pneumo predict` checks its paths and model folder
before torch is imported (seconds), so a typo is answered at once. Any error nobody foresaw
ends in one line and exit code 3 (`--debug` adds the traceback), never a bare traceback."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import textwrap
import traceback
from pathlib import Path

from pneumo import __version__

UNEXPECTED = 3  # the exit code of an error nobody foresaw: a bug, reported in one line
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
MASK_FORMATS = ("dicom-seg", "nifti", "png")  # formats.masks.FORMATS, named here without importing it

PREDICT_EXIT_CODES = """\
exit codes:
  0  every input file predicted, or an identical copy of a predicted file
     (listed in OUT.duplicates.csv)
  1  some files refused, each listed with its reason on stderr and in
     OUT.errors.csv; every other file predicted
  2  nothing predicted, nothing written: bad arguments, a missing input,
     no input file, a missing or unusable model folder, no such device,
     or every input file refused
  3  an unexpected error (a bug; one line, --debug prints the traceback)

example:
  pneumo predict --model models/unet/100/labels-0 data/siim/dicom-images-test \\
      --out submission.csv --overlays overlays/
"""

SCORE_EXIT_CODES = """\
exit codes:
  0  scored
  2  not scored: bad arguments, an unreadable file, malformed rows, a
     duplicated submission ImageId, ImageIds in one file only without
     --allow-missing
  3  an unexpected error (a bug; one line, --debug prints the traceback)

example:
  pneumo score submission.csv data/siim/train-rle.csv --json
"""


class _Formatter(argparse.HelpFormatter):
    """Paragraphs wrapped to the terminal, indented lines kept as written: the exit-code table and
    the examples stay on their own lines, and no path or flag is split at a hyphen."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            line if not line or line[0].isspace() else textwrap.fill(line, width, **self._wrap(indent))
            for line in text.splitlines()
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    @staticmethod
    def _wrap(indent: str) -> dict:
        return {
            "initial_indent": indent,
            "subsequent_indent": indent,
            "break_on_hyphens": False,
            "break_long_words": False,
        }


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (argparse's 2 for bad arguments, 0 for --help)."""
    parser = argparse.ArgumentParser(
        prog="pneumo",
        formatter_class=_Formatter,
        description="Pneumothorax segmentation on chest X-rays (U-Net, ResNet34 encoder). "
        "The pipeline itself runs with `dvc repro`; this command applies a trained model and scores its output.",
    )
    parser.add_argument("--version", action="version", version=f"pneumo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_predict(commands)
    _add_score(commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, bad arguments: argparse has printed why
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ours = logging.getLogger("pneumo")
    level = ours.level
    if args.debug:
        ours.setLevel(logging.DEBUG)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"pneumo {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except BaseException as e:  # the last guard (a Rust extension's panic is a BaseException): one line
        if args.debug:
            traceback.print_exc()
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        hint = "" if args.debug else "; run it again with --debug for the traceback"
        print(f"pneumo {args.command}: unexpected error: {reason} (a bug: please report it{hint})", file=sys.stderr)
        return UNEXPECTED
    finally:
        ours.setLevel(level)  # main() called in-process (tests, notebooks) leaves no --debug behind


def _add_predict(commands) -> None:
    p = commands.add_parser(
        "predict",
        formatter_class=_Formatter,
        help="predict pneumothorax masks for DICOM files and write a SIIM submission CSV",
        description="Predict a pneumothorax mask for every DICOM given (files, or folders searched "
        "recursively, e.g. SIIM's dicom-images-test/) and write one CSV row per image: "
        "ImageId (the SOPInstanceUID), EncodedPixels (SIIM's relative column-major RLE, -1 when empty). "
        "Grayscale single-frame images in any transfer syntax pydicom's plugins decode are read; the others "
        "(colour, multi-frame, no pixel data, truncated, unsupported syntax, malformed header values, a "
        "SOPInstanceUID that is no valid DICOM UID, unreadable) are listed with their "
        "reason on stderr and in OUT.errors.csv, and claim no ImageId. Files sharing one ImageId are decoded and "
        "compared: identical pixels are one image, predicted once from the first file in path order, the other "
        "files listed in OUT.duplicates.csv with the file used; if the pixels differ, all are refused, each naming "
        "the others, since one row cannot say which is right. OUT.files.csv maps each row to its file. "
        "--masks and --probabilities add each film's mask files and probability map, named by its ImageId, at its "
        "own rows and columns, each mask exactly the pixels of its RLE (docs/predict.md). "
        "Outputs are written only inside OUT's folder, --overlays and --masks-dir.",
        epilog=PREDICT_EXIT_CODES,
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
        help="model folder written by the pipeline (model.safetensors + postprocess.json), "
        "e.g. models/unet/100/labels-0",
    )
    p.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    p.add_argument(
        "--overlays",
        type=Path,
        help="also write a PNG per image with the predicted outline, "
        "and index.html, a contact sheet of them, into this folder",
    )
    p.add_argument(
        "--masks",
        type=_mask_formats,
        action="extend",
        default=[],
        metavar="{dicom-seg,nifti,png}",
        help="also write each film's mask in these formats, comma-separated or repeated: dicom-seg "
        "(<ImageId>.seg.dcm, a DICOM Segmentation referencing the film), nifti (<ImageId>.nii.gz), png "
        "(<ImageId>.png, 0/255); dicom-seg and nifti need pip install 'pneumo[interop]'",
    )
    p.add_argument(
        "--masks-dir",
        type=Path,
        metavar="DIR",
        help="folder for --masks and --probabilities (default: masks, beside OUT)",
    )
    p.add_argument(
        "--probabilities",
        action="store_true",
        help="also write each film's probability map, <ImageId>.probability.png: 8-bit, round(255 x probability)",
    )
    p.add_argument("--batch-size", type=_positive, default=16, help="images per forward pass (default 16)")
    p.add_argument(
        "--device",
        type=_device,
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="auto (CUDA when available, the default), cpu, cuda or cuda:N",
    )
    p.add_argument("--debug", action="store_true", help="on an unexpected error, print the traceback")
    p.set_defaults(run=_predict)


def _predict(args: argparse.Namespace) -> int:
    # numpy, OpenCV and pydicom only: torch is imported inside predict(), after its preflight
    from pneumo.core.predict import PredictError, predict

    # highdicom logs each attribute it copies into a SEG at INFO: a dozen lines per film
    highdicom = logging.getLogger("highdicom")
    level = highdicom.level
    highdicom.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    try:
        done, errors = predict(
            model_dir=args.model,
            inputs=args.inputs,
            out_csv=args.out,
            overlays_dir=args.overlays,
            batch_size=args.batch_size,
            device=args.device,
            pattern=args.pattern,
            mask_formats=args.masks,
            masks_dir=args.masks_dir,
            probabilities=args.probabilities,
        )
    except PredictError as e:
        for problem in e.problems:
            print(f"pneumo predict: error: {problem}", file=sys.stderr)
        return 2
    finally:
        highdicom.setLevel(level)  # main() called in-process leaves the caller's logging as it was
    if not done:
        print(
            f"pneumo predict: error: nothing predicted: all {len(errors)} input file(s) refused, each named above; "
            "nothing written",
            file=sys.stderr,
        )
        return 2
    print(
        f"{done} image(s) predicted -> {args.out}; {len(errors)} file(s) not predicted"
        + (f" (listed in {args.out}.errors.csv)" if errors else ""),
        file=sys.stderr,
    )
    return 1 if errors else 0


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _device(text: str) -> str:
    """An argparse type: auto, cpu, cuda or cuda:N (whether this machine has it is checked later)."""
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: auto, cpu, cuda or cuda:N")
    return text


def _mask_formats(text: str) -> list[str]:
    """An argparse type: mask formats, comma-separated (`png,nifti`)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names or [text]:
        if name not in MASK_FORMATS:
            raise argparse.ArgumentTypeError(f"{name!r} is not a mask format: {', '.join(MASK_FORMATS)}")
    return names


def _pixels(text: str) -> int:
    """An argparse type: a positive whole number of pixels."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of pixels, got {text!r}")
    return int(text)


def _add_score(commands) -> None:
    p = commands.add_parser(
        "score",
        formatter_class=_Formatter,
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
        epilog=SCORE_EXIT_CODES,
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
    p.add_argument("--debug", action="store_true", help="on an unexpected error, print the traceback")
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
