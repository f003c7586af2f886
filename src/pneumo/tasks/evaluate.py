"""`evaluate`: one U-Net variant on the held-out SIIM test split.

Two predictions per test image, one per endpoint. The segmentation endpoint (Dice on the
images with a pneumothorax) scores the probabilities above a pixel threshold fixed in
advance (`threshold`), with no image-level gate. SIIM's metric scores the post-processed
prediction: its thresholds (top, min_area, bottom) are tuned for SIIM Dice on the
validation split only, then frozen for test and stored beside the weights, so `pneumo
predict` applies the same. The gate tuned for SIIM's metric never decides the segmentation
endpoint. Besides the summary it writes one row per test image (`per_image.csv`): the report
resamples those rows to put an interval on every number and every difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from pneumo.core import metrics, model_card, overlay, runtime
from pneumo.core.inference import iter_probs, load_unet
from pneumo.formats import dicom, per_image
from pneumo.formats.prepared import load_prepared, split_indices


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


def _tune(
    model,
    images: np.ndarray,
    masks: np.ndarray,
    val_idx: np.ndarray,
    dev,
    batch_size: int,
    tops: list[float],
    areas: list[int],
    bottoms: list[float],
) -> tuple[dict, np.ndarray]:
    """The post-processing (top, min_area, bottom) with the best SIIM Dice on the validation
    split, with its score, and each validation image's true pixel count."""
    thresholds = sorted(set(tops) | set(bottoms))
    above, hits, val_true = [], [], []
    for idx, probs in iter_probs(model, images, val_idx, dev, batch_size, desc="evaluate: validation split"):
        truth = masks[idx]
        a, h = metrics.threshold_counts(probs, truth, thresholds)
        above.append(a)
        hits.append(h)
        val_true.append(truth.reshape(len(truth), -1).sum(1, dtype=np.int64))
    if not len(val_idx):
        return {"score": float("nan"), "top": 0.5, "min_area": 1, "bottom": 0.5}, np.zeros(0, np.int64)
    val_true = np.concatenate(val_true)
    tuned = metrics.best_postprocess(
        np.concatenate(above), np.concatenate(hits), val_true, thresholds, tops, areas, bottoms
    )
    return tuned, val_true


