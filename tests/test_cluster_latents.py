"""Pseudo-label validation: AMI, NMI and ARI of the autoencoder's clusters against the raw-pixel
baseline, with paired bootstrap intervals (pneumo.core.bootstrap's convention) and a
permutation test against chance."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from pneumo.core import metrics
from pneumo.tasks import cluster_latents


def test_compare_names_a_winner_only_when_the_ami_interval_excludes_zero():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 400)
    informative = np.where(rng.random(400) < 0.7, truth, rng.integers(0, 4, 400))
    noise = rng.integers(0, 4, 400)
    result = cluster_latents.compare(informative, noise, truth, resamples=500, seed=0)
    assert result["ami_difference"]["winner"] == "autoencoder" and result["ami_difference"]["low"] > 0
    assert result["ari_difference"]["low"] > 0 and "winner" not in result["nmi_difference"]  # AMI decides
    for name in ("autoencoder", "raw_pixels"):
        scores = result[name]
        clusters = informative if name == "autoencoder" else noise
        assert {k: scores[k] for k in ("nmi", "ari", "purity")} == metrics.clustering_scores(clusters, truth)
        assert scores["ami"] == adjusted_mutual_info_score(truth, clusters)
        for score in cluster_latents.SCORES:
            assert scores[f"{score}_low"] <= scores[score] <= scores[f"{score}_high"], (name, score)
    assert result["raw_pixels"]["ami_low"] < 0 < result["raw_pixels"]["ami_high"]  # chance: AMI about 0
    same = cluster_latents.compare(noise, noise, truth, resamples=500, seed=0)
    assert same["ami_difference"]["winner"] == "unresolved" and same["ami_difference"]["value"] == 0
    worse = cluster_latents.compare(noise, informative, truth, resamples=500, seed=0)
    assert worse["ami_difference"]["winner"] == "raw_pixels"


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
    got = cluster_latents.ami_from_tables(cluster_latents.contingency(clusters, labels, counts))
    for b, w in enumerate(counts):
        expected = adjusted_mutual_info_score(np.repeat(labels, w), np.repeat(clusters, w))
        assert got[b] == pytest.approx(expected, abs=1e-10), b


def test_expected_mutual_information_window_at_large_n():
    """Cell counts far from their mean are left out at large N: the AMI still equals sklearn's."""
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 6, 30_000)
    clusters = np.where(rng.random(30_000) < 0.05, truth, rng.integers(0, 6, 30_000))
    table = cluster_latents.contingency(clusters, truth, 1.0)
    assert cluster_latents.ami_from_tables(table)[0] == pytest.approx(
        adjusted_mutual_info_score(truth, clusters), abs=1e-12
    )


def test_permutation_p_against_chance():
    """Informative clusters: p is the smallest possible, 1 / (1 + permutations). Clusters that
    ignore the labels: over 200 such datasets p is about uniform (5% of them under 0.05),
    while NMI's chance level sits clearly above 0 and AMI's at 0."""
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 5, 300)
    informative = np.where(rng.random(300) < 0.3, truth, rng.integers(0, 5, 300))
    result = cluster_latents.chance(informative, truth, permutations=199, seed=0)
    assert result["ami_p"] == 1 / 200
    nulls = [cluster_latents.chance(rng.integers(0, 5, 300), truth, permutations=99, seed=s) for s in range(200)]
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
    whole = cluster_latents.chance(clusters, truth, permutations=250, seed=3)
    monkeypatch.setattr(cluster_latents, "RESAMPLE_CELLS", 300 * 7)  # blocks of 7 permutations
    assert cluster_latents.chance(clusters, truth, permutations=250, seed=3) == whole
    assert 0 < whole["ami_p"] < 1


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
        r = cluster_latents.compare(clusters, clusters, truth, resamples=300, seed=int(rng.integers(1 << 30)))
        for s, value in population.items():
            hits[s] += r["autoencoder"][f"{s}_low"] <= value <= r["autoencoder"][f"{s}_high"]
    assert min(hits.values()) >= 52, hits  # >= 87% of 60
