"""`cluster_latents`: pseudo-labels from clustering the autoencoder's latent space (the
study's) or the `ssl` encoder's embedding (the field's: `cluster_latents.latent`), the two
controls of the pseudo-label claim, and the validation of every clustering against the true
CXR-14 labels, which the clustering never sees. Only the films an encoder may see (train and
validation) are clustered: the linear probe's split stays untouched (`seen_indices`).

The autoencoder's latent is its last encoder stages and bottleneck, each pooled to a
`grid` x `grid` layout (`models.pooled_features`): a global average would code brightness,
pose and body size and drown a finding that covers 1% of the film. The ssl embedding is
what VICReg trains to be invariant to exposure and framing: the last stage, averaged. All
are clustered alike (standardised, PCA, `method` with `k` clusters; k well above the
number of classes over-clusters, as the field does before pseudo-labelling).

Validation uses the images with exactly one label in the class list (`No Finding`
included), so each has one true class; the same clustering of raw downsampled pixels is
the baseline that shows whether a latent helped. Agreement is measured against chance, not
against 0: adjusted mutual information (AMI: mutual information minus its expectation
under random cluster ids with the same cluster sizes, 0 at chance) with a permutation
p-value (cluster ids shuffled against the labels), for every latent. AMI, NMI and ARI come
with paired bootstrap intervals (the same resampled images for all latents,
`pneumo.core.bootstrap`'s convention), and so does each latent's difference from raw
pixels; a winner is named on AMI only when that interval excludes 0. One call of this
stage is one run: the report combines the runs.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from pneumo.core import bootstrap, clustering, data, inference, metrics, runtime
from pneumo.core.inference import encoder_features, load_autoencoder
from pneumo.formats.prepared import load_prepared, seen_indices

log = logging.getLogger(__name__)

SCORES = ("ami", "nmi", "ari")
BASELINE = "raw_pixels"  # the latent every other is compared with


def _bootstrap(latents: dict[str, np.ndarray], truth: np.ndarray, resamples: int, seed: int) -> dict:
    """Each latent's SCORES on the same `resamples` bootstrap resamples of the images, drawn
    and scored a block at a time (the same draws as all at once): a (resamples, N) table
    would be 1.8 GB for 112k films."""
    rng, block = np.random.default_rng(seed), max(1, metrics.RESAMPLE_CELLS // max(len(truth), 1))
    parts: dict[str, list[dict]] = {name: [] for name in latents}
    for start in range(0, resamples, block):
        counts = rng.multinomial(len(truth), np.full(len(truth), 1 / len(truth)), min(block, resamples - start))
        for name, c in latents.items():
            parts[name].append(metrics.clustering_scores_resampled(c, truth, counts))
    return {name: {s: np.concatenate([p[s] for p in parts[name]]) for s in SCORES} for name in latents}


def compare(latents: dict[str, np.ndarray], truth: np.ndarray, resamples: int, seed: int) -> dict:
    """AMI, NMI, ARI (and purity) of each latent's clusters (`latents`: name -> cluster ids,
    the raw-pixel baseline among them), each with a 95% bootstrap interval, and for every
    other latent the paired interval of its difference from the baseline (the same resampled
    images for both), under `minus_raw_pixels`. A winner is named on AMI, only when that
    interval excludes 0. Intervals follow `bootstrap.interval`: percentiles re-centred on the
    estimate, because duplicated images look like agreement and raise every resampled score
    above the sample's own."""
    points = {
        name: {"ami": metrics.adjusted_mutual_info(c, truth), **metrics.clustering_scores(c, truth)}
        for name, c in latents.items()
    }
    samples = _bootstrap(latents, truth, resamples, seed)
    out: dict = {f"minus_{BASELINE}": {}}
    for name in latents:
        out[name] = dict(points[name])
        for score in SCORES:
            low, high = bootstrap.interval(points[name][score], samples[name][score])
            out[name] |= {f"{score}_low": low, f"{score}_high": high}
    for name in latents:
        if name == BASELINE:
            continue
        differences = {}
        for score in SCORES:
            value = points[name][score] - points[BASELINE][score]
            diff = samples[name][score] - samples[BASELINE][score]
            low, high = bootstrap.interval(value, diff)
            differences[score] = {"value": value, "low": low, "high": high, "se": float(diff.std(ddof=1))}
        d = differences["ami"]
        d["winner"] = "unresolved" if d["low"] <= 0 <= d["high"] else (name if d["value"] > 0 else BASELINE)
        out[f"minus_{BASELINE}"][name] = differences
    return out