def _score(
    model,
    images: np.ndarray,
    masks: np.ndarray,
    test_idx: np.ndarray,
    dev,
    batch_size: int,
    post: dict,
    threshold: float,
    shown: Shown,
) -> tuple[dict, dict, np.ndarray]:
    """Per test image: pixel counts of the post-processed prediction and of the gate-free one
    (pixels above `threshold`), and the presence score (the highest probability); `shown`
    keeps the overlay plot's images."""
    counts, ungated, scores = [], [], []
    for idx, probs in iter_probs(model, images, test_idx, dev, batch_size, desc="evaluate: test split"):
        pred, truth = metrics.postprocess(probs, post["top"], post["min_area"], post["bottom"]), masks[idx]
        counts.append(metrics.pixel_counts(pred, truth))
        ungated.append(metrics.pixel_counts(probs > threshold, truth))
        scores.append(probs.reshape(len(probs), -1).max(1))
        shown.offer(idx, pred, truth)
    score = np.concatenate(scores) if scores else np.zeros(0)
    return metrics.concat_counts(counts), metrics.concat_counts(ungated), score


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
    threshold: float,
    device: str = "auto",
    batch_size: int = 32,
) -> dict:
    """Tune the post-processing on the validation split, score the test split with it, and write
    postprocess.json beside the weights, the metrics JSON, per_image.csv, the ROC/PR curves, the
    overlay picture and the model card; return the metrics (test scores, validation SIIM Dice,
    post-processing). `dice_positive` is the gate-free prediction's (pixels above `threshold`),
    the other scores the post-processed one's."""
    dev = runtime.device_from(device)
    model, meta = load_unet(model_path, dev)
    images, masks, rows = load_prepared(siim_dir)
    val_idx, test_idx = split_indices(rows, "val"), split_indices(rows, "test")
    size = images.shape[1]
    areas = metrics.min_areas(min_area_fractions, size)
    # both splits stream batch by batch: per-image counts are kept, never the probabilities
    tuned, val_true = _tune(model, images, masks, val_idx, dev, batch_size, tops, areas, bottoms)
    post = {"top": tuned["top"], "min_area": tuned["min_area"], "bottom": tuned["bottom"], "image_size": size}
    shown = Shown(n_overlays)
    counts, ungated, score = _score(model, images, masks, test_idx, dev, batch_size, post, threshold, shown)
    test = metrics.report_from_counts(counts, score)
    positive = counts["mask_pixels"] > 0
    test["dice_positive"] = metrics.report_from_counts(ungated, score)["dice_positive"]
    # positives the SIIM gate empties although pixels pass the threshold: each scores 0 on SIIM's metric
    test["gate_emptied_positives"] = int((positive & (counts["pred_pixels"] == 0) & (ungated["pred_pixels"] > 0)).sum())
    result = {
        "variant": meta["variant"],
        "test": test,
        "threshold": threshold,
        "val": {"siim_dice": tuned["score"]},
        "postprocess": post,
    }
    postprocess_path.parent.mkdir(parents=True, exist_ok=True)
    postprocess_path.write_text(json.dumps(post, indent=1) + "\n")
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(result, indent=1) + "\n")
    ids = [rows[i]["image_id"] for i in test_idx]
    per_image.write_counts(plots_dir / "per_image.csv", ids, counts, score, ungated)
    test = result["test"]
    title = (
        f"{meta['variant']}: test images, positives first; SIIM Dice {test['siim_dice']:.3f},"
        f" Dice on positives {test['dice_positive']:.3f}, AUC {test['auc']:.3f}"
    )
    _plots(plots_dir, counts["mask_pixels"] > 0, score, images, shown, title)
    leakage = json.loads(prepare_cxr14_metrics.read_text())
    synthetic = bool(rows) and all(r["image_id"].startswith(dicom.SYNTHETIC_UID_ROOT) for r in rows)
    val_empty = float(np.mean(val_true == 0)) if len(val_idx) else float("nan")
    card = {**result, "all_empty": _empty_baseline(counts["mask_pixels"]), "val_all_empty": val_empty}
    card_path.write_text(card_text(meta, card, rows, leakage, synthetic))
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


def card_text(meta: dict, result: dict, rows: list[dict], leakage: dict, synthetic: bool) -> str:
    """MODEL_CARD.md: the checkpoint's metadata, the split sizes, the pretraining data's counts
    (`leakage`) and `result` (evaluate's, plus the all-empty baselines) in `core/model_card.md`."""
    post, test = result["postprocess"], result["test"]
    hyper = meta.get("params", {})
    run = meta.get("runtime", {})
    scaling = meta.get("input_scaling", {})
    data_limit = (
        "Trained and tested on **synthetic data** (the embedded phantoms): these numbers say the "
        "pipeline works, not how the model does on patients."
        if synthetic
        else "Trained on the SIIM-ACR data given by `data.siim_root`."
    )
    return model_card.render(
        variant=meta["variant"],
        encoder=meta["encoder"],
        in_channels=meta["in_channels"],
        image_size=post["image_size"],
        best_epoch=meta["best_epoch"],
        synthetic_note="(synthetic) " if synthetic else "",
        images=len(rows),
        **{s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")},
        pretraining_images=leakage.get("images", "?"),
        excluded_leakage=leakage.get("excluded_leakage", "?"),
        hyperparameters=", ".join(f"{k} {v}" for k, v in sorted(hyper.items())) or "not recorded",
        selection=meta.get("selection", "lowest validation loss"),
        threshold=result.get("threshold", 0.5),
        mean=scaling.get("mean", "?"),
        std=scaling.get("std", "?"),
        device=run.get("device", "?"),
        processes=run.get("processes", 1),
        amp=run.get("amp", False),
        top=post["top"],
        min_area=post["min_area"],
        bottom=post["bottom"],
        test_images=test["images"],
        test_positives=test["positive_images"],
        test_scores=_fmt(test),
        empty_scores=_fmt(result["all_empty"]),
        val_siim_dice=f"{result['val']['siim_dice']:.3f}",
        val_all_empty=f"{result['val_all_empty']:.3f}",
        data_limit=data_limit,
    )
