"""Segmentation and clustering metrics, and the SIIM winners' post-processing.

SIIM's official metric is the mean over images of Dice, where an empty prediction on an
empty image scores 1 and any prediction on an empty image (or an empty one on a positive
image) scores 0. An all-empty prediction therefore already scores the share of empty
images; every table here reports that baseline beside the model.
"""

from __future__ import annotations

import itertools

import numpy as np


def _flat(masks: np.ndarray) -> np.ndarray:
    return np.asarray(masks, bool).reshape(len(masks), -1)


def dice_per_image(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Dice per image, (N,); empty prediction on an empty image = 1."""
    p, t = _flat(pred), _flat(true)
    inter, total = (p & t).sum(1), p.sum(1) + t.sum(1)
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


def iou_per_image(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """IoU per image, (N,); empty/empty = 1."""
    p, t = _flat(pred), _flat(true)
    inter, union = (p & t).sum(1), (p | t).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def pooled_dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice over all pixels of all images pooled (0 when both are empty everywhere)."""
    p, t = _flat(pred), _flat(true)
    total = p.sum() + t.sum()
    return float(2 * (p & t).sum() / total) if total else 0.0


def postprocess(probs: np.ndarray, top: float, min_area: int, bottom: float) -> np.ndarray:
    """SIIM winners' rule: an image is positive if at least `min_area` pixels exceed `top`;
    its mask is then the pixels above `bottom`, else empty. probs (N, H, W) -> bool masks."""
    probs = np.asarray(probs)
    keep = (probs > top).reshape(len(probs), -1).sum(1) >= max(min_area, 1)
    return (probs > bottom) & keep[:, None, None]


def min_areas(fractions: list[float], size: int) -> list[int]:
    """Minimum-area grid in pixels of a size x size image, from shares of the image."""
    return sorted({int(round(f * size * size)) for f in fractions})


def threshold_counts(probs: np.ndarray, true: np.ndarray, thresholds: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per image and threshold (N, T): pixels above the threshold, and how many of them are
    true. Everything the post-processing search needs, so it can run batch by batch."""
    p, t = np.asarray(probs).reshape(len(probs), -1), _flat(true)
    above = np.zeros((len(p), len(thresholds)), np.int64)
    hits = np.zeros_like(above)
    for j, thr in enumerate(thresholds):
        mask = p > thr
        above[:, j], hits[:, j] = mask.sum(1), (mask & t).sum(1)
    return above, hits


def best_postprocess(
    above: np.ndarray,
    hits: np.ndarray,
    true_pixels: np.ndarray,
    thresholds: list[float],
    tops: list[float],
    areas: list[int],
    bottoms: list[float],
) -> dict:
    """The (top, min_area, bottom) with the best mean per-image Dice, from `threshold_counts`
    (columns in the order of `thresholds`) and each image's true pixel count."""
    column = {thr: j for j, thr in enumerate(thresholds)}
    best = {"score": -1.0}
    for top, area, bottom in itertools.product(tops, areas, bottoms):
        if bottom > top:
            continue
        keep = above[:, column[top]] >= max(area, 1)
        predicted = np.where(keep, above[:, column[bottom]], 0)
        inter = np.where(keep, hits[:, column[bottom]], 0)
        total = predicted + true_pixels
        score = float(np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1)).mean())
        if score > best["score"]:
            best = {"score": score, "top": top, "min_area": int(area), "bottom": bottom}
    return best


def tune_postprocess(
    probs: np.ndarray, true: np.ndarray, tops: list[float], areas: list[int], bottoms: list[float]
) -> dict:
    """Grid-search (top, min_area, bottom) for the best mean per-image Dice (on validation only).

    Same scores as `dice_per_image(postprocess(...))` for every combination, but the pixels
    are read once per threshold, not once per combination: per image, the number of pixels
    above each threshold and how many of them are true, then every combination is
    arithmetic on those (N,) counts (at 512 px the pixel passes dominate). `evaluate` runs
    the same two steps batch by batch, so the split is never in memory at once."""
    thresholds = sorted(set(tops) | set(bottoms))
    above, hits = threshold_counts(probs, true, thresholds)
    return best_postprocess(above, hits, _flat(true).sum(1), thresholds, tops, areas, bottoms)


