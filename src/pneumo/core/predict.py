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

Every input is untrusted. No exception escapes the work on one file (reading, checking,
decoding, hashing, letterboxing, encoding its row, drawing its overlay): whatever it raises
refuses that file with one line naming it, and the run goes on. Output names are built only
from ImageIds that `formats.dicom` has validated as DICOM UIDs, and each write is checked to
resolve inside the folder the user named (`confined`); no CSV cell can start a spreadsheet
formula (`csv_cell`). A run that predicts nothing writes nothing.

The arguments are checked (`preflight`: inputs, the model folder's files, output paths)
before torch is imported, which takes seconds: that is why torch and the modules that import
it are imported inside the functions that run the model, not at the top of this module.

The model runs as a `core.predictor.Model`, the object `pneumo.load_model` gives Python callers,
so a mask from Python and a row here agree pixel for pixel. Beside the CSV, each film's mask can
be written as PNG, NIfTI and DICOM SEG files and its probability map as a PNG
(`formats.masks`, `formats.seg`), into one folder, named by ImageId, each path checked by
`confined`; each is the very mask its RLE encodes. A film whose files cannot be made (a SEG
needs its film's UIDs) is refused like an unreadable one: no row, no file.

Films of any shape are letterboxed, never squashed: the film is padded with black to a square
(the shorter side, symmetrically) and that square resized to the model's size, so anatomy keeps
its proportions; the mask is mapped back by the inverse (resize to the square, cut the padding
off), so it lies in the film's own rows x columns. A square film is padded by nothing: the same
code path, the same bytes as before letterboxing existed.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import hashlib
import html
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import cv2
import numpy as np

from pneumo.core import overlay
from pneumo.formats import dicom, masks, rle
from pneumo.formats.prepared import resize, walk_files
from pneumo.progress import progress

if TYPE_CHECKING:
    import torch

    from pneumo.core import predictor

log = logging.getLogger(__name__)
T = TypeVar("T")

OVERLAY_SIZE = 512  # overlay PNGs are downsized to this width for the contact sheet
# Letterbox padding, in the 8-bit display values `to_input` scales: black, what lies beyond the
# patient on a radiograph (air, unexposed margins), so padding looks like the borders the model
# was trained on. Checked on the 10 real SIIM samples: in their outer 20 px (left, right, top)
# the 10th percentile is 0-19 of 255 on 9 films and the median 7-83 on 8 (whole films: 109-185);
# one film has a bright processed border (median 174), no reason to pad every film grey.
PAD_VALUE = 0
MODEL_FILES = ("model.safetensors", "postprocess.json")  # train_unet writes the first, evaluate the second
MASKS_DIR = "masks"  # --masks and --probabilities write here, beside the CSV, unless told otherwise
# A CSV cell starting with one of these is run as a formula by spreadsheet programs (OWASP's
# CSV injection); a plain number such as SIIM's empty mask `-1` is not.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


class PredictError(ValueError):
    """Nothing can be predicted (exit code 2): bad inputs or outputs, no input files, no usable
    model, no such device. Holds every problem found, each one line; the message joins them."""

    def __init__(self, *problems: str):
        self.problems = list(problems)
        super().__init__("; ".join(problems))


class OutputPathError(ValueError):
    """A name that would write outside the folder the user gave."""


def find_dicoms(inputs: Iterable[str | Path], pattern: str = "*.dcm") -> list[Path]:
    """DICOM files given directly (whatever their name) or found recursively in folders (through
    symlinked folders too) by `pattern`, matched case-insensitively (`x.DCM` too), each once.
    A PredictError names every missing input, or says that nothing matched."""
    found, problems = _find(inputs, pattern)
    if problems:
        raise PredictError(*problems)
    return found


def _find(inputs: Iterable[str | Path], pattern: str) -> tuple[list[Path], list[str]]:
    inputs = [Path(i) for i in inputs]
    found: dict[Path, None] = {}
    problems = []
    for item in inputs:
        if item.is_dir():
            found.update(dict.fromkeys(walk_files(item, lambda p: _matches(p, pattern))))
        elif item.is_file():
            found[item] = None
        elif item.exists():
            problems.append(f"{item}: not a file or folder")
        else:
            problems.append(f"{item}: no such file or folder")
    if not found and not problems:
        problems.append(
            f"no input files: no file matching {pattern!r} (any case) under {', '.join(map(str, inputs))}"
            " (pass --pattern '*' for files without an extension)"
        )
    return list(found), [dicom.one_line(p) for p in problems]


def _matches(path: Path, pattern: str) -> bool:
    return fnmatch.fnmatchcase(path.name.lower(), pattern.lower())


def model_problems(model_dir: Path) -> list[str]:
    """What makes `model_dir` no model folder, from its file names alone (no torch)."""
    if not model_dir.is_dir():
        return [f"{model_dir}: no such model folder (expected e.g. models/unet/100/labels-0)"]
    missing = [n for n in MODEL_FILES if not (model_dir / n).is_file()]
    if missing:
        return [
            f"{model_dir}: not a model folder: missing {' and '.join(missing)} "
            "(train_unet writes model.safetensors, evaluate writes postprocess.json)"
        ]
    return []


def output_problems(
    out_csv: Path, overlays_dir: Path | None, masks_dir: Path | None = None, mask_formats: Sequence[str] = ()
) -> list[str]:
    """What makes the output paths unwritable before anything is computed: a folder where the
    CSV goes, a file where a folder must be, PNG masks where the overlays (also `<ImageId>.png`) go."""
    problems = []
    if out_csv.is_dir():
        problems.append(f"--out {out_csv}: is a folder; give the name of the CSV file to write")
    blocking = next((p for p in out_csv.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        problems.append(f"--out {out_csv}: {blocking} is a file, not a folder")
    if overlays_dir is not None:
        blocking = next((p for p in (overlays_dir, *overlays_dir.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            problems.append(f"--overlays {overlays_dir}: {blocking} is a file, not a folder")
    if masks_dir is not None:
        blocking = next((p for p in (masks_dir, *masks_dir.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            problems.append(f"--masks-dir {masks_dir}: {blocking} is a file, not a folder")
        if "png" in mask_formats and overlays_dir is not None and masks_dir.resolve() == overlays_dir.resolve():
            problems.append(
                f"--masks-dir {masks_dir}: the --overlays folder: PNG masks and overlays are both <ImageId>.png; "
                "give them different folders"
            )
    return problems


def preflight(
    *,
    model_dir: Path,
    inputs: Iterable[str | Path],
    pattern: str,
    out_csv: Path,
    overlays_dir: Path | None,
    masks_dir: Path | None = None,
    mask_formats: Sequence[str] = (),
) -> list[Path]:
    """The files to predict, once everything that needs no torch is checked: every input
    exists, the folders hold files matching `pattern`, the model folder has its files, the
    outputs can be written, the packages the mask formats need are installed. A PredictError
    names every problem at once."""
    files, problems = _find(inputs, pattern)
    problems += model_problems(model_dir) + output_problems(out_csv, overlays_dir, masks_dir, mask_formats)
    problems += masks.problems(mask_formats)
    if problems:
        raise PredictError(*problems)
    return files


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
        image_id = guarded(errors, path, dicom.read_image_id, path)
        if image_id is not None:
            by_id.setdefault(image_id, []).append(path)
    kept, duplicates = [], []
    for image_id, paths in sorted(by_id.items()):
        if len(paths) == 1:
            kept.append((image_id, paths[0]))
            continue
        images: dict[Path, str] = {}  # file -> hash of its pixels, never the pixels: memory stays flat
        for path in sorted(paths):
            digest = guarded(errors, path, _file_hash, path)
            if digest is not None:
                images[path] = digest
        if not images:
            continue
        if len(set(images.values())) == 1:
            first, *copies = images
            kept.append((image_id, first))
            for path in copies:
                duplicates.append((str(path), image_id, str(first)))
                log.warning(
                    dicom.one_line(f"duplicate: {path}: the same image as {first} (ImageId {image_id}), predicted once")
                )
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


def _file_hash(path: Path) -> str:
    return _pixel_hash(dicom.read_dicom(path).pixels)


def _pixel_hash(pixels: np.ndarray) -> str:
    """What identifies an image to the model: the 8-bit pixels it is given, and their shape."""
    return hashlib.blake2b(f"{pixels.shape}".encode() + pixels.tobytes(), digest_size=16).hexdigest()


def guarded(errors: list[tuple[str, str]], path: Path, work: Callable[..., T], *args) -> T | None:
    """`work(*args)` for the one file `path`, or None when it raises anything: the file is then
    refused with one line naming it (in `errors` and on stderr), so one bad file never costs
    the others their rows. A DicomError carries its own reason; anything else is a check that
    is missing, so the line says so. (Only `dicom.STOPS`, such as Ctrl-C, stop the run.)"""
    try:
        return work(*args)
    except dicom.DicomError as e:
        _error(errors, path, str(e))
    except dicom.STOPS:
        raise
    except BaseException as e:  # MemoryError, a decoder's own type or panic, a bug: still this file's alone
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        _error(errors, path, f"{path}: not predicted: unexpected {reason} (please report this file)")
    return None


def _error(errors: list[tuple[str, str]], path: Path, message: str) -> None:
    message = dicom.one_line(message)
    errors.append((str(path), message))
    log.error(f"error: {message}")


@dataclass
class _Film:
    """One film ready for the model: its radiograph, and its letterboxed square at the model
    size with the model pixels that hold it (`predictor.Film`)."""

    radiograph: dicom.Radiograph
    ready: predictor.Film


def _prepare(path: Path, model: predictor.Model) -> _Film:
    radiograph = dicom.read_dicom(path)
    return _Film(radiograph, model.prepare(radiograph.pixels))


def _batches(
    files: list[tuple[str, Path]], model: predictor.Model, batch_size: int, errors: list
) -> Iterator[list[_Film]]:
    batch = []
    for _, path in files:
        film = guarded(errors, path, _prepare, path, model)
        if film is None:
            continue
        batch.append(film)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_model(model_dir: Path, device: torch.device) -> tuple[torch.nn.Module, dict, dict]:
    """(U-Net, its metadata, post-processing thresholds) of a model folder, or a PredictError
    naming what is missing or wrong."""
    problems = model_problems(model_dir)
    if problems:
        raise PredictError(*problems)
    from pneumo.core.inference import load_unet  # torch: only once the arguments are checked

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
    import torch

    from pneumo.core import runtime

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
    mask_formats: Sequence[str] = (),
    masks_dir: Path | None = None,
    probabilities: bool = False,
) -> tuple[int, list[tuple[str, str]]]:
    """Write the submission CSV, OUT.errors.csv (file, error), OUT.files.csv (ImageId, file)
    and OUT.duplicates.csv (file, ImageId, the file predicted instead: identical copies, not
    errors); with `mask_formats` (names in `masks.FORMATS`) and `probabilities`, each film's
    mask files and probability map into `masks_dir` (default: `masks` beside the CSV); return
    (images predicted, [(file, error), ...]). When no file could be predicted nothing is written
    (each refusal is on stderr) and the count is 0. Raises PredictError when nothing can be
    predicted (bad inputs or outputs, no input files, bad model folder, a mask format whose
    package is missing, no such device), before reading any DICOM."""
    mask_formats = list(dict.fromkeys(mask_formats))
    if (mask_formats or probabilities) and masks_dir is None:
        masks_dir = out_csv.parent / MASKS_DIR
    files = preflight(
        model_dir=model_dir,
        inputs=inputs,
        pattern=pattern,
        out_csv=out_csv,
        overlays_dir=overlays_dir,
        masks_dir=masks_dir,
        mask_formats=mask_formats,
    )
    dev = device_of(device)
    from pneumo.core import predictor  # builds on this module's checks and geometry: imported once they are

    model = predictor.Model(model_dir, *load_model(model_dir, dev), dev)
    targets = _Targets(
        overlays_dir, masks_dir, masks.writers(mask_formats, model.algorithm) if mask_formats else {}, probabilities
    )
    errors: list[tuple[str, str]] = []
    identified, duplicates = identify(files, errors)
    shown: list[tuple[str, bool]] = []
    sources: list[tuple[str, str]] = []
    with contextlib.ExitStack() as stack:
        writer = None  # opened at the first row: a run that predicts nothing writes nothing
        batches = -(-len(identified) // batch_size)
        for batch, results in _predicted(model, _batches(identified, model, batch_size, errors), batches):
            for film, (mask, probs) in zip(batch, results, strict=True):
                result = guarded(errors, film.radiograph.path, _outputs, model, film, mask, probs, targets)
                if result is None:
                    continue
                row, written = result
                if writer is None:
                    out_csv.parent.mkdir(parents=True, exist_ok=True)
                    writer = csv.writer(stack.enter_context(open(out_csv, "w", newline="")))
                    writer.writerow(["ImageId", "EncodedPixels"])
                writer.writerow([csv_cell(v) for v in row])
                sources.append((row[0], str(film.radiograph.path)))
                model.met(row[0])
                for target, content in written:
                    target.write_bytes(content)
                if overlays_dir:
                    shown.append((row[0], row[1] != rle.EMPTY))
    if not sources:
        return 0, sorted(errors)
    _write_csv(out_csv.with_name(out_csv.name + ".errors.csv"), ("file", "error"), sorted(errors))
    _write_csv(out_csv.with_name(out_csv.name + ".files.csv"), ("ImageId", "file"), sources)
    _write_csv(out_csv.with_name(out_csv.name + ".duplicates.csv"), ("file", "ImageId", "same image as"), duplicates)
    if duplicates:
        log.info(f"{len(duplicates)} file(s) are copies of a predicted image: listed in {out_csv}.duplicates.csv")
    if overlays_dir and shown:
        _contact_sheet(overlays_dir, shown, model_dir)
    return len(sources), sorted(errors)


def _predicted(
    model: predictor.Model, batches: Iterable[list[_Film]], total: int
) -> Iterator[tuple[list[_Film], list[tuple[np.ndarray, np.ndarray]]]]:
    """(films, their (post-processed mask, probabilities) on the model grid) batch by batch.
    Post-processed on the model grid, where the thresholds were tuned: min_area counts model
    pixels, which scale a letterboxed film by its longer side as they scale a square film."""
    for batch in progress(batches, "predict", total=total):
        yield batch, model.forward([film.ready for film in batch])


@dataclass
class _Targets:
    """What is written beside the CSV: overlays, mask files ({suffix: writer}), probability maps."""

    overlays_dir: Path | None = None
    masks_dir: Path | None = None
    writers: dict[str, masks.Writer] = field(default_factory=dict)
    probabilities: bool = False


def _outputs(
    model: predictor.Model, film: _Film, mask: np.ndarray, probs: np.ndarray, targets: _Targets
) -> tuple[tuple[str, str], list[tuple[Path, bytes]]]:
    """(the CSV row, [(path, bytes) of its overlay, mask files and probability map]) of one film,
    everything computed and every path checked before anything is written, so a film that fails
    here leaves no trace. Every mask file holds the mask the row encodes."""
    radiograph = film.radiograph
    # the mask, not the probabilities, goes back to the film (bilinear, >= 0.5), as always
    prediction = model.at_film(film.ready, mask, probs)
    full, image_id = prediction.mask, radiograph.image_id
    row = (image_id, rle.encode(full))
    files = []
    if targets.overlays_dir:
        ok, png = cv2.imencode(".png", _overlay(radiograph, full))
        if not ok:
            raise ValueError("cannot encode its overlay as PNG")
        files.append((confined(targets.overlays_dir, f"{image_id}.png"), png.tobytes()))
    if targets.writers:
        header = dicom.read_dataset(radiograph.path, header_only=True)
        for suffix, write in targets.writers.items():
            target = confined(targets.masks_dir, f"{image_id}{suffix}")
            try:
                files.append((target, write(full, header)))
            except dicom.STOPS:
                raise
            except Exception as e:  # what its header or the writer's library refuses: this film's alone
                reason = " ".join(f"{type(e).__name__}: {e}".split())
                raise dicom.DicomError(f"{radiograph.path}: no {suffix} mask can be written ({reason})") from None
    if targets.probabilities:
        target = confined(targets.masks_dir, f"{image_id}{masks.PROBABILITY_SUFFIX}")
        files.append((target, masks.png_probabilities(prediction.probabilities)))
    return row, files


def confined(folder: Path, name: str) -> Path:
    """`folder / name` after checking that it resolves to a file directly inside `folder`, the
    folder the user gave. ImageIds are validated UIDs, which cannot leave it; this guard is
    what holds should an unchecked name ever reach a write (a `/`, `..`, an absolute path, or a
    symlink planted in the folder). Creates the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / name).resolve()
    if target.parent != folder.resolve() or name in ("", ".", ".."):
        raise OutputPathError(f"output name {dicom.shown(name)} would be written outside {folder}: refused")
    return target


def csv_cell(value: object) -> str:
    """A value as a CSV cell no spreadsheet runs as a formula: a cell that would start with
    = + - @ (or a tab or carriage return) and is not a plain number gets a leading apostrophe.
    Valid ImageIds and RLE strings never need it; file names can."""
    text = str(value)
    if text.startswith(FORMULA_START) and not NUMBER.fullmatch(text):
        return "'" + text
    return text


def _write_csv(path: Path, header: tuple[str, ...], rows: Iterable[Iterable[object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([csv_cell(v) for v in row] for row in rows)


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


def _overlay(radiograph: dicom.Radiograph, mask: np.ndarray) -> np.ndarray:
    h, w = radiograph.pixels.shape
    scale = min(1.0, OVERLAY_SIZE / max(h, w))
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(radiograph.pixels, small, interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST)
    return overlay.outline(image, [(small_mask, overlay.PREDICTION)])


def _contact_sheet(folder: Path, shown: list[tuple[str, bool]], model_dir: Path) -> None:
    tiles = "\n".join(
        f'<figure><img src="{html.escape(i)}.png" alt="{html.escape(i)}" width="256">'
        f"<figcaption>{'<b>pneumothorax</b>' if positive else 'no pneumothorax'}<br><small>{html.escape(i)}</small>"
        f"</figcaption></figure>"
        for i, positive in shown
    )
    confined(folder, "index.html").write_text(f"""<!doctype html>
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
