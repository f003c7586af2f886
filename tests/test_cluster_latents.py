"""Pseudo-label validation: AMI, NMI and ARI of each latent's clusters (autoencoder, ssl) against
the raw-pixel baseline, with paired bootstrap intervals (pneumo.core.bootstrap's convention); the
stage end to end with its controls' CSVs, with and without the ssl encoder. The scores and the
test against chance themselves: tests/test_metrics.py; the clustering: tests/test_clustering.py."""

import csv

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from pneumo.core import metrics, models, runtime
from pneumo.tasks import cluster_latents


def test_compare_names_a_winner_only_when_the_ami_interval_excludes_zero():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 400)
    informative = np.where(rng.random(400) < 0.7, truth, rng.integers(0, 4, 400))
    noise = rng.integers(0, 4, 400)
    result = cluster_latents.compare({"autoencoder": informative, "raw_pixels": noise}, truth, resamples=500, seed=0)
    d = result["minus_raw_pixels"]["autoencoder"]
    assert d["ami"]["winner"] == "autoencoder" and d["ami"]["low"] > 0
    assert d["ari"]["low"] > 0 and "winner" not in d["nmi"]  # AMI decides
    for name in ("autoencoder", "raw_pixels"):
        scores = result[name]
        clusters = informative if name == "autoencoder" else noise
        assert {k: scores[k] for k in ("nmi", "ari", "purity")} == metrics.clustering_scores(clusters, truth)
        assert scores["ami"] == adjusted_mutual_info_score(truth, clusters)
        for score in cluster_latents.SCORES:
            assert scores[f"{score}_low"] <= scores[score] <= scores[f"{score}_high"], (name, score)
    assert result["raw_pixels"]["ami_low"] < 0 < result["raw_pixels"]["ami_high"]  # chance: AMI about 0
    same = cluster_latents.compare({"ssl": noise, "raw_pixels": noise}, truth, resamples=500, seed=0)
    assert same["minus_raw_pixels"]["ssl"]["ami"]["winner"] == "unresolved"
    assert same["minus_raw_pixels"]["ssl"]["ami"]["value"] == 0
    # several latents, each against the baseline on the same resamples
    both = cluster_latents.compare(
        {"autoencoder": noise, "ssl": informative, "raw_pixels": informative}, truth, resamples=500, seed=0
    )
    assert both["minus_raw_pixels"]["autoencoder"]["ami"]["winner"] == "raw_pixels"
    assert both["minus_raw_pixels"]["ssl"]["ami"] | {"se": 0} == {
        "value": 0,
        "low": 0,
        "high": 0,
        "se": 0,
        "winner": "unresolved",
    }


def test_bias_corrected_interval_covers_the_population_nmi_and_ami():
    """Clusters that agree with the labels 40% of the time beyond chance: over repeated
    samples the interval holds the population NMI and AMI (estimated on a huge sample) about
    95% of the time. Uncorrected percentile intervals sit above them (duplicates look like
    agreement) and cover them far less often."""
    rng = np.random.default_rng(1)

    def draw(n):
        truth = rng.integers(0, 5, n)
        return truth, np.where(rng.random(n) < 0.4, truth, rng.integers(0, 5, n))

    truth, clusters = draw(200_000)
    population = {"nmi": metrics.clustering_scores(clusters, truth)["nmi"]}
    population["ami"] = adjusted_mutual_info_score(truth, clusters)
    hits = {s: 0 for s in population}
    for _ in range(60):
        truth, clusters = draw(300)
        seed = int(rng.integers(1 << 30))
        r = cluster_latents.compare({"autoencoder": clusters, "raw_pixels": clusters}, truth, resamples=300, seed=seed)
        for s, value in population.items():
            hits[s] += r["autoencoder"][f"{s}_low"] <= value <= r["autoencoder"][f"{s}_high"]
    assert min(hits.values()) >= 52, hits  # >= 87% of 60


