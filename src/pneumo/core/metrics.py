"""Segmentation and clustering metrics, and the SIIM winners' post-processing.

SIIM's official metric is the mean over images of Dice, where an empty prediction on an
empty image scores 1 and any prediction on an empty image (or an empty one on a positive
image) scores 0. An all-empty prediction therefore already scores the share of empty
images; every table here reports that baseline beside the model.

Clustering agreement with true labels (AMI, NMI, ARI, and the AMI against chance) is a
function of the cluster x label contingency table, so each bootstrap resample or permutation
of the images is one table (`contingency`), not a refit; one entropy serves them all.
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


def adjusted_mutual_info(clusters: np.ndarray, labels: np.ndarray) -> float:
    """sklearn's AMI (arithmetic normalisation) of cluster ids against true labels."""
    from sklearn.metrics import adjusted_mutual_info_score  # ~1 s: only where it clusters

    return float(adjusted_mutual_info_score(labels, clusters))


RESAMPLE_CELLS = 2_000_000  # resamples (or permutations) x images scored per block of a resampled score
_EPS = np.finfo(np.float64).eps


def _entropy(counts: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of non-negative counts, (B, K) -> (B,)."""
    p = counts / np.maximum(counts.sum(1, keepdims=True), 1e-12)
    return -(p * np.log(np.where(p > 0, p, 1))).sum(1)


def contingency(clusters: np.ndarray, labels: np.ndarray, weights: np.ndarray | float) -> np.ndarray:
    """(B, k, m) cluster x label tables, one per row of `weights` (B, N): how often each image
    counts (bootstrap multiplicities; ones give the table of the data). `clusters` may be
    (B, N) too: one labelling per row (shuffled ids)."""
    _, c = np.unique(clusters, return_inverse=True)
    _, lab = np.unique(labels, return_inverse=True)
    c = c.reshape(np.shape(clusters))
    k, m = c.max() + 1, lab.max() + 1
    weights = np.broadcast_to(np.asarray(weights, float), np.broadcast_shapes(np.shape(weights), c.shape))
    weights = np.atleast_2d(weights)
    cells = (c * m + lab) + k * m * np.arange(len(weights))[:, None]
    flat = np.bincount(cells.ravel(), weights=weights.ravel(), minlength=len(weights) * k * m)
    return flat.reshape(len(weights), k, m)


def expected_mutual_information(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """E[MI] (nats) of random cluster ids with these cluster sizes `rows` (B, k) and label
    sizes `cols` (B, m) (integer counts), per row: the hypergeometric sum of Vinh, Epps and
    Bailey (2010) that sklearn's `adjusted_mutual_info_score` computes, vectorised over rows,
    with log-factorials from one table. Cell counts more than 12 SD from the cell's mean
    (probability < 1e-30) are left out, so a large N costs a window, not the whole range."""
    from scipy.special import gammaln  # only where it clusters

    rows, cols = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
    n = rows.sum(1)[:, None]
    log_factorial = gammaln(np.arange(n.max() + 1) + 1)  # log k! at index k
    log_int = np.log(np.maximum(np.arange(n.max() + 1), 1))
    emi = np.zeros(len(rows))
    for a in rows.T[:, :, None]:
        for b in cols.T[:, :, None]:
            present = (a > 0) & (b > 0)
            a1, b1 = np.where(present, a, 1), np.where(present, b, 1)
            mean = a1 * b1 / n
            sd = np.sqrt(a1 * b1 * (n - a1) * (n - b1) / (n * n * np.maximum(n - 1, 1)))
            start = np.maximum(np.maximum(1, a1 + b1 - n), np.floor(mean - 12 * sd - 1).astype(np.int64))
            stop = np.minimum(np.minimum(a1, b1), np.ceil(mean + 12 * sd + 1).astype(np.int64))
            width = int(np.max(np.where(present, stop - start, -1))) + 1
            if width <= 0:
                continue
            nij = start + np.arange(width)[None, :]
            valid = present & (nij <= stop)
            nij = np.where(valid, nij, start)  # any admissible count: masked below
            log_p = (
                log_factorial[a1]
                + log_factorial[b1]
                + log_factorial[n - a1]
                + log_factorial[n - b1]
                - log_factorial[n]
                - log_factorial[nij]
                - log_factorial[a1 - nij]
                - log_factorial[b1 - nij]
                - log_factorial[n - a1 - b1 + nij]
            )
            log_ratio = log_int[n] + log_int[nij] - log_int[a1] - log_int[b1]
            emi += np.where(valid, nij / n * log_ratio * np.exp(log_p), 0.0).sum(1)
    return emi


def ami_from_tables(tables: np.ndarray) -> np.ndarray:
    """Adjusted mutual information (arithmetic normalisation, sklearn's default) of each
    (k, m) table of (B, k, m), with sklearn's conventions: 1 when both sides have one
    non-empty class, 0 when one side has, and the same guards against 0 / 0."""
    rows, cols = tables.sum(2), tables.sum(1)
    joint = tables.reshape(len(tables), -1)
    h_rows, h_cols = _entropy(rows), _entropy(cols)
    mutual = h_rows + h_cols - _entropy(joint)
    emi = expected_mutual_information(rows, cols)
    numerator, denominator = mutual - emi, (h_rows + h_cols) / 2 - emi
    numerator = np.where(numerator < 0, np.minimum(numerator, -_EPS), np.maximum(numerator, _EPS))
    denominator = np.where(denominator < 0, np.minimum(denominator, -_EPS), np.maximum(denominator, _EPS))
    ami = numerator / denominator
    k, m = (rows > 0).sum(1), (cols > 0).sum(1)
    return np.where((k == 1) & (m == 1), 1.0, np.where((k == 1) | (m == 1), 0.0, ami))


def nmi_ari_from_tables(tables: np.ndarray) -> dict[str, np.ndarray]:
    """NMI (arithmetic normalisation, sklearn's default) and ARI of each (k, m) cluster x
    label table of (B, k, m)."""
    n = tables.sum((1, 2))
    rows, cols = tables.sum(2), tables.sum(1)
    joint = tables.reshape(len(tables), -1)
    mutual = _entropy(rows) + _entropy(cols) - _entropy(joint)
    mean_h = (_entropy(rows) + _entropy(cols)) / 2
    nmi = np.where(mean_h > 0, mutual / np.maximum(mean_h, 1e-12), 1.0)
    pairs_of = lambda x: (x * (x - 1) / 2).sum(1)  # noqa: E731 - pairs within each cell / row / column
    index, a, b = pairs_of(joint), pairs_of(rows), pairs_of(cols)
    expected = a * b / np.maximum(n * (n - 1) / 2, 1)
    spread = (a + b) / 2 - expected
    ari = np.where(spread != 0, (index - expected) / np.where(spread != 0, spread, 1), 1.0)
    return {"nmi": np.clip(nmi, 0, 1), "ari": ari}


def clustering_scores_resampled(clusters: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict:
    """AMI, NMI (arithmetic normalisation, sklearn's default) and ARI of fixed cluster ids
    against true labels, for every row of `weights` (B, N): bootstrap multiplicities of the
    images. All three are functions of the cluster x label contingency table, so each
    resample is one table, not a refit. Weights of ones give `clustering_scores`."""
    tables = contingency(clusters, labels, weights)
    return {"ami": ami_from_tables(tables)} | nmi_ari_from_tables(tables)


def chance_agreement(clusters: np.ndarray, truth: np.ndarray, permutations: int, seed: int) -> dict:
    """Agreement against chance: the permutation p-value of the AMI, p = (1 + #{shuffled AMI >=
    observed}) / (1 + permutations), with the cluster ids shuffled against the labels; and the
    mean NMI and AMI of the shuffled ids (what chance alone scores: NMI is above 0 at chance,
    AMI about 0). Shuffling keeps both marginals, so E[MI] and the entropies are fixed and
    only the mutual information changes: the AMI ranks as the MI does. Shuffled a block at a
    time (the same permutations as all at once), so memory stays flat in N."""
    observed = contingency(clusters, truth, 1.0)
    rows, cols = observed.sum(2), observed.sum(1)
    h_rows, h_cols = _entropy(rows)[0], _entropy(cols)[0]
    mean_h, emi = (h_rows + h_cols) / 2, expected_mutual_information(rows, cols)[0]

    def mutual(tables: np.ndarray) -> np.ndarray:
        return h_rows + h_cols - _entropy(tables.reshape(len(tables), -1))

    rng, block = np.random.default_rng([seed, 1]), max(1, RESAMPLE_CELLS // max(len(truth), 1))
    shuffled = [np.zeros(0)]
    for start in range(0, permutations, block):
        ids = rng.permuted(np.tile(clusters, (min(block, permutations - start), 1)), axis=1)
        shuffled.append(mutual(contingency(ids, truth, 1.0)))
    shuffled_mi, observed_mi = np.concatenate(shuffled), mutual(observed)[0]
    at_least = shuffled_mi >= observed_mi - 1e-12  # a tie (float sums in another order) counts against
    return {
        "ami_p": float((1 + at_least.sum()) / (1 + permutations)),
        "nmi_chance": float(np.mean(shuffled_mi / mean_h)) if permutations and mean_h > 0 else None,
        "ami_chance": float(np.mean((shuffled_mi - emi) / max(mean_h - emi, _EPS))) if permutations else None,
    }


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
