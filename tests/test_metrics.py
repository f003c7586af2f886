"""pneumo.core.metrics against hand-computed cases and against smp's implementation."""

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

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


def test_entropy_of_count_rows_in_nats():
    counts = np.array([[5, 5, 0], [1, 1, 2], [7, 0, 0], [0, 0, 0]])
    expected = [np.log(2), 1.5 * np.log(2), 0.0, 0.0]  # an all-zero row (no images) has none
    np.testing.assert_allclose(metrics._entropy(counts), expected, atol=1e-15)


def test_contingency_counts_each_image_as_often_as_its_weight():
    """Cluster and label ids are ranked first (any integers); rows of `weights` give one table
    each, and (B, N) cluster ids one labelling per row, as the permutation test passes them."""
    clusters, labels = np.array([7, 7, 3, 3, 3, 9]), np.array([1, 0, 0, 0, 1, 1])
    data = metrics.contingency(clusters, labels, 1.0)
    assert data.shape == (1, 3, 2)
    assert data[0].tolist() == [[2, 1], [1, 1], [0, 1]]  # rows: clusters 3, 7, 9; columns: labels 0, 1
    weights = np.array([[1, 1, 1, 1, 1, 1], [0, 2, 0, 0, 0, 3]])
    resampled = metrics.contingency(clusters, labels, weights)
    assert resampled[1].tolist() == [[0, 0], [2, 0], [0, 3]] and resampled.sum((1, 2)).tolist() == [6, 5]
    shuffled = metrics.contingency(np.array([clusters, clusters[::-1]]), labels, 1.0)
    assert shuffled[0].tolist() == data[0].tolist() and shuffled[1].tolist() == [[3, 0], [0, 2], [0, 1]]


@pytest.mark.parametrize(
    ("n", "k", "m", "agree"),
    [(300, 5, 3, 0.4), (40, 6, 6, 0.2), (25, 2, 2, 0.0), (500, 8, 4, 0.9), (60, 3, 5, 1.0)],
)
def test_resampled_ami_equals_sklearn_on_the_expanded_sample(n, k, m, agree):
    rng = np.random.default_rng(n + k)
    clusters = rng.integers(0, k, n)
    labels = np.where(rng.random(n) < agree, clusters % m, rng.integers(0, m, n))
    counts = rng.multinomial(n, np.full(n, 1 / n), 6)
    counts[0] = 1  # the data itself
    counts[1] = np.where(clusters == clusters[0], 2, 0) * (np.arange(n) % 2 == 0)  # a single cluster left
    counts[1, 1] += np.any(counts[1]) == 0
    got = metrics.ami_from_tables(metrics.contingency(clusters, labels, counts))
    for b, w in enumerate(counts):
        expected = adjusted_mutual_info_score(np.repeat(labels, w), np.repeat(clusters, w))
        assert got[b] == pytest.approx(expected, abs=1e-10), b


def test_expected_mutual_information_window_at_large_n():
    """Cell counts far from their mean are left out at large N: the AMI still equals sklearn's."""
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 6, 30_000)
    clusters = np.where(rng.random(30_000) < 0.05, truth, rng.integers(0, 6, 30_000))
    table = metrics.contingency(clusters, truth, 1.0)
    assert metrics.ami_from_tables(table)[0] == pytest.approx(adjusted_mutual_info_score(truth, clusters), abs=1e-12)


def test_permutation_p_against_chance():
    """Informative clusters: p is the smallest possible, 1 / (1 + permutations). Clusters that
    ignore the labels: over 200 such datasets p is about uniform (5% of them under 0.05),
    while NMI's chance level sits clearly above 0 and AMI's at 0."""
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 5, 300)
    informative = np.where(rng.random(300) < 0.3, truth, rng.integers(0, 5, 300))
    result = metrics.chance_agreement(informative, truth, permutations=199, seed=0)
    assert result["ami_p"] == 1 / 200
    nulls = [metrics.chance_agreement(rng.integers(0, 5, 300), truth, permutations=99, seed=s) for s in range(200)]
    p = np.array([r["ami_p"] for r in nulls])
    assert p.min() >= 0.01 and 0.02 <= (p <= 0.05).mean() <= 0.09 and 0.4 <= np.median(p) <= 0.6
    chance_nmi = np.mean([r["nmi_chance"] for r in nulls])
    shuffled = [normalized_mutual_info_score(truth, rng.permutation(informative)) for _ in range(200)]
    assert chance_nmi == pytest.approx(np.mean(shuffled), rel=0.15) and chance_nmi > 0.005
    assert abs(np.mean([r["ami_chance"] for r in nulls])) < 0.002


def test_permutations_in_blocks_draw_what_one_block_does(monkeypatch):
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, 300)
    clusters = np.where(rng.random(300) < 0.1, truth, rng.integers(0, 4, 300))
    whole = metrics.chance_agreement(clusters, truth, permutations=250, seed=3)
    monkeypatch.setattr(metrics, "RESAMPLE_CELLS", 300 * 7)  # blocks of 7 permutations
    assert metrics.chance_agreement(clusters, truth, permutations=250, seed=3) == whole
    assert 0 < whole["ami_p"] < 1


def test_auc_is_sklearns_with_ties_without_importing_it():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    positive = rng.random(300) < 0.3
    score = np.round(rng.random(300) + 0.4 * positive, 1)  # many ties, across the classes too
    assert metrics.auc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    assert metrics.auc(positive, np.ones(300)) == 0.5
