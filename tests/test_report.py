"""The report's stratified, paired bootstrap: coverage, pairing, stratification, the weighted
metrics against sklearn and pneumo.metrics, and the written report end to end."""

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumo.core import metrics
from pneumo.formats import per_image
from pneumo.tasks import report


def table(positive, dice, score) -> dict:
    """A per-image table for tests that need only dice and scores (pixel columns consistent-ish)."""
    positive = np.asarray(positive, bool)
    mask = np.where(positive, 100.0, 0.0)
    return {
        "image_id": np.array([f"img{i}" for i in range(len(positive))]),
        "has_pneumothorax": positive,
        "mask_pixels": mask,
        "pred_pixels": mask,
        "intersection": np.round(np.asarray(dice) * mask),
        "dice": np.asarray(dice, float),
        "max_prob": np.asarray(score, float),
    }


def rows_from_counts(ids, positive, mask, pred, inter, max_prob) -> list[dict]:
    """per_image.csv rows from pixel counts, Dice as evaluate computes it (1 when both empty)."""
    total = mask + pred
    dice = np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))
    return [
        {
            "image_id": i,
            "has_pneumothorax": int(y),
            "mask_pixels": int(m),
            "pred_pixels": int(p),
            "intersection": int(n),
            "dice": float(d),
            "max_prob": float(s),
        }
        for i, y, m, p, n, d, s in zip(ids, positive, mask, pred, inter, dice, max_prob, strict=True)
    ]


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=per_image.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


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
        samples = report.metric_samples(table(positive, dice, score), report.stratified_counts(positive, 300, trial))
        for m, value in truth.items():
            low, high = report.interval(samples[m])
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
    shared, other = report.stratified_counts(positive, 1000, 0), report.stratified_counts(positive, 1000, 1)
    base = report.metric_samples(a, shared)["siim_dice"]
    paired = report.interval(report.metric_samples(b, shared)["siim_dice"] - base)
    unpaired = report.interval(report.metric_samples(b, other)["siim_dice"] - base)
    assert paired[1] - paired[0] < 0.3 * (unpaired[1] - unpaired[0])
    assert paired[0] > 0 and unpaired[0] < 0 < unpaired[1]


@pytest.mark.parametrize(
    "positive",
    [[1, 0, 0, 0, 0], [0, 1, 0, 1, 1, 0, 0, 0, 0, 1], [1, 1, 1], [0, 0, 0, 0], [1] * 7 + [0] * 30],
)
def test_stratified_counts_keep_the_positive_count(positive):
    positive = np.array(positive, bool)
    w = report.stratified_counts(positive, 500, seed=3)
    assert w.shape == (500, len(positive)) and w.min() >= 0
    assert (w[:, positive].sum(1) == positive.sum()).all()
    assert (w[:, ~positive].sum(1) == (~positive).sum()).all()
    np.testing.assert_allclose(w.mean(0), 1, atol=0.25)  # every image is drawn, uniformly in its stratum
    assert w.std(0).max() > 0.5  # it does resample
    np.testing.assert_array_equal(w, report.stratified_counts(positive, 500, seed=3))
    assert not np.array_equal(w, report.stratified_counts(positive, 500, seed=4))


def test_weighted_auc_equals_sklearn_with_ties_and_constant_is_half():
    rng = np.random.default_rng(2)
    positive = np.arange(40) % 3 == 0
    score = np.round(rng.random(40) + 0.3 * positive, 1)  # one decimal: many ties, across classes too
    t = table(positive, np.ones(40), score)
    assert report.metric_samples(t, np.ones((1, 40)))["auc"][0] == pytest.approx(roc_auc_score(positive, score))
    w = report.stratified_counts(positive, 6, seed=0)
    for b, auc in enumerate(report.metric_samples(t, w)["auc"]):
        drawn = np.repeat(np.arange(40), w[b])
        assert auc == pytest.approx(roc_auc_score(positive[drawn], score[drawn]))
    constant = table(positive, np.ones(40), np.full(40, 0.37))
    assert report.metric_samples(constant, np.ones((1, 40)))["auc"].tolist() == [0.5]
    assert report.metric_samples(constant, w)["auc"].tolist() == [0.5] * 6


