"""The linear probe: frozen encoder features, a logistic regression per class, ROC AUC on the
held-out split with the report's seed-aware intervals, each encoder against `none`."""

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumo.core import bootstrap, models, runtime
from pneumo.tasks import linear_probe


def test_auc_of_the_data_is_sklearns_and_resamples_move_it():
    rng = np.random.default_rng(0)
    truth = (rng.random((60, 2)) < 0.4).astype(float)
    scores = np.round(truth + rng.normal(0, 1, truth.shape), 1)  # ties on purpose
    counts = np.vstack([np.ones(60, np.int64), bootstrap.stratified_counts(truth[:, 0] > 0, 50, 1)])
    aucs = linear_probe.auc_samples(scores, truth, counts)
    assert aucs.shape == (51, 2)
    for j in range(2):
        assert aucs[0, j] == pytest.approx(roc_auc_score(truth[:, j], scores[:, j]))
    assert aucs[1:].std(0).min() > 0


def test_a_probe_reads_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 2)) < 0.5).astype(float)
    x = rng.normal(size=(300, 20))
    x[:, 0] += 3 * y[:, 0]  # class 0 is written in feature 0; class 1 nowhere
    scores = linear_probe.fit_probe(x[:200], y[:200], x[200:], c=0.1)
    auc = linear_probe.auc_samples(scores, y[200:], np.ones((1, 100)))[0]
    assert auc[0] > 0.95 and 0.35 < auc[1] < 0.65


def test_every_encoder_of_every_run_is_probed_with_seed_aware_intervals(tiny_cxr14, tmp_path):
    films = tiny_cxr14
    encoders = tmp_path / "encoders"
    for r in (0, 1):
        runtime.seed_everything(r)
        models.save_checkpoint(encoders / f"none-{r}.safetensors", models.build_encoder(1), source="none")
        shutil.copy(encoders / f"none-{r}.safetensors", encoders / f"copy-{r}.safetensors")
    table = linear_probe.linear_probe(
        images_dir=films,
        encoders_dir=encoders,
        encoders=["none", "copy"],
        run_ids=[0, 1],
        classes=["No Finding", "Effusion", "Pneumothorax"],
        c=0.1,
        resamples=200,
        seed=0,
        out_path=tmp_path / "probe.json",
        device="cpu",
    )
    assert json.loads((tmp_path / "probe.json").read_text()) == table
    assert table["split"]["test_images"] == 40 and table["method"] == bootstrap.METHODS[bootstrap.T_RUNS_IMAGES]
    none = table["encoders"]["none"]
    assert none["by_class"]["effusion"] > 0.9  # brightness: even random features hold it
    assert abs(none["pneumothorax_auc"]["value"] - 0.5) < 0.25
    for score in ("macro_auc", "pneumothorax_auc"):
        e = none[score]
        assert e["low"] <= e["value"] <= e["high"] and e["value"] == pytest.approx(np.mean(e["per_run"]))
        assert len(set(e["per_run"])) == 2  # two runs, two random encoders
        # the same encoders under another name: identical scores, a difference of exactly 0
        assert table["encoders"]["copy"][score]["per_run"] == e["per_run"]
        assert table["encoders"]["copy"]["minus_none"][score] == {"value": 0, "low": 0, "high": 0}
    assert "minus_none" not in none


def test_a_split_without_a_scorable_class_is_reported_not_fatal(tiny_cxr14, tmp_path):
    """A class no film has (a handful of real sample films can lack every finding): nothing
    can be scored; the stage says so in its table and the pipeline goes on."""
    films = tmp_path / "cxr14"
    films.mkdir()
    shutil.copy(tiny_cxr14 / "images.npy", films / "images.npy")
    rows = (tiny_cxr14 / "index.csv").read_text().splitlines()
    (films / "index.csv").write_text("\n".join([rows[0] + ",Nodule", *(r + ",0" for r in rows[1:])]) + "\n")
    table = linear_probe.linear_probe(
        images_dir=films,
        encoders_dir=tmp_path / "encoders",  # never read: there is nothing to probe
        encoders=["none"],
        run_ids=[0],
        classes=["Nodule"],
        c=0.1,
        resamples=10,
        seed=0,
        out_path=tmp_path / "probe.json",
        device="cpu",
    )
    assert table["encoders"] == {} and "nothing probed" in table["skipped"]
    assert json.loads((tmp_path / "probe.json").read_text()) == table
