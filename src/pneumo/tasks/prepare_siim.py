"""`prepare_siim`: decode a SIIM root (DICOMs + RLE CSV) into the prepared-array format,
with a patient-level split.

Decoding runs in a process pool and streams into memory maps, so peak memory does not grow
with the number of images. Bad inputs become one-line errors naming the file or row, whatever
decoding one file raises; with `strict=False` they are skipped, counted and listed in
`report.json`, and every good input still comes out."""

from __future__ import annotations

from pathlib import Path

from pneumo.formats import dicom, rle
from pneumo.formats.prepared import (
    SMALL_MASK_PIXELS,
    PrepareError,
    find_csv,
    find_files,
    finish,
    fresh_tmp,
    patient_split,
    resize,
    resize_mask,
    stream,
)


def _decode_siim(job: tuple[str, list[str] | None, int]) -> tuple[str, object]:
    path, rles, size = job
    try:
        image = dicom.read_dicom(path)
        if rles is None:
            return "error", f"{path}: image {Path(path).stem} has no row in the RLE CSV (rows name files)"
        h, w = image.pixels.shape
        small = resize_mask(rle.render(rles, h, w), size)  # labels are those of the working resolution
        return "ok", (
            resize(image.pixels, size),
            small,
            (image.image_id, image.patient_id, int(small.any()), int(small.sum())),
        )
    except (dicom.DicomError, rle.RLEError) as e:
        return "error", f"{path}: {e}" if str(path) not in str(e) else str(e)
    except dicom.STOPS:
        raise
    except BaseException as e:  # one file's problem, never the run's (a decoder's panic too)
        return "error", dicom.unexpected(path, e)


RLE_CSVS = ("train-rle.csv", "stage_2_train.csv")  # the stage-1 and stage-2 names of SIIM's mask CSV


def prepare_siim(
    *,
    root: Path,
    rle_csv: str,
    out_dir: Path,
    image_size: int,
    split: dict[str, float],
    seed: int,
    strict: bool,
    workers: int,
) -> dict:
    """SIIM root (DICOMs anywhere below it + RLE CSV) -> images.npy, masks.npy, index.csv.

    Both published layouts work: stage 1 (`dicom-images-train/<study>/<series>/<id>.dcm`,
    `train-rle.csv`) and stage 2 (flat `stage_2_images/`, `stage_2_train.csv`). A file is
    matched to its rows by name (`<ImageId>.dcm`, any case). Top-level folders where no file
    has a row (`dicom-images-test/`) are unlabelled test images: counted, not read."""
    csv_path = find_csv(root, rle_csv, RLE_CSVS)
    table = rle.read_csv(csv_path)
    found = find_files(root, ".dcm")
    if not found:
        raise PrepareError(f"{root}: no .dcm files found (searched recursively, any case)")

    def top(p: Path) -> str:
        parts = p.relative_to(root).parts
        return parts[0] if len(parts) > 1 else "."

    named = set(table.rles) | table.rejected
    labelled = {top(p) for p in found if p.stem in named}
    if not labelled:
        raise PrepareError(f"{root}: none of its {len(found)} .dcm files is named by a row of {csv_path}")
    files = [p for p in found if top(p) in labelled]
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    duplicates = [
        f"{p}: skipped: image {stem} is also the file {', '.join(str(q) for q in paths if q != p)}"
        for stem, paths in by_stem.items()
        if len(paths) > 1
        for p in paths
    ]
    files = [p for p in files if len(by_stem[p.stem]) == 1]
    # an image with a malformed row would get a mask missing that region: skip it instead
    rejected = [f"{p}: skipped: its RLE CSV has a malformed row" for p in files if p.stem in table.rejected]
    files = sorted((p for p in files if p.stem not in table.rejected), key=lambda p: p.stem)
    jobs = [(str(p), table.rles.get(p.stem), image_size) for p in files]
    tmp = fresh_tmp(out_dir)
    kept, errors = stream(jobs, _decode_siim, image_size, tmp, workers, "prepare_siim", with_masks=True)
    errors = (
        table.errors
        + duplicates
        + rejected
        + errors
        + [f"{csv_path}: row for image {i} has no DICOM file" for i in table.rles if i not in by_stem]
    )
    values = [v for _, v in kept]
    splits = patient_split([v[1] for v in values], split, seed)
    rows = [(v[0], v[1], splits[v[1]], v[2], v[3]) for v in values]
    report = {
        "images": len(rows),
        "positive": sum(r[3] for r in rows),
        # positives that image_size shows with fewer than SMALL_MASK_PIXELS pixels: hard to learn or score
        f"positive_below_{SMALL_MASK_PIXELS}px": sum(0 < r[4] < SMALL_MASK_PIXELS for r in rows),
        "unlabelled_files": len(found) - sum(len(v) for v in by_stem.values()),  # test folders, not read
        "skipped": len(errors),
        "errors": errors,
    }
    report |= {f"{s}_images": sum(r[2] == s for r in rows) for s in split}
    report |= {f"{s}_positive": sum(r[2] == s and r[3] for r in rows) for s in split}
    return finish(
        tmp, out_dir, ["image_id", "patient_id", "split", "has_pneumothorax", "mask_pixels"], rows, report, strict
    )
