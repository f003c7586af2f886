"""The linear probe: frozen encoder features per layer, a logistic regression per class, ROC AUC
on the CXR-14 probe split and on SIIM's validation films with the report's seed-aware
intervals, each encoder against `none`."""

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


def test_every_encoder_of_every_run_is_probed_with_seed_aware_intervals(tiny_cxr14, tiny_siim_films, tmp_path):
    films = tiny_cxr14
    encoders = tmp_path / "encoders"
    for r in (0, 1):
        runtime.seed_everything(r)
        models.save_checkpoint(encoders / f"none-{r}.safetensors", models.build_encoder(1), source="none")
        shutil.copy(encoders / f"none-{r}.safetensors", encoders / f"copy-{r}.safetensors")
    table = linear_probe.linear_probe(
        images_dir=films,
        siim_dir=tiny_siim_films,
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
    assert table["split"] | {"untouched": None} == {
        "fit": "train", "fit_images": 60, "scored": "probe", "scored_images": 40, "untouched": None
    }  # fmt: skip
    assert table["method"] == bootstrap.METHODS[bootstrap.T_RUNS_IMAGES]
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
    # every layer: the headline is layer4's; brightness is in every layer
    layers = table["layers"]["none"]
    assert list(layers) == ["layer1", "layer2", "layer3", "layer4"]
    assert layers["layer4"]["macro_auc"] == none["macro_auc"]
    assert len({layers[n]["macro_auc"]["value"] for n in layers}) == 4  # four different feature sets
    assert table["layers"]["copy"]["layer1"]["minus_none"]["macro_auc"] == {"value": 0, "low": 0, "high": 0}
    # SIIM: the bright lesions are in the features of even a random encoder, scored on validation
    siim = table["siim"]
    assert siim["split"] == {
        "fit": "train",
        "fit_images": 60,
        "scored": "val",
        "scored_images": 30,
        "scored_positives": 10,
    }
    for layer, e in siim["encoders"]["none"].items():
        assert e["auc"]["value"] > 0.8, layer
        assert e["auc"]["low"] <= e["auc"]["value"] <= e["auc"]["high"] and len(e["auc"]["per_run"]) == 2
    assert siim["encoders"]["copy"]["layer4"]["minus_none"]["auc"] == {"value": 0, "low": 0, "high": 0}


def test_a_split_without_a_scorable_class_is_reported_not_fatal(tiny_cxr14, tiny_siim_films, tmp_path):
    """A class no film has (a handful of real sample films can lack every finding): nothing
    can be scored; the stage says so in its table and the pipeline goes on."""
    films = tmp_path / "cxr14"
    films.mkdir()
    shutil.copy(tiny_cxr14 / "images.npy", films / "images.npy")
    rows = (tiny_cxr14 / "index.csv").read_text().splitlines()
    (films / "index.csv").write_text("\n".join([rows[0] + ",Nodule", *(r + ",0" for r in rows[1:])]) + "\n")
    only_positive = tmp_path / "siim"  # every SIIM film has a pneumothorax: no AUC
    only_positive.mkdir()
    for name in ("images.npy", "masks.npy"):
        shutil.copy(tiny_siim_films / name, only_positive / name)
    siim_rows = (tiny_siim_films / "index.csv").read_text().splitlines()
    (only_positive / "index.csv").write_text(
        "\n".join([siim_rows[0], *(r[: r.rfind(",")] + ",7" for r in siim_rows[1:])]) + "\n"
    )
    table = linear_probe.linear_probe(
        images_dir=films,
        siim_dir=only_positive,
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
    assert table["siim"]["encoders"] == {} and "nothing probed" in table["siim"]["skipped"]
    assert json.loads((tmp_path / "probe.json").read_text()) == table


def test_a_class_on_every_training_film_is_left_out_not_fatal(tiny_cxr14, tiny_siim_films, tmp_path):
    """A class every training film has (a handful of real films can be all `No Finding`): a logistic
    regression needs both labels, so the class is left out of the table instead of stopping the stage."""
    films = tmp_path / "cxr14"
    films.mkdir()
    shutil.copy(tiny_cxr14 / "images.npy", films / "images.npy")
    rows = (tiny_cxr14 / "index.csv").read_text().splitlines()
    every_train = [r + (",1" if ",train," in r else f",{i % 2}") for i, r in enumerate(rows[1:])]
    (films / "index.csv").write_text("\n".join([rows[0] + ",Nodule", *every_train]) + "\n")
    runtime.seed_everything(0)
    models.save_checkpoint(tmp_path / "encoders" / "none-0.safetensors", models.build_encoder(1), source="none")
    table = linear_probe.linear_probe(
        images_dir=films,
        siim_dir=tiny_siim_films,
        encoders_dir=tmp_path / "encoders",
        encoders=["none"],
        run_ids=[0],
        classes=["Effusion", "Nodule"],
        c=0.1,
        resamples=10,
        seed=0,
        out_path=tmp_path / "probe.json",
        device="cpu",
    )
    assert table["classes"] == ["Effusion"] and "skipped" not in table
