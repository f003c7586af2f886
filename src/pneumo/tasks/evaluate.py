"""`evaluate`: one U-Net variant on the held-out SIIM test split.

Post-processing thresholds (top, min_area, bottom) are tuned on the validation split only,
then frozen for test and stored beside the weights, so `pneumo predict` applies the same.
Besides the summary it writes one row per test image (`per_image.csv`): the report
resamples those rows to put an interval on every number and every difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from pneumo.core import metrics, overlay, runtime
from pneumo.core.inference import iter_probs, load_unet
from pneumo.formats import dicom, per_image
from pneumo.formats.prepared import load_prepared, split_indices

METRIC_DEFINITIONS = """\
- `siim_dice`: SIIM-ACR's official metric: mean over images of Dice, an empty prediction
  on an empty image scoring 1 (so predicting "no pneumothorax" everywhere scores the share
  of empty images: the `all_empty` row).
- `dice_positive`: mean Dice over the images that have a pneumothorax only.
- `dice_pooled`: Dice over all pixels of all test images pooled together.
- `iou`: mean per-image IoU (empty/empty = 1).
- `auc`: image-level pneumothorax presence AUC, scored by the maximum pixel probability."""


STUDY_CITATION = (
    "*Transfer Learning for Detection and Segmentation of Pneumothorax from Chest X-ray Images* "
    "(the study this pipeline reproduces; see CITATION.cff)."
)
DATA_TERMS = """- SIIM-ACR Pneumothorax Segmentation (Kaggle, 2019; SIIM and ACR): the competition's data
  rules apply; accept them on Kaggle before downloading. The films are NIH ChestX-ray14 images.
- NIH ChestX-ray14 (NIH Clinical Center): usage unrestricted, provided the NIH download site
  is linked, the NIH Clinical Center acknowledged, and this paper cited: Wang X, Peng Y, Lu L,
  Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks
  on Weakly-Supervised Classification and Localization of Common Thorax Diseases. CVPR 2017.
- The embedded phantoms (`synthesize`) hold no patient data."""


def _empty_baseline(true_pixels: np.ndarray) -> dict:
    nothing = np.zeros_like(true_pixels)
    counts = {"mask_pixels": true_pixels, "pred_pixels": nothing, "intersection": nothing}
    row = metrics.report_from_counts(counts, np.zeros(len(true_pixels)))
    row["auc"] = 0.5  # a constant score ranks nothing
    return row


class Shown:
    """The overlay plot's images while the test split streams by: the first `n` positives,
    then negatives if there are fewer (what sorting all images positives-first would pick)."""

    def __init__(self, n: int):
        self.n, self.kept = n, {True: [], False: []}

    def offer(self, rows: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> None:
        for k, row in enumerate(rows):
            present = bool(truth[k].any())
            if len(self.kept[present]) < self.n:
                self.kept[present].append((row, np.array(truth[k], bool), pred[k]))

    def picked(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        return (self.kept[True] + self.kept[False])[: self.n]


def evaluate(
    *,
    model_path: Path,
    siim_dir: Path,
    postprocess_path: Path,
    card_path: Path,
    metrics_path: Path,
    plots_dir: Path,
    prepare_cxr14_metrics: Path,
    tops: list[float],
    min_area_fractions: list[float],
    bottoms: list[float],
    n_overlays: int,
    device: str = "auto",
    batch_size: int = 32,
) -> dict:
    dev = runtime.device_from(device)
    model, meta = load_unet(model_path, dev)
    images, masks, rows = load_prepared(siim_dir)
    val_idx, test_idx = split_indices(rows, "val"), split_indices(rows, "test")
    size = images.shape[1]
    areas = metrics.min_areas(min_area_fractions, size)
    # both splits stream batch by batch: per-image counts are kept, never the probabilities
    thresholds = sorted(set(tops) | set(bottoms))
    above, hits, val_true = [], [], []
    for idx, probs in iter_probs(model, images, val_idx, dev, batch_size, desc="evaluate: validation split"):
        truth = masks[idx]
        a, h = metrics.threshold_counts(probs, truth, thresholds)
        above.append(a)
        hits.append(h)
        val_true.append(truth.reshape(len(truth), -1).sum(1, dtype=np.int64))
    tuned = (
        metrics.best_postprocess(
            np.concatenate(above), np.concatenate(hits), np.concatenate(val_true), thresholds, tops, areas, bottoms
        )
        if len(val_idx)
        else {"score": float("nan"), "top": 0.5, "min_area": 1, "bottom": 0.5}
    )
    post = {"top": tuned["top"], "min_area": tuned["min_area"], "bottom": tuned["bottom"], "image_size": size}
    counts, scores, shown = [], [], Shown(n_overlays)
    for idx, probs in iter_probs(model, images, test_idx, dev, batch_size, desc="evaluate: test split"):
        pred, truth = metrics.postprocess(probs, post["top"], post["min_area"], post["bottom"]), masks[idx]
        counts.append(metrics.pixel_counts(pred, truth))
        scores.append(probs.reshape(len(probs), -1).max(1))
        shown.offer(idx, pred, truth)
    counts = metrics.concat_counts(counts)
    score = np.concatenate(scores) if scores else np.zeros(0)
    result = {
        "variant": meta["variant"],
        "test": metrics.report_from_counts(counts, score),
        "val": {"siim_dice": tuned["score"]},
        "postprocess": post,
    }
    postprocess_path.parent.mkdir(parents=True, exist_ok=True)
    postprocess_path.write_text(json.dumps(post, indent=1) + "\n")
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(result, indent=1) + "\n")
    per_image.write_counts(plots_dir / "per_image.csv", [rows[i]["image_id"] for i in test_idx], counts, score)
    test = result["test"]
    title = (
        f"{meta['variant']}: test images, positives first; SIIM Dice {test['siim_dice']:.3f},"
        f" Dice on positives {test['dice_positive']:.3f}, AUC {test['auc']:.3f}"
    )
    _plots(plots_dir, counts["mask_pixels"] > 0, score, images, shown, title)
    leakage = json.loads(prepare_cxr14_metrics.read_text())
    synthetic = bool(rows) and all(r["image_id"].startswith(dicom.SYNTHETIC_UID_ROOT) for r in rows)
    val_empty = float(np.mean(np.concatenate(val_true) == 0)) if len(val_idx) else float("nan")
    card = {**result, "all_empty": _empty_baseline(counts["mask_pixels"]), "val_all_empty": val_empty}
    card_path.write_text(_model_card(meta, card, rows, leakage, synthetic))
    return result


def _plots(
    plots_dir: Path, present: np.ndarray, score: np.ndarray, images: np.ndarray, shown: Shown, title: str
) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    roc, pr = [], []
    if present.any() and (~present).any():
        fpr, tpr, _ = roc_curve(present, score)
        roc = [{"fpr": float(a), "tpr": float(b)} for a, b in zip(fpr, tpr, strict=False)]
        precision, recall, _ = precision_recall_curve(present, score)
        pr = [{"recall": float(a), "precision": float(b)} for a, b in zip(recall, precision, strict=False)]
    (plots_dir / "roc.json").write_text(json.dumps({"roc": roc}))
    (plots_dir / "pr.json").write_text(json.dumps({"pr": pr}))
    pairs = []  # each image twice: as it is, and with the outlines (which hide the finding's edge)
    for row, truth, pred in shown.picked():  # positives first
        image = np.asarray(images[row])
        outlines = [(truth, overlay.TRUTH), (pred, overlay.PREDICTION)]
        pairs += [overlay.outline(image, [], scale=3), overlay.outline(image, outlines, scale=3)]
    headers = ["radiograph", "truth (green), prediction (red)"] * 2
    picture = (
        overlay.grid([pairs[i : i + 4] for i in range(0, len(pairs), 4)], headers=headers, title=title,
                     legend=overlay.OUTLINES)
        if pairs else overlay.blank()
    )  # fmt: skip
    cv2.imwrite(str(plots_dir / "overlays.png"), picture)


def _fmt(row: dict) -> str:
    return " | ".join(f"{row[k]:.3f}" for k in ("siim_dice", "dice_positive", "dice_pooled", "iou", "auc"))


def _model_card(meta: dict, result: dict, rows: list[dict], leakage: dict, synthetic: bool) -> str:
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    post, test = result["postprocess"], result["test"]
    limits = [
        "Trained and tested on **synthetic data** (the embedded phantoms): these numbers say the "
        "pipeline works, not how the model does on patients."
        if synthetic
        else "Trained on the SIIM-ACR data given by `data.siim_root`."
    ]
    limits.append(f"Input size {post['image_size']} px; masks are predicted at that size and resized back.")
    hyper = meta.get("params", {})
    hyper_line = ", ".join(f"{k} {v}" for k, v in sorted(hyper.items())) or "not recorded"
    run = meta.get("runtime", {})
    return f"""# Model card: U-Net, encoder initialisation `{meta["variant"]}`

