"""The study's statistics (core/study.py): the weighted metrics against sklearn and
pneumo.core.metrics, the gate-free primary endpoint, the paired image bootstrap's coverage
and pairing, the checks on the runs and images it is given, and the ablation's families on
tables in memory."""

import math

import numpy as np
import pytest
from per_image_tables import rows_from_counts, table, write_csv
from sklearn.metrics import roc_auc_score

from pneumo.core import bootstrap, metrics, study
from pneumo.formats import per_image


def test_interval_covers_the_population_value():
    """Known population: positives' Dice ~ Beta(2, 3), negatives' Dice 1 with prob. 0.8, scores
    N(1, 1) vs N(0, 1) (AUC = Phi(1/sqrt 2)). Test samples keep the population's positive share,
    as the stratified bootstrap assumes; the 95% interval must cover in ~95% of 200 samples."""
    rng = np.random.default_rng(1)  # any one sample misses with 5% chance; in this one none does
    n_pos, n_neg, a, b, q, shift = 100, 200, 2.0, 3.0, 0.8, 1.0
    truth = {
        "siim_dice": (n_pos * a / (a + b) + n_neg * q) / (n_pos + n_neg),
        "dice_positive": a / (a + b),
        "auc": 0.5 * (1 + math.erf(shift / 2)),
    }
    positive = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    covered = {m: [] for m in truth}
    for trial in range(200):
        dice = np.r_[rng.beta(a, b, n_pos), (rng.random(n_neg) < q).astype(float)]
        score = np.r_[rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)]
        t = table(positive, dice, score)
        point = study.metric_samples(t, np.ones((1, len(positive))))
        samples = study.metric_samples(t, bootstrap.stratified_counts(positive, 300, trial))
        for m, value in truth.items():
            low, high = bootstrap.interval(point[m][0], samples[m])
            covered[m].append(low <= value <= high)
    assert all(c[0] for c in covered.values())  # the first sample, as one known case
    for m, c in covered.items():
        assert 0.90 <= np.mean(c) <= 0.99, (m, np.mean(c))


def test_paired_interval_is_narrower_than_unpaired():
    """Two models whose per-image Dice follow the images' difficulty: with the same resamples the
    difference's interval is a fraction of the one from independent resamples, and only the
    paired one resolves the true +0.03."""
    rng = np.random.default_rng(1)
    positive = np.r_[np.ones(60, bool), np.zeros(140, bool)]
    hard = rng.random(200)
    a = table(positive, np.clip(hard + rng.normal(0, 0.03, 200), 0, 1), hard)
    b = table(positive, np.clip(hard + 0.03 + rng.normal(0, 0.03, 200), 0, 1), hard)
    shared, other = bootstrap.stratified_counts(positive, 1000, 0), bootstrap.stratified_counts(positive, 1000, 1)
    base = study.metric_samples(a, shared)["siim_dice"]
    diff = (
        study.metric_samples(b, np.ones((1, 200)))["siim_dice"][0]
        - study.metric_samples(a, np.ones((1, 200)))["siim_dice"][0]
    )
    paired = bootstrap.interval(diff, study.metric_samples(b, shared)["siim_dice"] - base)
    unpaired = bootstrap.interval(diff, study.metric_samples(b, other)["siim_dice"] - base)
    assert paired[1] - paired[0] < 0.3 * (unpaired[1] - unpaired[0])
    assert paired[0] > 0 and unpaired[0] < 0 < unpaired[1]


def test_weighted_auc_equals_sklearn_with_ties_and_constant_is_half():
    rng = np.random.default_rng(2)
    positive = np.arange(40) % 3 == 0
    score = np.round(rng.random(40) + 0.3 * positive, 1)  # one decimal: many ties, across classes too
    t = table(positive, np.ones(40), score)
    assert study.metric_samples(t, np.ones((1, 40)))["auc"][0] == pytest.approx(roc_auc_score(positive, score))
    w = bootstrap.stratified_counts(positive, 6, seed=0)
    for b, auc in enumerate(study.metric_samples(t, w)["auc"]):
        drawn = np.repeat(np.arange(40), w[b])
        assert auc == pytest.approx(roc_auc_score(positive[drawn], score[drawn]))
    constant = table(positive, np.ones(40), np.full(40, 0.37))
    assert study.metric_samples(constant, np.ones((1, 40)))["auc"].tolist() == [0.5]
    assert study.metric_samples(constant, w)["auc"].tolist() == [0.5] * 6


