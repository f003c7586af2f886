"""`pneumo predict`: DICOMs -> SIIM submission CSV (+ overlay PNGs and an HTML contact sheet).

The model folder is self-describing: `model.safetensors` (weights, architecture args,
training image size) and `postprocess.json` (thresholds tuned by `evaluate`). Images are
read with the same decoder as `prepare_siim`, predicted in batches and written as they
go, so memory stays bounded for any number of inputs. Unreadable files are reported and
skipped; every other image still gets its row.
"""

from __future__ import annotations

import csv
import html
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pneumo.core import data, metrics, overlay, runtime
from pneumo.core.inference import load_unet
from pneumo.formats import dicom, rle
from pneumo.formats.prepared import resize

log = logging.getLogger(__name__)

OVERLAY_SIZE = 512  # overlay PNGs are downsized to this width for the contact sheet


def find_dicoms(inputs: Iterable[str | Path]) -> list[Path]:
    """DICOM files given directly or found recursively in folders, in SIIM order (by ImageId
    = file stem = SOPInstanceUID), each once."""
    found: dict[Path, None] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            found.update(dict.fromkeys(sorted(item.rglob("*.dcm"))))
        else:
            found[item] = None
    return sorted(found, key=lambda p: (p.stem, str(p)))


def _batches(files: list[Path], size: int, errors: list[tuple[str, str]]) -> Iterator[list[dicom.Radiograph]]:
    batch = []
    for path in files:
        try:
            batch.append(dicom.read_dicom(path))
        except dicom.DicomError as e:
            errors.append((str(path), str(e)))
            log.error(f"error: {e}")
            continue
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict(
    *,
    model_dir: Path,
    inputs: list[str | Path],
    out_csv: Path,
    overlays_dir: Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
) -> tuple[int, list[tuple[str, str]]]:
    """Write the submission CSV; return (images predicted, [(file, error), ...])."""
    dev = runtime.device_from(device)
    model, meta = load_unet(model_dir / "model.safetensors", dev)
    post = json.loads((model_dir / "postprocess.json").read_text())
    size = int(meta["image_size"])
    files = find_dicoms(inputs)
    errors: list[tuple[str, str]] = []
    shown: list[tuple[str, bool]] = []
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    if overlays_dir:
        overlays_dir.mkdir(parents=True, exist_ok=True)
    done = 0
    with open(out_csv, "w", newline="") as f, torch.no_grad():
        writer = csv.writer(f)
        writer.writerow(["ImageId", "EncodedPixels"])
        bar = tqdm(total=len(files), desc="predict", disable=None)
        for batch in _batches(files, batch_size, errors):
            small = torch.from_numpy(np.stack([resize(r.pixels, size) for r in batch]))
            probs = torch.sigmoid(model(data.to_input(small).to(dev))).float().cpu().numpy()[:, 0]
            masks = metrics.postprocess(probs, post["top"], post["min_area"], post["bottom"])
            for radiograph, mask in zip(batch, masks, strict=False):
                h, w = radiograph.pixels.shape
                full = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
                writer.writerow([radiograph.image_id, rle.encode(full)])
                if overlays_dir:
                    _write_overlay(overlays_dir, radiograph, full)
                    shown.append((radiograph.image_id, bool(full.any())))
            done += len(batch)
            bar.update(len(batch))
        bar.update(len(files) - bar.n)
        bar.close()
    errors_csv = out_csv.with_name(out_csv.name + ".errors.csv")
    with open(errors_csv, "w", newline="") as f:
        csv.writer(f).writerows([("file", "error"), *errors])
    if overlays_dir:
        _contact_sheet(overlays_dir, shown, model_dir)
    return done, errors


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