## Intended use
Research on how the encoder's initialisation changes pneumothorax segmentation (reproducing
and extending the study below). Not for diagnosis, triage or any clinical decision: this is
not a medical device, and it has not been validated on patients or against radiologists.

- Architecture: U-Net, {meta["encoder"]} encoder, {meta["in_channels"]} input channel, {post["image_size"]} px.
- Encoder initialisation: `{meta["variant"]}`; selected epoch {meta["best_epoch"]} (lowest validation loss).
- Data: SIIM-ACR {"(synthetic) " if synthetic else ""}{len(rows)} images, patient-level split train {splits["train"]} /
  val {splits["val"]} / test {splits["test"]}.
- Pretraining data: CXR-14, {leakage.get("images", "?")} images after leaving out {leakage.get("excluded_leakage", "?")}
  images of patients that appear in the SIIM data (leakage control).

## Training
- Hyperparameters (`train_unet` params): {hyper_line}.
- Loss Dice + pixel loss; the kept epoch has the lowest validation loss among epochs with a
  trained encoder ({meta.get("selection", "lowest validation loss")}).
- Input: grayscale, pixel / 255 standardised with mean {meta.get("input_scaling", {}).get("mean", "?")} and
  std {meta.get("input_scaling", {}).get("std", "?")}.
- Trained on {run.get("device", "?")} ({run.get("processes", 1)} process(es), AMP {run.get("amp", False)}).

## Post-processing (tuned on validation, frozen for test)
top threshold {post["top"]}, minimum area {post["min_area"]} px, bottom threshold {post["bottom"]}.

## Test results ({test["images"]} images, {test["positive_images"]} with pneumothorax)
| prediction | SIIM Dice | Dice (positives) | pooled Dice | IoU | AUC |
|---|---|---|---|---|---|
| this model | {_fmt(test)} |
| all empty | {_fmt(result["all_empty"])} |

Validation SIIM Dice after post-processing: {result["val"]["siim_dice"]:.3f}
(all empty: {result["val_all_empty"]:.3f}).

## Metric definitions
{METRIC_DEFINITIONS}

## Limits
{chr(10).join("- " + line for line in limits)}

## Data and terms of use
{DATA_TERMS}

## Citation
{STUDY_CITATION}
"""