def test_metrics_from_csv_columns_equal_pneumo_metrics(tmp_path):
    """Masks -> per_image.csv -> the report's metrics equal pneumo.core.metrics on the masks, on the
    data itself and on resamples (the masks repeated by the counts)."""
    rng = np.random.default_rng(4)
    n, size = 18, 10
    true, pred = np.zeros((n, size, size), bool), np.zeros((n, size, size), bool)
    for i in range(n):
        y, x, h, w = rng.integers(0, 6, 4) + (0, 0, 2, 2)
        if i % 3 == 0:  # positive: a rectangle, predicted shifted, missed, or exactly
            true[i, y : y + h, x : x + w] = True
            dy, dx = rng.integers(-2, 3, 2)
            pred[i] = np.roll(true[i], (dy, dx), (0, 1)) if i % 9 else False
        elif i % 3 == 1 and i % 4 == 1:  # a false positive on an empty image
            pred[i, y : y + h, x : x + w] = True
    pred[3] = true[3]
    probs = rng.random((n, size, size)) * np.where(true, 1.0, 0.8)
    max_prob = np.round(probs.reshape(n, -1).max(1), 2)
    flat_t, flat_p = true.reshape(n, -1), pred.reshape(n, -1)
    rows = rows_from_counts(
        [f"id{i}" for i in range(n)],
        flat_t.any(1),
        flat_t.sum(1),
        flat_p.sum(1),
        (flat_t & flat_p).sum(1),
        max_prob,
    )
    t = per_image.read(write_csv(tmp_path / "per_image.csv", rows))
    expected = metrics.segmentation_report(pred, true, max_prob)
    got = study.metric_samples(t, np.ones((1, n)))
    for m in study.METRICS:
        assert got[m][0] == pytest.approx(expected[m]), m
    w = bootstrap.stratified_counts(t["has_pneumothorax"], 4, seed=1)
    got = study.metric_samples(t, w)
    for b in range(4):
        drawn = np.repeat(np.arange(n), w[b])
        expected = metrics.segmentation_report(pred[drawn], true[drawn], max_prob[drawn])
        for m in study.METRICS:
            assert got[m][b] == pytest.approx(expected[m]), (m, b)


def test_the_primary_endpoint_ignores_the_gate_and_siims_metric_does_not(tmp_path):
    """A positive film the SIIM gate empties scores 0 on SIIM's metric and keeps its gate-free
    Dice on the primary endpoint; a gate-free false positive on an empty film counts nowhere
    on the primary."""
    rows = rows_from_counts(
        ["a", "b", "c"], [1, 1, 0], np.array([100, 100, 0]), np.array([0, 100, 0]), np.array([0, 80, 0]),
        [0.9, 0.9, 0.1], ungated=(np.array([100, 100, 50]), np.array([80, 80, 0])),
    )  # fmt: skip
    t = per_image.read(write_csv(tmp_path / "p.csv", rows))
    got = study.metric_samples(t, np.ones((1, 3)))
    assert got["dice_positive"][0] == pytest.approx(0.8)  # both positives at 0.8, the gate ignored
    assert got["siim_dice"][0] == pytest.approx((0 + 0.8 + 1) / 3)  # the emptied positive scores 0


def tables(runs: int, shift: float, seed: int, n: int = 40) -> list[dict]:
    """One in-memory table per run: Dice of the positives around 0.5 + shift, noisy by run."""
    rng = np.random.default_rng(seed)
    positive = np.arange(n) % 4 == 0
    return [
        table(positive, np.clip(np.where(positive, 0.5 + shift + rng.normal(0, 0.05, n), 1.0), 0, 1), rng.random(n))
        for _ in range(runs)
    ]


def ablation(runs: dict, **overrides) -> dict:
    settings = {"primary": "dice_positive", "confirmatory": "labels", "effect_of_interest": 0.05}
    return study.ablation(runs=runs, baselines={}, **{**settings, "resamples": 50, "seed": 0, **overrides})


def test_ablation_refuses_an_unknown_primary_and_unpaired_runs():
    runs = {100: {"none": tables(2, 0.0, 1), "labels": tables(2, 0.2, 2)}}
    with pytest.raises(ValueError, match="report.primary='dice'.*valid: siim_dice, dice_positive"):
        ablation(runs, primary="dice")
    with pytest.raises(ValueError, match="same runs"):
        ablation({**runs, 25: {"none": tables(2, 0.0, 3), "labels": tables(1, 0.2, 4)}})
    with pytest.raises(ValueError, match="3 run ids for 2 runs"):
        ablation(runs, run_ids=[0, 1, 2])


def test_the_confirmatory_contrast_is_tested_alone_and_the_others_with_holm():
    """labels is confirmatory with all the films (its adjusted p is its p); the other variants
    share Holm's correction; at the smaller share nothing is confirmatory; the transfer gaps
    are tested over the variants; no summary of training means not recorded."""
    runs = {
        share: {"none": tables(3, 0.0, 1), "labels": tables(3, 0.3, 2), "a": tables(3, 0.0, 3), "b": tables(3, 0.1, 4)}
        for share in (100, 25)
    }
    saved = ablation(runs, run_ids=[4, 5, 6])
    full = saved["families"]["100"]["vs_none"]
    c = saved["confirmatory"]
    assert c["contrast"] == "labels - none" and c["adjusted_p"] == c["p"] and c["called"]
    assert c == {**c, **full["labels"]["dice_positive"]}
    assert c["runs_needed"] is None or c["runs_needed"] >= 2
    adjusted, _ = bootstrap.holm([full[v]["dice_positive"]["p"] for v in ("a", "b")])
    assert [full[v]["dice_positive"]["adjusted_p"] for v in ("a", "b")] == pytest.approx(adjusted.tolist(), abs=1e-5)
    assert {row["dice_positive"]["test"] for row in saved["families"]["25"]["vs_none"].values()} == {"Holm over 3"}
    assert set(saved["gap_differences"]["25"]) == {"labels", "a", "b"}
    assert [row["run"] for row in saved["per_run"]["100"]["labels"]] == [4, 5, 6]
    assert len(saved["plateau_not_recorded"]) == 2 * 4 * 3 and saved["still_improving"] == []
    assert "clustering" not in saved and saved["families"]["100"]["vs_baseline"] == {}


