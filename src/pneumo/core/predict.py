"""The prediction engine of `pneumo predict` and of the `predict_test` stage: DICOMs -> SIIM
submission CSV (+ overlay PNGs and an HTML contact sheet).

The model folder is self-describing: `model.safetensors` (weights, architecture args,
training image size) and `postprocess.json` (thresholds tuned by `evaluate`). Images are
read with the same decoder as `prepare_siim`, predicted in batches and written as they
go, so memory stays bounded for any number of inputs. A row's ImageId is the file's
SOPInstanceUID (SIIM's file names); OUT.files.csv says which file each row came from.
Unreadable or refused files are reported and skipped; every other image still gets its row.
Files that share an ImageId are decoded before they are compared, so a broken copy claims
nothing: identical images are predicted once (the others go to OUT.duplicates.csv), and
different images under one UID are all refused, since one row cannot say which is right.

Films of any shape are letterboxed, never squashed: the film is padded with black to a square
(the shorter side, symmetrically) and that square resized to the model's size, so anatomy keeps
its proportions; the mask is mapped back by the inverse (resize to the square, cut the padding
off), so it lies in the film's own rows x columns. A square film is padded by nothing: the same
code path, the same bytes as before letterboxing existed.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import html
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from pneumo.core import data, metrics, overlay, runtime
from pneumo.core.inference import load_unet
from pneumo.formats import dicom, rle
from pneumo.formats.prepared import resize, walk_files
from pneumo.progress import progress

log = logging.getLogger(__name__)

OVERLAY_SIZE = 512  # overlay PNGs are downsized to this width for the contact sheet
# Letterbox padding, in the 8-bit display values `to_input` scales: black, what lies beyond the
# patient on a radiograph (air, unexposed margins), so padding looks like the borders the model
# was trained on. Checked on the 10 real SIIM samples: in their outer 20 px (left, right, top)
# the 10th percentile is 0-19 of 255 on 9 films and the median 7-83 on 8 (whole films: 109-185);
# one film has a bright processed border (median 174), no reason to pad every film grey.
PAD_VALUE = 0


class PredictError(ValueError):
    """Nothing can be predicted: no input files, or no usable model (exit code 2)."""


def find_dicoms(inputs: Iterable[str | Path], pattern: str = "*.dcm") -> list[Path]:
    """DICOM files given directly (whatever their name) or found recursively in folders (through
    symlinked folders too) by `pattern`, matched case-insensitively (`x.DCM` too), each once."""
    found: dict[Path, None] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            found.update(dict.fromkeys(walk_files(item, lambda p: _matches(p, pattern))))
        elif item.is_file():
            found[item] = None
        else:
            raise PredictError(f"{item}: no such file or folder")
    if not found:
        raise PredictError(
            f"no input files: no file matching {pattern!r} (any case) under {', '.join(map(str, inputs))}"
            " (pass --pattern '*' for files without an extension)"
        )
    return list(found)


def _matches(path: Path, pattern: str) -> bool:
    return fnmatch.fnmatchcase(path.name.lower(), pattern.lower())


def identify(
    files: list[Path], errors: list[tuple[str, str]]
) -> tuple[list[tuple[str, Path]], list[tuple[str, str, str]]]:
    """(ImageId, file) to predict, in ImageId order, and the duplicates (file, ImageId, the
    file predicted instead). Files whose header is unreadable go to `errors`. A file whose
    ImageId no other header claims is kept unread (it is decoded once, when predicted). The
    files of a shared ImageId are decoded first, one at a time: those that cannot be decoded
    go to `errors` with their reason and claim nothing; if the others hold one image, the
    first (in path order) is kept and the rest are duplicates; if they hold different images,
    all go to `errors`, each naming the others (one row cannot say which is right)."""
    by_id: dict[str, list[Path]] = {}
    for path in files:
        try:
            by_id.setdefault(dicom.read_image_id(path), []).append(path)
        except dicom.DicomError as e:
            _error(errors, path, str(e))
    kept, duplicates = [], []
    for image_id, paths in sorted(by_id.items()):
        if len(paths) == 1:
            kept.append((image_id, paths[0]))
            continue
        images: dict[Path, str] = {}  # file -> hash of its pixels, never the pixels: memory stays flat
        for path in sorted(paths):
            try:
                images[path] = _pixel_hash(dicom.read_dicom(path).pixels)
            except dicom.DicomError as e:
                _error(errors, path, str(e))
        if len(set(images.values())) == 1:
            first, *copies = images
            kept.append((image_id, first))
            for path in copies:
                duplicates.append((str(path), image_id, str(first)))
                log.warning(f"duplicate: {path}: the same image as {first} (ImageId {image_id}), predicted once")
            continue
        for path in images:
            others = ", ".join(str(p) for p in images if p != path)
            _error(
                errors,
                path,
                f"{path}: ImageId {image_id} (SOPInstanceUID) is also that of {others}; these {len(images)} files "
                f"hold {len(set(images.values()))} different images: no row written",
            )
    return kept, duplicates


def _pixel_hash(pixels: np.ndarray) -> str:
    """What identifies an image to the model: the 8-bit pixels it is given, and their shape."""
    return hashlib.blake2b(f"{pixels.shape}".encode() + pixels.tobytes(), digest_size=16).hexdigest()


def _error(errors: list[tuple[str, str]], path: Path, message: str) -> None:
    errors.append((str(path), message))
    log.error(f"error: {message}")


def _batches(files: list[tuple[str, Path]], size: int, errors: list) -> Iterator[list[dicom.Radiograph]]:
    batch = []
    for _, path in files:
        try:
            batch.append(dicom.read_dicom(path))
        except dicom.DicomError as e:
            _error(errors, path, str(e))
            continue
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_model(model_dir: Path, device: torch.device) -> tuple[torch.nn.Module, dict, dict]:
    """(U-Net, its metadata, post-processing thresholds) of a model folder, or a PredictError
    naming what is missing or wrong."""
    if not model_dir.is_dir():
        raise PredictError(f"{model_dir}: no such model folder (expected e.g. models/unet/labels-0)")
    missing = [n for n in ("model.safetensors", "postprocess.json") if not (model_dir / n).is_file()]
    if missing:
        raise PredictError(
            f"{model_dir}: not a model folder: missing {' and '.join(missing)} "
            "(train_unet writes model.safetensors, evaluate writes postprocess.json)"
        )
    try:
        model, meta = load_unet(model_dir / "model.safetensors", device)
        post = json.loads((model_dir / "postprocess.json").read_text())
        thresholds = {k: post[k] for k in ("top", "min_area", "bottom")}
        int(meta["image_size"])
    except Exception as e:  # a damaged or foreign file: safetensors, json and torch raise many types
        raise PredictError(
            f"{model_dir}: unusable model folder ({' '.join(f'{type(e).__name__}: {e}'.split())})"
        ) from None
    return model, meta, thresholds


def device_of(name: str) -> torch.device:
    """auto, cpu, cuda or cuda:N, checked against what this machine has."""
    try:
        dev = runtime.device_from(name)
    except RuntimeError as e:
        if name.startswith("cuda"):  # CUDA unusable here: runtime says why (build, driver)
            raise PredictError(f"--device {name}: {e}") from None
        raise PredictError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N): {e}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (dev.index or 0) >= count:
            raise PredictError(f"--device {name}: this machine has {count} CUDA device(s)")
    elif dev.type != "cpu":
        raise PredictError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N)")
    return dev


def predict(
    *,
    model_dir: Path,
    inputs: list[str | Path],
    out_csv: Path,
    overlays_dir: Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
    pattern: str = "*.dcm",
) -> tuple[int, list[tuple[str, str]]]:
    """Write the submission CSV, OUT.errors.csv (file, error), OUT.files.csv (ImageId, file)
    and OUT.duplicates.csv (file, ImageId, the file predicted instead: identical copies, not
    errors); return (images predicted, [(file, error), ...]). Raises PredictError when
    nothing can be predicted (no input files, bad model folder, no such device)."""
    files = find_dicoms(inputs, pattern)
    dev = device_of(device)
    model, meta, post = load_model(model_dir, dev)
    size = int(meta["image_size"])
    errors: list[tuple[str, str]] = []
    identified, duplicates = identify(files, errors)
    shown: list[tuple[str, bool]] = []
    sources: list[tuple[str, str]] = []
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    if overlays_dir:
        overlays_dir.mkdir(parents=True, exist_ok=True)
    done = 0
    with open(out_csv, "w", newline="") as f, torch.no_grad():
        writer = csv.writer(f)
        writer.writerow(["ImageId", "EncodedPixels"])
        batches = -(-len(identified) // batch_size)
        for batch in progress(_batches(identified, batch_size, errors), "predict", total=batches):
            small = torch.from_numpy(np.stack([letterbox(r.pixels, size) for r in batch]))
            probs = torch.sigmoid(model(data.to_input(small).to(dev))).float().cpu().numpy()[:, 0]
            for radiograph, p in zip(batch, probs, strict=False):
                # padding holds no finding and counts nothing towards min_area: 0 exceeds no threshold
                p[~film_area(radiograph.pixels.shape, size)] = 0
            # post-processed on the model grid, where the thresholds were tuned: min_area counts model
            # pixels, which scale a letterboxed film by its longer side as they scale a square film
            masks = metrics.postprocess(probs, post["top"], post["min_area"], post["bottom"])
            for radiograph, mask in zip(batch, masks, strict=False):
                # the mask, not the probabilities, goes back to the film (bilinear, >= 0.5), as always
                full = unletterbox(mask.astype(np.float32), radiograph.pixels.shape) >= 0.5
                writer.writerow([radiograph.image_id, rle.encode(full)])
                sources.append((radiograph.image_id, str(radiograph.path)))
                if overlays_dir:
                    _write_overlay(overlays_dir, radiograph, full)
                    shown.append((radiograph.image_id, bool(full.any())))
            done += len(batch)
    with open(out_csv.with_name(out_csv.name + ".errors.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("file", "error"), *sorted(errors)])
    with open(out_csv.with_name(out_csv.name + ".files.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("ImageId", "file"), *sources])
    with open(out_csv.with_name(out_csv.name + ".duplicates.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("file", "ImageId", "same image as"), *duplicates])
    if duplicates:
        log.info(f"{len(duplicates)} file(s) are copies of a predicted image: listed in {out_csv}.duplicates.csv")
    if overlays_dir:
        _contact_sheet(overlays_dir, shown, model_dir)
    return done, sorted(errors)


def _pads(shape: tuple[int, int]) -> tuple[int, tuple[tuple[int, int], tuple[int, int]]]:
    """(side of the square, ((top, bottom), (left, right)) padding) that letterboxes a film of
    `shape` (rows, columns); the odd pixel, if any, goes after."""
    side = max(shape)
    top, left = ((side - n) // 2 for n in shape)
    return side, ((top, side - shape[0] - top), (left, side - shape[1] - left))


def letterbox(pixels: np.ndarray, size: int) -> np.ndarray:
    """A uint8 film of any shape -> size x size uint8, its aspect ratio kept: padded with
    PAD_VALUE to a square on the shorter side (symmetrically), then resized by `prepared.resize`
    (exact area averaging when shrinking, so the same bytes on every CPU). Padding before
    resizing keeps both axes on one scale (side -> size); a square film is padded by nothing."""
    _, pads = _pads(pixels.shape)
    return resize(np.pad(pixels, pads, constant_values=PAD_VALUE), size)


def unletterbox(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float map on the model's square grid (as `letterbox` made it) -> the film's `shape`
    (rows, columns): bilinear resize to the padded square, then the padding cut off. Cutting in
    the film's grid, where the padding is whole pixels, is the exact inverse of `letterbox`'s
    geometry; cutting on the model grid first would shift the map by up to half a model pixel.
    For a square film this is the bilinear resize to its size that `predict` always did."""
    side, ((top, _), (left, _)) = _pads(shape)
    square = cv2.resize(grid, (side, side), interpolation=cv2.INTER_LINEAR)
    return square[top : top + shape[0], left : left + shape[1]]


