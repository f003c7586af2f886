"""pneumo.core.metrics against hand-computed cases and against smp's implementation."""

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from pneumo.core import metrics


def masks(*flat_lists, size=4):
    out = np.zeros((len(flat_lists), size, size), bool)
    for i, on in enumerate(flat_lists):
        out[i].flat[on] = True
    return out


@pytest.mark.parametrize(
    "pred, true, expected",
    [
        ([], [], 1.0),  # empty prediction on an empty image: 1
        ([], [0, 1], 0.0),  # missed pneumothorax: 0
        ([3], [], 0.0),  # false positive on an empty image: 0
        ([0, 1], [1, 2], 0.5),  # 2*1 / (2+2)
        ([0, 1, 2], [2], 0.5),  # 2*1 / (3+1)
    ],
)
def test_dice_per_image(pred, true, expected):
    assert metrics.dice_per_image(masks(pred), masks(true))[0] == pytest.approx(expected)


def test_iou_and_pooled_dice():
    pred, true = masks([0, 1], [], [5]), masks([1, 2], [], [])
    assert metrics.iou_per_image(pred, true) == pytest.approx([1 / 3, 1.0, 0.0])
    assert metrics.pooled_dice(pred, true) == pytest.approx(2 * 1 / (3 + 2))
    assert metrics.pooled_dice(masks([]), masks([])) == 0.0


def test_siim_dice_matches_smp_micro_imagewise():
    rng = np.random.default_rng(0)
    true = rng.random((12, 8, 8)) > 0.8
    true[:5] = False  # empty images
    pred = rng.random((12, 8, 8)) > 0.85
    pred[:2] = False  # two empty/empty images score 1
    tp, fp, fn, tn = smp.metrics.get_stats(
        torch.from_numpy(pred[:, None]).long(), torch.from_numpy(true[:, None]).long(), mode="binary"
    )
    theirs = smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro-imagewise", zero_division=1.0)
    assert metrics.dice_per_image(pred, true).mean() == pytest.approx(float(theirs))


def test_postprocess_rule():
    probs = np.zeros((3, 4, 4))
    probs[0].flat[:3] = 0.95  # 3 confident pixels -> positive
    probs[0].flat[3:6] = 0.45  # grown by the bottom threshold
    probs[1].flat[:1] = 0.95  # 1 confident pixel < min_area -> empty
    probs[2].flat[:8] = 0.6  # never above top -> empty
    out = metrics.postprocess(probs, top=0.9, min_area=2, bottom=0.4)
    assert out[0].sum() == 6 and not out[1].any() and not out[2].any()


def test_tune_postprocess_picks_the_rule_that_removes_false_positives():
    true = masks([0, 1, 2, 3], [], [])
    probs = np.zeros((3, 4, 4))
    probs[0].flat[:4] = 0.95
    probs[1].flat[:2] = 0.7  # weak false positive: a top threshold above 0.7 removes it
    probs[2].flat[5] = 0.95  # a single confident pixel: min_area 2 removes it
    best = metrics.tune_postprocess(probs, true, tops=[0.5, 0.9], areas=[1, 2], bottoms=[0.5])
    assert best == {"score": 1.0, "top": 0.9, "min_area": 2, "bottom": 0.5}


def test_tune_postprocess_scores_every_combination_as_postprocess_then_dice_does():
    rng = np.random.default_rng(0)
    true = rng.random((40, 16, 16)) > 0.8
    true[:25] = False  # mostly empty images, as in SIIM
    probs = np.clip(true * 0.5 + rng.random(true.shape) * 0.6, 0, 1).astype(np.float32)
    grid = dict(tops=[0.5, 0.7, 0.9], areas=[0, 3, 20, 60], bottoms=[0.3, 0.5])
    best = metrics.tune_postprocess(probs, true, **grid)
    scores = {
        (top, area, bottom): metrics.dice_per_image(metrics.postprocess(probs, top, area, bottom), true).mean()
        for top in grid["tops"]
        for area in grid["areas"]
        for bottom in grid["bottoms"]
        if bottom <= top
    }
    assert best["score"] == max(scores.values())
    assert scores[(best["top"], best["min_area"], best["bottom"])] == best["score"]
    assert len(set(scores.values())) > 5  # the grid really discriminates


def test_segmentation_report_and_all_empty():
    true = masks([0, 1], [], [], [])
    row = metrics.segmentation_report(np.zeros_like(true), true, np.zeros(4))
    assert row["siim_dice"] == pytest.approx(0.75) and row["dice_positive"] == 0.0 and row["positive_images"] == 1


def test_clustering_scores():
    labels = np.array([0, 0, 1, 1, 2, 2])
    perfect = metrics.clustering_scores(np.array([5, 5, 3, 3, 9, 9]), labels)
    assert perfect == pytest.approx({"nmi": 1.0, "ari": 1.0, "purity": 1.0})
    constant = metrics.clustering_scores(np.zeros(6, int), labels)
    assert constant["nmi"] == pytest.approx(0.0) and constant["purity"] == pytest.approx(1 / 3)
    assert metrics.purity(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])) == pytest.approx(3 / 4)


def test_resampled_clustering_scores_equal_sklearn_on_the_expanded_sample():
    """Bootstrap NMI/ARI from the contingency table equal sklearn's scores on the images
    repeated as often as the resample draws them (and on the data itself for weights 1)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 5, 300)
    labels = np.where(rng.random(300) < 0.6, clusters % 3, rng.integers(0, 3, 300))
    counts = np.vstack([np.ones(300), rng.multinomial(300, np.full(300, 1 / 300), 3)])
    scores = metrics.clustering_scores_resampled(clusters, labels, counts)
    for b, w in enumerate(counts.astype(int)):
        c, lab = np.repeat(clusters, w), np.repeat(labels, w)
        assert scores["nmi"][b] == pytest.approx(normalized_mutual_info_score(lab, c))
        assert scores["ari"][b] == pytest.approx(adjusted_rand_score(lab, c))


def test_auc_is_sklearns_with_ties_without_importing_it():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    positive = rng.random(300) < 0.3
    score = np.round(rng.random(300) + 0.4 * positive, 1)  # many ties, across the classes too
    assert metrics.auc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    assert metrics.auc(positive, np.ones(300)) == 0.5