def true_classes(rows: list[dict], classes: list[str]) -> np.ndarray:
    """Index of the single true class per image, -1 where an image has none or several."""
    hot = np.array([[int(r[c]) for c in classes] for r in rows])
    return np.where(hot.sum(1) == 1, hot.argmax(1), -1)


Clusterer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # features -> (reduced, cluster ids)


def _cluster_every_latent(
    images: np.ndarray,
    seen: np.ndarray,
    model_path: Path,
    ssl_path: Path | None,
    reduce_and_cluster: Clusterer,
    scratch: Path,
    raw_size: int,
    grid: int,
    in_memory_mb: float,
    batch_size: int,
    dev,
) -> tuple[dict, dict, int]:
    """(reduced features, cluster ids, each by latent name; the autoencoder latent's width) of
    the autoencoder's latents, the ssl embedding (when `ssl_path` is given) and raw pixels of
    the films at `seen`.
    Latents and raw pixels go to `scratch` batch by batch; small ones are then read back whole."""
    reduced, clusters = {}, {}
    model = load_autoencoder(model_path, dev)
    feed = data.loader(data.Arrays(images, None, seen), batch_size)
    started = time.perf_counter()
    latents = clustering.to_memmap(
        (t.numpy() for t in inference.iter_model(model, feed, dev, lambda m, x: m.encode(x, grid), desc="latents")),
        len(seen),
        scratch / "latents.npy",
    )
    inferred = time.perf_counter()
    path = "exact, in memory" if clustering.fits_in_memory(latents, in_memory_mb) else "streamed from disk"
    reduced["autoencoder"], clusters["autoencoder"] = reduce_and_cluster(latents)
    log.info(
        "latents of %d images (%.0f MB): inference %.1f s, clustering (%s) %.1f s",
        len(seen),
        latents.nbytes / 2**20,
        inferred - started,
        path,
        time.perf_counter() - inferred,
    )
    if ssl_path is not None:  # the embedding the method trains (512 per film): small at any N
        reduced["ssl"], clusters["ssl"] = reduce_and_cluster(encoder_features(ssl_path, images, dev, batch_size, seen))
    raw = clustering.to_memmap(
        (_raw_pixels(images, seen[start : start + batch_size], raw_size) for start in range(0, len(seen), batch_size)),
        len(seen),
        scratch / "raw.npy",
    )
    _, clusters[BASELINE] = reduce_and_cluster(raw)
    return reduced, clusters, int(latents.shape[1])


def _raw_pixels(images: np.ndarray, batch: np.ndarray, size: int) -> np.ndarray:
    """The raw-pixel baseline's features of one batch (indices): images area-downsampled to size x size."""
    rows = images[batch]
    return np.stack([cv2.resize(np.asarray(im), (size, size), interpolation=cv2.INTER_AREA).ravel() for im in rows])