def test_metrics_from_csv_columns_equal_pneumo_metrics(tmp_path):
    """Masks -> per_image.csv -> the report's metrics equal pneumo.metrics on the masks, on the
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
    got = report.metric_samples(t, np.ones((1, n)))
    for m in report.METRICS:
        assert got[m][0] == pytest.approx(expected[m]), m
    w = report.stratified_counts(t["has_pneumothorax"], 4, seed=1)
    got = report.metric_samples(t, w)
    for b in range(4):
        drawn = np.repeat(np.arange(n), w[b])
        expected = metrics.segmentation_report(pred[drawn], true[drawn], max_prob[drawn])
        for m in report.METRICS:
            assert got[m][b] == pytest.approx(expected[m]), (m, b)


def keys(tree) -> list[str]:
    if isinstance(tree, dict):
        return [k for key, value in tree.items() for k in [key, *keys(value)]]
    return []


@pytest.fixture
def study(tmp_path) -> dict:
    """CSVs of a small study: `none` and `labels` (clearly better) over two seeds, `pseudo_labels`
    identical to `none`, and the two content-free baselines."""
    rng = np.random.default_rng(5)
    n, n_pos = 80, 24
    ids = [f"1.2.276.0.{i}" for i in range(n)]
    positive = np.arange(n) < n_pos
    mask = np.where(positive, rng.integers(20, 200, n), 0)

    def run(hit: float, false_positive: float, separation: float) -> list[dict]:
        found = positive & (rng.random(n) < 0.9)
        inter = np.where(found, np.round(mask * rng.uniform(hit - 0.2, hit, n)), 0).astype(int)
        fp = ~positive & (rng.random(n) < false_positive)
        pred = np.where(found, inter + rng.integers(0, 20, n), 0) + np.where(fp, rng.integers(5, 40, n), 0)
        score = np.clip(separation * positive + rng.normal(0.3, 0.2, n), 0, 1)
        return rows_from_counts(ids, positive, mask, pred, inter, score)

    runs = {}
    for v, quality in (("none", (0.4, 0.3, 0.1)), ("labels", (0.9, 0.05, 0.5))):
        runs[v] = [write_csv(tmp_path / f"evaluate/{v}-{s}/per_image.csv", run(*quality)) for s in (0, 1)]
    runs["pseudo_labels"] = []
    for path in runs["none"]:
        copy = tmp_path / "evaluate" / path.parent.name.replace("none", "pseudo_labels") / "per_image.csv"
        copy.parent.mkdir()
        copy.write_text(path.read_text())
        runs["pseudo_labels"].append(copy)
    zero = np.zeros(n, int)
    prior = np.where(positive, np.minimum(mask, 15), 0)
    baselines = {
        "all_empty": write_csv(
            tmp_path / "baselines/all_empty/per_image.csv", rows_from_counts(ids, positive, mask, zero, zero, zero)
        ),
        "location_prior": write_csv(
            tmp_path / "baselines/location_prior/per_image.csv",
            rows_from_counts(ids, positive, mask, np.full(n, 60), prior, np.full(n, 0.4)),
        ),
    }
    return {"runs": runs, "baselines": baselines}


def files(tmp_path) -> dict:
    return {"json_path": tmp_path / "a.json", "md_path": tmp_path / "a.md", "headline_path": tmp_path / "h.json"}


def test_report_end_to_end(tmp_path, study):
    out = report.report(**study, resamples=500, seed=0, **files(tmp_path))
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved == out
    assert not [k for k in keys(saved) if "." in k or " " in k]
    assert (saved["test_images"], saved["test_positive"], saved["resamples"]) == (80, 24, 500)
    for row in [*saved["variants"].values(), *saved["baselines"].values()]:
        for m in report.METRICS:
            assert row[m]["low"] <= row[m]["value"] <= row[m]["high"], m
    assert saved["variants"]["labels"]["seeds"] == 2
    assert saved["baselines"]["all_empty"]["auc"] == {"value": 0.5, "low": 0.5, "high": 0.5}

    better, same = saved["vs_none"]["labels"], saved["vs_none"]["pseudo_labels"]
    for m in ("siim_dice", "dice_positive", "auc"):
        assert better[m]["resolved"] and better[m]["low"] > 0 and better[m]["same_sign_seeds"] == "2/2", m
    for m in report.METRICS:
        assert not same[m]["resolved"] and same[m]["diff"] == 0, m
    vs_base = saved["vs_baseline"]["labels"]
    assert vs_base["siim_dice"]["baseline"] == "all_empty" and vs_base["siim_dice"]["resolved"]
    assert vs_base["dice_positive"]["baseline"] == "location_prior"
    worse = saved["vs_baseline"]["none"]["siim_dice"]  # false positives on 30% of the empty films
    assert worse["high"] < 0 and worse["resolved"] and worse["same_sign_seeds"] == "2/2"
    assert set(saved["smallest_detectable_difference"]) == {"versus", *report.METRICS}
    assert saved["smallest_detectable_difference"]["versus"] == "none"
    assert saved["smallest_detectable_difference"]["siim_dice"] > 0

    md = (tmp_path / "a.md").read_text()
    assert "80 test images (24 with pneumothorax), 2 seed(s) per variant, 500 bootstrap resamples" in md
    assert re.search(r"\| none \| 2 \| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \|.* \| 75\.3 \|", md)
    assert "| all_empty (baseline) | – | " in md
    vs_none = md.split("## Difference from `none`")[1].split("## Difference from the best")[0]
    labels_row = next(line for line in vs_none.splitlines() if line.startswith("| labels |"))
    same_row = next(line for line in vs_none.splitlines() if line.startswith("| pseudo_labels |"))
    assert re.search(r"\*\*\+\d\.\d{3} \[\+\d\.\d{3}, \+\d\.\d{3}\] ✓\*\* \(2/2\)", labels_row)
    assert "✓" not in same_row and "+0.000 [+0.000, +0.000]" in same_row
    vs_base_md = md.split("## Difference from the best content-free baseline")[1]
    assert re.search(r"\| none \| \*\*-\d\.\d{3} \[-\d\.\d{3}, -\d\.\d{3}\] ✓\*\* \(2/2\)", vs_base_md)
    assert "siim_dice (vs all_empty)" in md and "dice_positive (vs location_prior)" in md
    assert "Smallest detectable difference" in md and "interval of the difference excludes 0" in md

    # the headline: every variant and baseline, two numbers each, keys fit for `dvc exp show`
    head = json.loads((tmp_path / "h.json").read_text())
    assert list(head) == ["none", "labels", "pseudo_labels", "all_empty", "location_prior"]
    for name, row in head.items():
        source = {**saved["variants"], **saved["baselines"]}[name]["siim_dice"]
        assert row["dice"] == round(source["value"], 4)
        assert row["ci"] == round((source["high"] - source["low"]) / 2, 4) > 0 or name == "all_empty"
    assert not [k for k in keys(head) if "." in k or " " in k]


def test_headline_takes_the_clustering_nmi(tmp_path, study):
    clustering = {"autoencoder": {"nmi": 0.0211, "ari": 0.0}, "raw_pixels": {"nmi": 0.01401, "ari": 0.0}}
    (tmp_path / "pl.json").write_text(json.dumps(clustering))
    report.report(**study, resamples=20, seed=0, **files(tmp_path), clustering_path=tmp_path / "pl.json")
    head = json.loads((tmp_path / "h.json").read_text())
    assert head["clustering"] == {"nmi_autoencoder": 0.0211, "nmi_raw_pixels": 0.014}


def test_report_fails_on_a_file_with_other_image_order(tmp_path, study):
    bad = study["runs"]["labels"][1]
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    with pytest.raises(ValueError, match=re.escape(str(bad))) as error:
        report.report(**study, resamples=10, seed=0, **files(tmp_path))
    assert "\n" not in str(error.value) and "order" in str(error.value)
    assert not (tmp_path / "a.json").exists()


def test_stage_reads_params_and_writes_both_files(root, tmp_path, study):
    (tmp_path / "params.yaml").write_text(
        "seed: 7\ntrain_unet: {variants: [none, labels], seeds: [0, 1]}\nreport: {resamples: 50}\n"
    )
    cmd = [sys.executable, str(root / "stages" / "report.py"), "--results", "evaluate", "--baselines", "baselines"]
    (tmp_path / "pl.json").write_text(json.dumps({n: {"nmi": 0.5} for n in ("autoencoder", "raw_pixels")}))
    cmd += [
        "--json",
        "m/ablation.json",
        "--md",
        "m/ablation.md",
        "--headline",
        "m/h.json",
        "--pseudo-labels",
        "pl.json",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "m" / "ablation.json").read_text())
    assert list(saved["variants"]) == ["none", "labels"] and saved["resamples"] == 50
    assert list(saved["baselines"]) == ["all_empty", "location_prior"]
    assert (tmp_path / "m" / "ablation.md").read_text().startswith("# Ablation")
    head = json.loads((tmp_path / "m" / "h.json").read_text())
    assert list(head) == ["none", "labels", "all_empty", "location_prior", "clustering"]
