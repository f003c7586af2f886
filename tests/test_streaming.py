"""Stages that stream a split batch by batch (so memory stays flat in the number of films)
give the results of the whole-array computations they replace: exactly where the result
is made of integer counts, to float rounding where a float loss is summed in pieces."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pneumo.core import inference, metrics, models, validation
from pneumo.formats import per_image
from pneumo.formats.prepared import load_prepared, split_indices
from pneumo.tasks import baselines, cluster_latents, evaluate


def batches(n: int, size: int):
    return [slice(a, a + size) for a in range(0, n, size)]


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    true = np.zeros((23, 12, 12), np.uint8)
    for i in range(0, 23, 3):  # every third image has a finding
        true[i, 2:6, 3 : 3 + i % 7 + 1] = 1
    probs = np.clip(0.7 * true + rng.normal(0.15, 0.2, true.shape), 0, 1).astype(np.float32)
    return probs, true


def test_post_processing_search_in_batches_equals_the_whole_split(split):
    probs, true = split
    tops, areas, bottoms = [0.4, 0.6, 0.8], [0, 2, 5], [0.3, 0.5]
    thresholds = sorted(set(tops) | set(bottoms))
    parts = [metrics.threshold_counts(probs[b], true[b], thresholds) for b in batches(len(true), 5)]
    above, hits = (np.concatenate([p[j] for p in parts]) for j in (0, 1))
    true_pixels = true.reshape(len(true), -1).sum(1)
    streamed = metrics.best_postprocess(above, hits, true_pixels, thresholds, tops, areas, bottoms)
    assert streamed == metrics.tune_postprocess(probs, true, tops, areas, bottoms)
    # and the search itself is the brute force one
    brute = max(
        (metrics.dice_per_image(metrics.postprocess(probs, t, a, b), true).mean(), -k)
        for k, (t, a, b) in enumerate((t, a, b) for t in tops for a in areas for b in bottoms if b <= t)
    )
    assert streamed["score"] == pytest.approx(brute[0], abs=1e-12)


def test_report_from_batch_counts_equals_the_whole_array_metrics(split):
    probs, true = split
    pred, score = probs > 0.5, probs.reshape(len(probs), -1).max(1)
    counts = metrics.concat_counts([metrics.pixel_counts(pred[b], true[b]) for b in batches(len(true), 4)])
    report = metrics.report_from_counts(counts, score)
    positive = true.reshape(len(true), -1).any(1)
    dice = metrics.dice_per_image(pred, true)
    assert report == {
        "siim_dice": float(dice.mean()),
        "dice_positive": float(dice[positive].mean()),
        "dice_pooled": metrics.pooled_dice(pred, true),
        "iou": float(metrics.iou_per_image(pred, true).mean()),
        "auc": float(roc_auc_score(positive, score)),
        "images": 23,
        "positive_images": 8,
    }


@pytest.mark.parametrize("pixel_loss", ["bce", "focal"])
@pytest.mark.parametrize("empty", [False, True])
def test_validation_in_batches_equals_the_whole_split_loss_and_scores(split, pixel_loss, empty):
    probs, true = split
    true = true * (not empty)
    criterion = validation.WeightedSum(validation.PIXEL_LOSSES[pixel_loss](), 1.0, 0.7)
    streamed = validation.Validation(criterion)
    for b in batches(len(true), 5):
        streamed.add(probs[b], true[b])
    whole = validation.validation_loss(criterion, probs, true)
    assert streamed.loss() == pytest.approx(whole, rel=2e-6)  # float32 whole-array sums vs float64 batch sums
    positive = true.reshape(len(true), -1).any(1)
    assert streamed.scores() == validation.validation_scores(probs, true, positive)


def test_iter_probs_yields_the_rows_and_probabilities_of_predict_probs():
    torch.manual_seed(0)
    model, images = (
        torch.nn.Conv2d(1, 1, 3, padding=1),
        np.random.default_rng(0).integers(0, 256, (7, 32, 32), np.uint8),
    )
    rows = np.array([6, 0, 3, 2, 5])
    parts = list(inference.iter_probs(model, images, rows, torch.device("cpu"), batch_size=2))
    assert [list(r) for r, _ in parts] == [[6, 0], [3, 2], [5]]
    whole = inference.predict_probs(model, images, rows, torch.device("cpu"), batch_size=2)
    assert np.array_equal(np.concatenate([p for _, p in parts]), whole)


@pytest.mark.slow  # builds and runs a U-Net: seconds
def test_evaluate_streamed_equals_the_whole_array_evaluation(tiny_siim, tmp_path):
    """`evaluate` one image per batch against the whole-array computation it replaced."""
    torch.manual_seed(1)
    models.save_checkpoint(
        tmp_path / "model.safetensors",
        models.build_unet(1),
        kind="unet",
        encoder=models.ENCODER,
        in_channels=1,
        image_size=32,
        variant="none",
        best_epoch=0,
    )
    (tmp_path / "cxr14.json").write_text(json.dumps({"images": 0, "excluded_leakage": 0}))
    grid = {"tops": [0.3, 0.5, 0.55], "min_area_fractions": [0.0, 0.01, 0.1], "bottoms": [0.3, 0.5]}
    result = evaluate.evaluate(
        model_path=tmp_path / "model.safetensors",
        siim_dir=tiny_siim / "siim",
        postprocess_path=tmp_path / "postprocess.json",
        card_path=tmp_path / "card.md",
        metrics_path=tmp_path / "metrics.json",
        plots_dir=tmp_path / "plots",
        prepare_cxr14_metrics=tmp_path / "cxr14.json",
        n_overlays=3,
        threshold=0.5,
        device="cpu",
        batch_size=1,
        **grid,
    )
    model, _ = inference.load_unet(tmp_path / "model.safetensors", torch.device("cpu"))
    images, masks, rows = load_prepared(tiny_siim / "siim")
    val, test = split_indices(rows, "val"), split_indices(rows, "test")
    areas = metrics.min_areas(grid["min_area_fractions"], 32)
    tuned = metrics.tune_postprocess(
        inference.predict_probs(model, images, val, "cpu"), masks[val], grid["tops"], areas, grid["bottoms"]
    )
    probs = inference.predict_probs(model, images, test, "cpu")
    pred = metrics.postprocess(probs, tuned["top"], tuned["min_area"], tuned["bottom"])
    expected = metrics.segmentation_report(pred, masks[test].astype(bool), probs.reshape(len(test), -1).max(1))
    # the segmentation endpoint scores the pixels above the threshold, without the gate
    ungated = metrics.segmentation_report(probs > 0.5, masks[test].astype(bool), probs.reshape(len(test), -1).max(1))
    expected["dice_positive"] = ungated["dice_positive"]
    assert result["val"]["siim_dice"] == pytest.approx(tuned["score"], abs=1e-6)
    assert {k: result["postprocess"][k] for k in ("top", "min_area", "bottom")} == {
        k: tuned[k] for k in ("top", "min_area", "bottom")
    }
    for key, value in expected.items():
        assert result["test"][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert (tmp_path / "plots" / "overlays.png").exists()
    table = per_image.read(tmp_path / "plots" / "per_image.csv")
    assert np.array_equal(table["pred_pixels_ungated"], (probs > 0.5).reshape(len(test), -1).sum(1))


def test_shown_overlays_are_those_of_sorting_positives_first():
    truth = np.zeros((9, 2, 2), bool)
    truth[[1, 4, 5, 8], 0, 0] = True
    shown = evaluate.Shown(3)
    for b in batches(9, 2):
        rows = np.arange(9)[b]
        shown.offer(rows, truth[b], truth[b])
    present = truth.reshape(9, -1).any(1)
    assert [row for row, _, _ in shown.picked()] == list(np.argsort(~present, kind="stable")[:3])
    few = evaluate.Shown(6)
    few.offer(np.arange(9), truth, truth)
    assert [row for row, _, _ in few.picked()] == list(np.argsort(~present, kind="stable")[:6])


def test_baselines_in_chunks_equal_the_whole_arrays(tiny_siim, tmp_path, monkeypatch):
    _, masks, rows = load_prepared(tiny_siim / "siim")
    train = split_indices(rows, "train")
    prior = baselines.mean_mask(masks, train, masks.shape[1])
    assert np.array_equal(prior, np.asarray(masks[train], np.float32).mean(0))
    whole = baselines.baselines(siim_dir=tiny_siim / "siim", out_dir=tmp_path / "a", metrics_path=tmp_path / "a.json")
    monkeypatch.setattr(baselines, "CHUNK", 1)
    assert np.array_equal(baselines.mean_mask(masks, train, masks.shape[1]), prior)
    chunked = baselines.baselines(siim_dir=tiny_siim / "siim", out_dir=tmp_path / "b", metrics_path=tmp_path / "b.json")
    assert json.dumps(chunked) == json.dumps(whole)  # nan included
    for name in ("all_empty", "location_prior"):
        a, b = (tmp_path / run / name / "per_image.csv" for run in ("a", "b"))
        assert a.read_text() == b.read_text()


def test_bootstrap_in_blocks_draws_and_scores_what_one_table_does(monkeypatch):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 300)
    ours, baseline = np.where(rng.random(300) < 0.6, truth, rng.integers(0, 4, 300)), rng.integers(0, 4, 300)
    latents = {"autoencoder": ours, "raw_pixels": baseline}
    whole = cluster_latents.compare(latents, truth, resamples=250, seed=3)
    monkeypatch.setattr(metrics, "RESAMPLE_CELLS", 300 * 7)  # blocks of 7 resamples
    assert cluster_latents.compare(latents, truth, resamples=250, seed=3) == whole