def test_without_the_reference_variant_nothing_is_compared():
    saved = ablation({100: {"labels": tables(2, 0.2, 1)}, 25: {"labels": tables(2, 0.1, 2)}})
    assert "confirmatory" not in saved and saved["gap_differences"] == {}
    assert saved["families"]["100"]["vs_none"] == {}
    assert saved["families"]["100"]["smallest_detectable_difference"]["dice_positive"] is None


def test_check_same_images_names_the_file_and_the_row():
    a = table([1, 0, 0], [0.5, 1, 1], [0.9, 0.1, 0.2])
    swapped = {k: v[[0, 2, 1]] for k, v in a.items()}
    study.check_same_images({"a.csv": a, "b.csv": a})
    with pytest.raises(ValueError, match=r"b.csv: image order differs from a.csv \(row 2: img2 vs img1\)"):
        study.check_same_images({"a.csv": a, "b.csv": swapped})
    with pytest.raises(ValueError, match="b.csv: 2 images, but a.csv has 3"):
        study.check_same_images({"a.csv": a, "b.csv": {k: v[:2] for k, v in a.items()}})
    relabelled = {**a, "has_pneumothorax": np.array([True, True, False])}
    with pytest.raises(ValueError, match="b.csv: has_pneumothorax differs"):
        study.check_same_images({"a.csv": a, "b.csv": relabelled})


@pytest.mark.parametrize(
    ("summary", "row"),
    [
        (None, dict.fromkeys(study.training_row(None))),
        ({"selected": {"epoch": 5, "val_loss": 0.5312345678}}, {"selected_epoch": 5, "val_loss": 0.531235}),
        (
            {"plateau": {"met": False, "epochs": 16, "best_epoch": 15, "change": 0.07}, "precision": "bf16"},
            {"epochs": 16, "best_epoch": 15, "plateau_met": False, "change": 0.07, "precision": "bf16"},
        ),
    ],
)
def test_training_row_reads_what_a_summary_records(summary, row):
    expected = (
        dict.fromkeys(("selected_epoch", "val_loss", "epochs", "best_epoch", "plateau_met", "change", "precision"))
        | row
    )
    assert study.training_row(summary) == expected


@pytest.mark.parametrize(("x", "digits", "out"), [(0.1234567, 6, 0.123457), (float("nan"), 6, None), (None, 3, None)])
def test_number_is_json_safe(x, digits, out):
    assert study.number(x, digits) == out


@pytest.mark.parametrize(
    ("curve", "epochs"),
    [
        ([0.1, 0.5, 0.9, 1.0], 4),  # 0.9 < 0.95: the fourth epoch is the first at 95% of the best
        ([0.2, 0.96, 0.5, 1.0], 2),  # the first time counts, whatever follows
        ([0.8, 0.4, 0.6], 1),  # the best is the first epoch
        ([0.0, 0.0], 1),  # nothing learnt: 95% of 0 is reached at once
        ([], None),
    ],
)
def test_epochs_to_converge_counts_until_95_percent_of_the_best(curve, epochs):
    assert study.epochs_to_converge(curve) == epochs


def test_convergence_is_a_run_mean_with_a_t_interval_and_a_paired_difference_from_none():
    none = [[0.5, 1.0], [0.5, 0.6, 1.0], [1.0]]  # 2, 3 and 1 epochs
    labels = [[1.0], [0.2, 1.0], [1.0]]  # 1, 2 and 1
    result = study.convergence({"none": none, "labels": labels, "old": [[1.0], [], [1.0]]}, films_per_epoch=400)
    assert set(result) == {"none", "labels"}  # a variant missing a run's curve is left out
    assert result["none"]["per_run"] == [2, 3, 1] and result["none"]["films_seen"] == 800.0
    half = bootstrap.half_width(1.0 / 3, 3, 0.0)  # variance 1 over 3 runs, t with 2 df
    assert result["none"]["epochs"] == {"value": 2.0, "low": pytest.approx(2 - half), "high": pytest.approx(2 + half)}
    diff = result["labels"]["minus_none"]  # per run -1, -1, 0
    assert diff["value"] == pytest.approx(-2 / 3) and diff["low"] < diff["value"] < diff["high"]
    assert "minus_none" not in result["none"]
    one_run = study.convergence({"none": [[0.5, 1.0]]}, films_per_epoch=None)["none"]
    assert one_run["epochs"] == {"value": 2.0, "low": None, "high": None} and "films_seen" not in one_run