def film_area(shape: tuple[int, int], size: int) -> np.ndarray:
    """Bool size x size: the model pixels of a letterboxed film of `shape` that hold any of the
    film (those partly padding included); all of them for a square film."""
    side, ((top, _), (left, _)) = _pads(shape)
    inside = np.zeros((size, size), bool)
    rows = slice(top * size // side, -(-(top + shape[0]) * size // side))
    cols = slice(left * size // side, -(-(left + shape[1]) * size // side))
    inside[rows, cols] = True
    return inside


def _write_overlay(folder: Path, radiograph: dicom.Radiograph, mask: np.ndarray) -> None:
    h, w = radiograph.pixels.shape
    scale = min(1.0, OVERLAY_SIZE / max(h, w))
    small = (round(w * scale), round(h * scale))
    image = cv2.resize(radiograph.pixels, small, interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(folder / f"{radiograph.image_id}.png"), overlay.outline(image, [(small_mask, overlay.PREDICTION)]))


def _contact_sheet(folder: Path, shown: list[tuple[str, bool]], model_dir: Path) -> None:
    tiles = "\n".join(
        f'<figure><img src="{html.escape(i)}.png" alt="{html.escape(i)}" width="256">'
        f"<figcaption>{'<b>pneumothorax</b>' if positive else 'no pneumothorax'}<br><small>{html.escape(i)}</small>"
        f"</figcaption></figure>"
        for i, positive in shown
    )
    (folder / "index.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>pneumo predict: {len(shown)} images</title>
<style>body{{font-family:sans-serif;margin:1em}}
figure{{display:inline-block;margin:6px;width:256px;vertical-align:top}}
figcaption{{font-size:12px;word-break:break-all}} img{{border:1px solid #ccc}}</style></head>
<body><h1>Predicted pneumothorax (red outline)</h1>
<p>Model: {html.escape(str(model_dir))}. {sum(p for _, p in shown)} of {len(shown)} images predicted positive.
Research use only; not a medical device.</p>
{tiles}
</body></html>
""")