def test_the_stage_clusters_every_latent_and_writes_the_controls(tiny_cxr14, tmp_path):
    """One run end to end: the autoencoder latent, the ssl embedding and raw pixels clustered
    and validated against chance; pseudo_labels.csv holds the chosen latent's ids, the
    permuted control the same ids shuffled (same cluster sizes), raw_clusters the pixels'."""
    runtime.seed_everything(0)
    autoencoder = models.build_autoencoder("resnet34", in_channels=1, depth=5, width=8, latent=16)
    model_args = {"in_channels": 1, "depth": 5, "width": 8, "latent": 16}
    models.save_checkpoint(
        tmp_path / "ae.safetensors", autoencoder, kind="autoencoder", arch="resnet34", model_args=model_args
    )
    models.save_checkpoint(tmp_path / "ssl.safetensors", models.build_encoder(1), source="ssl")
    common = {
        "images_dir": tiny_cxr14,
        "model_path": tmp_path / "ae.safetensors",
        "classes": ["No Finding", "Effusion", "Pneumothorax"],
        "standardize": True,
        "pca_dim": 8,
        "method": "kmeans",
        "k": 0,
        "raw_size": 8,
        "grid": 2,
        "resamples": 100,
        "permutations": 99,
        "seed": 0,
        "device": "cpu",
    }
    result = cluster_latents.cluster_latents(
        **common,
        ssl_path=tmp_path / "ssl.safetensors",
        latent="ssl",
        out_dir=tmp_path / "0",
        metrics_path=tmp_path / "0.json",
        plots_dir=tmp_path / "plots",
    )
    assert result["pseudo_labels"] == "ssl" and set(result["minus_raw_pixels"]) == {"autoencoder", "ssl"}
    for name in ("autoencoder", "ssl", "raw_pixels"):
        assert 0 < result[name]["ami_p"] <= 1 and result[name]["ami_low"] <= result[name]["ami"]
    ids = {}
    for name in ("pseudo_labels", "permuted_clusters", "raw_clusters"):
        with open(tmp_path / "0" / f"{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        # the training and validation films only: the 40 probe films (80-119) are clustered by no one
        assert [r["image_id"] for r in rows] == [f"{i}.png" for i in range(80)]
        ids[name] = np.array([int(r["cluster"]) for r in rows])
    assert sorted(ids["permuted_clusters"]) == sorted(ids["pseudo_labels"])
    assert not np.array_equal(ids["permuted_clusters"], ids["pseudo_labels"])
    # Effusion films are brighter: raw pixels find them, far beyond chance
    assert result["raw_pixels"]["ami"] > 0.2 and result["raw_pixels"]["ami_p"] == 0.01
    # without the ssl encoder (an experiment): the autoencoder's clusters are the pseudo-labels,
    # and the other latents' clusters are those of the run with it (each clustering on its own)
    alone = cluster_latents.cluster_latents(
        **common,
        ssl_path=None,
        latent="autoencoder",
        out_dir=tmp_path / "alone",
        metrics_path=tmp_path / "alone.json",
        plots_dir=tmp_path / "alone-plots",
    )
    assert set(alone["minus_raw_pixels"]) == {"autoencoder"} and "ssl" not in alone
    assert alone["raw_pixels"] == result["raw_pixels"] and alone["autoencoder"]["ami"] == result["autoencoder"]["ami"]
    for name in ("raw_clusters", "pseudo_labels"):
        assert (tmp_path / "alone" / f"{name}.csv").exists()
    assert (tmp_path / "alone" / "raw_clusters.csv").read_bytes() == (tmp_path / "0" / "raw_clusters.csv").read_bytes()
    assert {p.name for p in (tmp_path / "alone-plots").iterdir()} == {
        "projection.png",
        "cluster_vs_label.png",
        "histogram.json",
    }
    with pytest.raises(ValueError, match="ssl needs the ssl encoder"):
        cluster_latents.cluster_latents(
            **common,
            ssl_path=None,
            latent="ssl",
            out_dir=tmp_path / "1",
            metrics_path=tmp_path / "1.json",
            plots_dir=tmp_path / "plots",
        )