def pixel_counts(pred: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Per image (N,): true pixels, predicted pixels and their intersection. Every number of
    `segmentation_report` is a function of these and the presence score, so a split can be
    scored batch by batch."""
    p, t = _flat(pred), _flat(true)
    return {"mask_pixels": t.sum(1), "pred_pixels": p.sum(1), "intersection": (p & t).sum(1)}


def report_from_counts(counts: dict[str, np.ndarray], presence_score: np.ndarray) -> dict:
    """`segmentation_report` from `pixel_counts` (concatenated over batches)."""
    t, p, inter = (np.asarray(counts[k], np.int64) for k in ("mask_pixels", "pred_pixels", "intersection"))
    positive = t > 0
    total, union = p + t, p + t - inter
    dice = np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))
    iou = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    pooled_total = p.sum() + t.sum()
    both = positive.any() and (~positive).any()
    return {
        "siim_dice": float(dice.mean()),
        "dice_positive": float(dice[positive].mean()) if positive.any() else float("nan"),
        "dice_pooled": float(2 * inter.sum() / pooled_total) if pooled_total else 0.0,
        "iou": float(iou.mean()),
        "auc": auc(positive, presence_score) if both else float("nan"),
        "images": int(len(t)),
        "positive_images": int(positive.sum()),
    }


def concat_counts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`pixel_counts` of consecutive batches as one table."""
    keys = ("mask_pixels", "pred_pixels", "intersection")
    return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, np.int64) for k in keys}


def segmentation_report(pred: np.ndarray, true: np.ndarray, presence_score: np.ndarray) -> dict:
    """The evaluation table's row for one set of predicted masks."""
    return report_from_counts(pixel_counts(pred, true), presence_score)


def purity(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose cluster's majority label is their own label."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    hits = sum(np.unique(labels[clusters == c], return_counts=True)[1].max() for c in np.unique(clusters))
    return float(hits / len(labels))


def clustering_scores(clusters: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score  # ~1 s: only where it clusters

    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "purity": purity(clusters, labels),
    }


def _entropy(counts: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of non-negative counts, (B, K) -> (B,)."""
    p = counts / np.maximum(counts.sum(1, keepdims=True), 1e-12)
    return -(p * np.log(np.where(p > 0, p, 1))).sum(1)


def clustering_scores_resampled(clusters: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict:
    """NMI (arithmetic normalisation, sklearn's default) and ARI of fixed cluster ids
    against true labels, for every row of `weights` (B, N): bootstrap multiplicities of the
    images. Both scores are functions of the cluster x label contingency table, so each
    resample is one matrix product, not a refit. Weights of ones give `clustering_scores`."""
    _, c = np.unique(clusters, return_inverse=True)
    _, lab = np.unique(labels, return_inverse=True)
    k, m = c.max() + 1, lab.max() + 1
    pairs = np.zeros((len(c), k * m))
    pairs[np.arange(len(c)), c * m + lab] = 1
    table = (np.asarray(weights, float) @ pairs).reshape(len(weights), k, m)
    n = table.sum((1, 2))
    rows, cols = table.sum(2), table.sum(1)
    joint = table.reshape(len(table), -1)
    mutual = _entropy(rows) + _entropy(cols) - _entropy(joint)
    mean_h = (_entropy(rows) + _entropy(cols)) / 2
    nmi = np.where(mean_h > 0, mutual / np.maximum(mean_h, 1e-12), 1.0)
    pairs_of = lambda x: (x * (x - 1) / 2).sum(1)  # noqa: E731 - pairs within each cell / row / column
    index, a, b = pairs_of(joint), pairs_of(rows), pairs_of(cols)
    expected = a * b / np.maximum(n * (n - 1) / 2, 1)
    spread = (a + b) / 2 - expected
    ari = np.where(spread != 0, (index - expected) / np.where(spread != 0, spread, 1), 1.0)
    return {"nmi": np.clip(nmi, 0, 1), "ari": ari}


def weighted_auc(
    pos_scores: np.ndarray, neg_scores: np.ndarray, pos_counts: np.ndarray, neg_counts: np.ndarray
) -> np.ndarray:
    """ROC AUC per row of counts (Mann-Whitney; ties count 1/2): the share of (positive,
    negative) pairs ranked right, each pair weighted by the product of the two counts."""
    if not len(pos_scores) or not len(neg_scores):
        return np.full(len(pos_counts), np.nan)
    s, t = pos_scores[:, None], neg_scores[None, :]
    h = (s > t) + 0.5 * (s == t)
    return np.einsum("bj,bj->b", pos_counts @ h, neg_counts) / (pos_counts.sum(1) * neg_counts.sum(1))


def auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of `score` for the boolean `positive` (Mann-Whitney, ties 1/2: sklearn's value,
    without importing sklearn in every training stage)."""
    positive = np.asarray(positive, bool)
    ones = np.ones((1, len(positive)))
    return float(weighted_auc(score[positive], score[~positive], ones[:, positive], ones[:, ~positive])[0])
