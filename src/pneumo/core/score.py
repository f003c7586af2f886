"""Score a SIIM submission CSV against labels in the same format (`pneumo score`).

Both files are read with `formats.rle.read_csv`; several label rows of one image are its
regions, OR-ed. The numbers are `core.metrics`' definitions: SIIM's metric is the mean over
images of Dice, an empty prediction on an empty image scoring 1. A score is all or nothing:
a malformed row, a duplicated submission row or an ImageId in one file only raises
ScoreError listing every problem, since a score over some of the images reads like a score
over all of them. `allow_missing` scores the ImageIds both files hold and counts the others.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from pneumo.core import metrics
from pneumo.formats import rle

SHOWN = 5  # ImageIds quoted in an error about ImageIds found in one file only


class ScoreError(Exception):
    """The submission cannot be scored; `problems` holds one line per reason."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _read(path: Path) -> rle.RLETable:
    try:
        return rle.read_csv(path)
    except rle.RLEError as e:  # the header; its message names the file
        raise ScoreError([str(e)]) from None
    except OSError as e:
        raise ScoreError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ScoreError([f"{path}: not UTF-8 text (byte {e.start}: {e.reason})"]) from None
    except csv.Error as e:
        raise ScoreError([f"{path}: not a CSV file: {e}"]) from None


def _row_numbers(path: Path) -> dict[tuple[str, str], list[int]]:
    """Row numbers of every (ImageId, EncodedPixels) pair, counted as read_csv counts them
    (header = row 1, blank rows included). read_csv keeps no row numbers for the rows it
    accepts, and only a problem needs them, so this second pass runs only then."""
    rows: dict[tuple[str, str], list[int]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if len(row) == 2:
                rows.setdefault((row[0].strip(), row[1].strip()), []).append(number)
    return rows


def _runs_outside(path: Path, table: rle.RLETable, height: int, width: int) -> list[str]:
    """Rows read_csv accepted that still describe no height x width mask: a run past the
    last pixel or of length 0 (read_csv checks the numbers, not the image size)."""
    bad = {}
    for image_id, texts in table.rles.items():
        for text in texts:
            try:
                rle.runs(text, height, width)
            except rle.RLEError as e:
                bad[image_id, text] = str(e)
    if not bad:
        return []
    rows = _row_numbers(path)
    found = sorted(
        (number, image_id, reason) for (image_id, text), reason in bad.items() for number in rows[image_id, text]
    )
    return [f"{path}:{number}: {image_id}: {reason}" for number, image_id, reason in found]


def _duplicates(path: Path, table: rle.RLETable) -> list[str]:
    """A submission holds one row per image: a second one would be a second opinion, not a region."""
    ids = {i for i, texts in table.rles.items() if len(texts) > 1 or i in table.rejected}
    if not ids:
        return []
    rows: dict[str, list[int]] = {}
    for (image_id, _), numbers in _row_numbers(path).items():
        if image_id in ids:
            rows.setdefault(image_id, []).extend(numbers)
    return [
        f"{path}: ImageId {image_id} on rows {', '.join(map(str, sorted(rows[image_id])))}: "
        "a submission holds one row per image"
        for image_id in sorted(ids, key=lambda i: min(rows[i]))
    ]


def _only_in(path: Path, ids: list[str], other: Path) -> str:
    shown = ", ".join(ids[:SHOWN]) + (", ..." if len(ids) > SHOWN else "")
    return f"{path}: {len(ids)} ImageId(s) not in {other}: {shown} (--allow-missing scores the ImageIds both hold)"


def score(submission: Path, labels: Path, height: int, width: int, allow_missing: bool = False) -> dict:
    """SIIM's metric, Dice on positive images (mean per image), pooled Dice and image-level
    counts of `submission` against `labels`, both SIIM RLE CSVs of height x width images.

    Raises ScoreError listing every malformed row (file:row: ImageId: reason), every
    duplicated submission ImageId and, unless `allow_missing`, the ImageIds in one file only."""
    submission, labels = Path(submission), Path(labels)
    sub, lab = _read(submission), _read(labels)
    problems = [
        *sub.errors,
        *_runs_outside(submission, sub, height, width),
        *lab.errors,
        *_runs_outside(labels, lab, height, width),
        *_duplicates(submission, sub),
    ]
    # an ImageId whose only row is malformed is reported once, as malformed
    not_in_labels = [i for i in sub.rles if i not in lab.rles and i not in lab.rejected]
    not_in_submission = [i for i in lab.rles if i not in sub.rles and i not in sub.rejected]
    if not allow_missing:
        problems += [_only_in(submission, not_in_labels, labels)] if not_in_labels else []
        problems += [_only_in(labels, not_in_submission, submission)] if not_in_submission else []
    ids = [i for i in lab.rles if i in sub.rles]
    if not ids and not problems:
        problems.append(f"{submission} and {labels} share no ImageId")
    if problems:
        raise ScoreError(problems)

    per_image = []
    for image_id in ids:  # one image at a time: SIIM's ~10,000 masks at 1024 px take 10 GB together
        pred, true = rle.render(sub.rles[image_id], height, width), rle.render(lab.rles[image_id], height, width)
        # render returns a transposed view of a column-major buffer; pixel counts do not depend
        # on orientation, and .T is that buffer, contiguous: 4x faster than copying it row-major
        per_image.append(metrics.pixel_counts(pred.T[None], true.T[None]))
    counts = metrics.concat_counts(per_image)
    # report_from_counts also returns an AUC of a presence score; a submission has no score,
    # only masks, so the predicted pixel count stands in and the AUC is dropped
    report = metrics.report_from_counts(counts, presence_score=counts["pred_pixels"])
    positive, predicted = counts["mask_pixels"] > 0, counts["pred_pixels"] > 0
    return {
        "siim_dice": report["siim_dice"],
        "dice_positive": None if math.isnan(report["dice_positive"]) else report["dice_positive"],
        "dice_pooled": report["dice_pooled"],
        "images": report["images"],
        "positive_images": report["positive_images"],
        "predicted_positive_images": int(predicted.sum()),
        "true_positives": int(np.sum(predicted & positive)),
        "false_positives": int(np.sum(predicted & ~positive)),
        "true_negatives": int(np.sum(~predicted & ~positive)),
        "false_negatives": int(np.sum(~predicted & positive)),
        "not_in_labels": len(not_in_labels),
        "not_in_submission": len(not_in_submission),
        "height": height,
        "width": width,
    }