def _write_ids(out_dir: Path, rows: list[dict], chosen: np.ndarray, raw: np.ndarray, seed: int) -> None:
    """pseudo_labels.csv (the chosen latent's ids) and the two controls of the pseudo-label
    claim: the same ids shuffled across the films (permuted_clusters.csv: the cluster sizes,
    no content) and the raw pixels' clusters (raw_clusters.csv)."""
    permuted = np.random.default_rng([seed, 2]).permutation(chosen)
    for name, ids in (("pseudo_labels", chosen), ("permuted_clusters", permuted), ("raw_clusters", raw)):
        with open(out_dir / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_id", "cluster"])
            writer.writerows((r["image_id"], int(c)) for r, c in zip(rows, ids, strict=True))


def _validate(clusters: dict[str, np.ndarray], truth: np.ndarray, resamples: int, permutations: int, seed: int) -> dict:
    """`compare` and each clustering's agreement against chance, on the single-label images."""
    single = truth >= 0
    report = compare({name: ids[single] for name, ids in clusters.items()}, truth[single], resamples, seed)
    for name, ids in clusters.items():
        report[name] |= metrics.chance_agreement(ids[single], truth[single], permutations, seed)
    return report


def cluster_latents(
    *,
    images_dir: Path,
    model_path: Path,
    ssl_path: Path | None,
    out_dir: Path,
    metrics_path: Path,
    plots_dir: Path,
    classes: list[str],
    latent: str,
    standardize: bool,
    pca_dim: int,
    method: str,
    k: int,
    raw_size: int,
    grid: int,
    resamples: int,
    permutations: int,
    seed: int,
    in_memory_mb: float = 2048,
    batch_size: int = 64,
    device: str = "auto",
) -> dict:
    """One run's pseudo-labels: cluster the autoencoder's latents, the `ssl` encoder's
    embedding (when `ssl_path` is given) and, as the baseline, raw pixels, all with the run's
    `seed`; validate each against the true labels (`compare` and `chance_agreement`); write to
    `out_dir` the cluster ids of `latent` and the two controls (`_write_ids`); and the plots."""
    given = {"autoencoder": model_path, "ssl": ssl_path}  # the models whose latents become clusters
    if given.get(latent) is None:
        raise ValueError(f"cluster_latents.latent={latent!r}: one of {sorted(given)} (ssl needs the ssl encoder)")
    dev = runtime.device_from(device)
    images, _, rows = load_prepared(images_dir)
    seen = seen_indices(rows)  # the linear probe's films are clustered by no one
    rows = [rows[i] for i in seen]
    k = k or len(classes)

    def reduce_and_cluster(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # every latent alike
        return clustering.reduce_and_cluster(features, standardize, pca_dim, method, k, seed, in_memory_mb)

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".cluster_latents-") as tmp:
        reduced, clusters, latent_features = _cluster_every_latent(
            images,
            seen,
            model_path,
            ssl_path,
            reduce_and_cluster,
            Path(tmp),
            raw_size,
            grid,
            in_memory_mb,
            batch_size,
            dev,
        )  # its memory maps are closed when it returns, before their folder goes

    chosen = clusters[latent]
    _write_ids(out_dir, rows, chosen, clusters[BASELINE], seed)
    truth = true_classes(rows, classes)
    report = _validate(clusters, truth, resamples, permutations, seed)
    report |= {
        "pseudo_labels": latent,
        "resamples": resamples,
        "permutations": permutations,
        "images": len(rows),
        "single_label_images": int((truth >= 0).sum()),
        "k": k,
        "latent_features": latent_features,
    }
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(report, indent=1) + "\n")
    plots_dir.mkdir(parents=True, exist_ok=True)
    _projection_plot(reduced[latent], chosen, truth, classes, plots_dir / "projection.png", seed, latent)
    _label_plot(chosen, truth, classes, k, plots_dir / "cluster_vs_label.png", latent)
    # the per-cluster label histogram: beside the metrics, not in them (k x classes numbers)
    histogram = {
        f"cluster_{c}": {classes[j]: int(((chosen == c) & (truth == j)).sum()) for j in range(len(classes))}
        for c in range(k)
    }
    (plots_dir / "histogram.json").write_text(json.dumps(histogram, indent=1) + "\n")
    return {**report, "histogram": histogram}


def _projection_plot(features, clusters, truth, classes, path: Path, seed: int, latent: str) -> None:
    """The chosen latent in 2-D (PCA), coloured by cluster and by true label."""
    xy = clustering.reduce(features, False, 2, seed) if features.shape[1] > 2 else features
    fig = Figure(figsize=(11, 5))
    axes = fig.subplots(1, 2)
    axes[0].scatter(xy[:, 0], xy[:, 1], c=clusters, cmap="tab10", s=8)
    axes[0].set_title(f"{latent} latents (PCA 2-D) by cluster")
    for j, name in enumerate(classes):
        sel = truth == j
        axes[1].scatter(xy[sel, 0], xy[sel, 1], s=8, label=name)
    axes[1].scatter(xy[truth < 0, 0], xy[truth < 0, 1], s=4, c="lightgrey", label="several/none")
    axes[1].set_title(f"{latent} latents (PCA 2-D) by true label")
    axes[1].legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _label_plot(clusters, truth, classes, k: int, path: Path, latent: str) -> None:
    """Cluster x true label counts of the single-label images, as a table."""
    table = np.array([[((clusters == c) & (truth == j)).sum() for j in range(len(classes))] for c in range(k)])
    fig = Figure(figsize=(1.2 * len(classes) + 2, 0.5 * k + 2))
    ax = fig.subplots()
    ax.imshow(table, cmap="Blues")
    for (c, j), v in np.ndenumerate(table):
        ax.text(j, c, str(v), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(k), [f"cluster {c}" for c in range(k)])
    ax.set_title(f"{latent} cluster vs true label (single-label images)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
