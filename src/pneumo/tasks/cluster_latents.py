"""`cluster_latents`: pseudo-labels from clustering the autoencoder's latent space, and
their validation against the true CXR-14 labels, which the clustering never sees.

The latent is the autoencoder's last encoder stages and bottleneck, each pooled to a
`grid` x `grid` layout (`models.pooled_features`): a global average would code brightness,
pose and body size and drown a finding that covers 1% of the film.

Validation uses the images with exactly one label in the class list (`No Finding`
included), so each has one true class; the same clustering of raw downsampled pixels is
the baseline that shows whether the autoencoder helped. NMI and ARI come with paired
bootstrap intervals (the same resampled images for both), and so does their difference.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from pneumo.core import data, loop, metrics, models, runtime
from pneumo.core.inference import load_autoencoder
from pneumo.formats.prepared import load_prepared

CLUSTERERS = {
    "kmeans": lambda k, seed: KMeans(n_clusters=k, n_init=10, random_state=seed),
    "gmm": lambda k, seed: GaussianMixture(n_components=k, covariance_type="diag", random_state=seed),
}


def reduce(features: np.ndarray, standardize: bool, pca_dim: int, seed: int) -> np.ndarray:
    """Optionally standardise, then PCA to `pca_dim` (0 = keep all)."""
    x = StandardScaler().fit_transform(features) if standardize else features
    if 0 < pca_dim < min(x.shape):
        x = PCA(n_components=pca_dim, random_state=seed).fit_transform(x)
    return x


def cluster(features: np.ndarray, method: str, k: int, seed: int) -> np.ndarray:
    return models.by_name(CLUSTERERS, method, "clustering method")(k, seed).fit_predict(features)


def compare(ours: np.ndarray, baseline: np.ndarray, truth: np.ndarray, resamples: int, seed: int) -> dict:
    """NMI, ARI (and purity) of the autoencoder's clusters and of the raw-pixel baseline's,
    each with a 95% bootstrap interval, and the paired interval of their difference; the
    winner is named only when that interval excludes zero.

    Resampling images with replacement duplicates some, and duplicates look like agreement:
    bootstrap NMI/ARI sit above the sample's own value. The intervals are therefore the
    percentile intervals shifted back by that bias (bootstrap mean minus the estimate)."""
    counts = np.random.default_rng(seed).multinomial(len(truth), np.full(len(truth), 1 / len(truth)), resamples)
    runs = {"autoencoder": ours, "raw_pixels": baseline}
    points = {name: metrics.clustering_scores(c, truth) for name, c in runs.items()}
    samples = {name: metrics.clustering_scores_resampled(c, truth, counts) for name, c in runs.items()}

    def interval(value: float, boot: np.ndarray) -> tuple[float, float]:
        low, high = np.percentile(boot, [2.5, 97.5]) - (boot.mean() - value)
        return float(low), float(high)

    out: dict = {}
    for name in runs:
        out[name] = dict(points[name])
        for score in ("nmi", "ari"):
            low, high = interval(points[name][score], samples[name][score])
            out[name] |= {f"{score}_low": low, f"{score}_high": high}
    for score in ("nmi", "ari"):
        value = points["autoencoder"][score] - points["raw_pixels"][score]
        low, high = interval(value, samples["autoencoder"][score] - samples["raw_pixels"][score])
        winner = "unresolved" if low <= 0 <= high else ("autoencoder" if value > 0 else "raw_pixels")
        out[f"{score}_difference"] = {"value": value, "low": low, "high": high, "winner": winner}
    return out


def true_classes(rows: list[dict], classes: list[str]) -> np.ndarray:
    """Index of the single true class per image, -1 where an image has none or several."""
    hot = np.array([[int(r[c]) for c in classes] for r in rows])
    return np.where(hot.sum(1) == 1, hot.argmax(1), -1)


def cluster_latents(
    *,
    images_dir: Path,
    model_path: Path,
    out_csv: Path,
    metrics_path: Path,
    plots_dir: Path,
    classes: list[str],
    standardize: bool,
    pca_dim: int,
    method: str,
    k: int,
    raw_size: int,
    grid: int,
    resamples: int,
    seed: int,
    batch_size: int = 64,
    device: str = "auto",
) -> dict:
    dev = runtime.device_from(device)
    images, _, rows = load_prepared(images_dir)
    k = k or len(classes)
    model = load_autoencoder(model_path, dev)
    feed = data.loader(data.Arrays(images, None, np.arange(len(images))), batch_size)
    latents = loop.run_model(model, feed, dev, lambda m, x: m.encode(x, grid), desc="latents").numpy()
    features = reduce(latents, standardize, pca_dim, seed)
    clusters = cluster(features, method, k, seed)
    raw = np.stack(
        [cv2.resize(np.asarray(im), (raw_size, raw_size), interpolation=cv2.INTER_AREA).ravel() for im in images]
    )
    raw_clusters = cluster(reduce(raw.astype(np.float32), standardize, pca_dim, seed), method, k, seed)

    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "cluster"])
        writer.writerows((r["image_id"], int(c)) for r, c in zip(rows, clusters, strict=False))

    truth = true_classes(rows, classes)
    single = truth >= 0
    histogram = {
        f"cluster_{c}": {classes[j]: int(((clusters == c) & (truth == j)).sum()) for j in range(len(classes))}
        for c in range(k)
    }
    report = {
        **compare(clusters[single], raw_clusters[single], truth[single], resamples, seed),
        "images": len(rows),
        "single_label_images": int(single.sum()),
        "k": k,
        "latent_features": int(latents.shape[1]),
    }
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(report, indent=1) + "\n")
    _plots(features, clusters, truth, classes, k, plots_dir, seed)
    # the per-cluster label histogram: beside the metrics, not in them (k x classes numbers)
    (plots_dir / "histogram.json").write_text(json.dumps(histogram, indent=1) + "\n")
    return {**report, "histogram": histogram}


def _plots(features, clusters, truth, classes, k, plots_dir: Path, seed: int) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    xy = PCA(n_components=2, random_state=seed).fit_transform(features) if features.shape[1] > 2 else features
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    axes[0].scatter(xy[:, 0], xy[:, 1], c=clusters, cmap="tab10", s=8)
    axes[0].set_title("latents (PCA 2-D) by cluster")
    for j, name in enumerate(classes):
        sel = truth == j
        axes[1].scatter(xy[sel, 0], xy[sel, 1], s=8, label=name)
    axes[1].scatter(xy[truth < 0, 0], xy[truth < 0, 1], s=4, c="lightgrey", label="several/none")
    axes[1].set_title("latents (PCA 2-D) by true label")
    axes[1].legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(plots_dir / "projection.png", dpi=90)
    plt.close(fig)
    table = np.array([[((clusters == c) & (truth == j)).sum() for j in range(len(classes))] for c in range(k)])
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 0.5 * k + 2))
    ax.imshow(table, cmap="Blues")
    for (c, j), v in np.ndenumerate(table):
        ax.text(j, c, str(v), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(k), [f"cluster {c}" for c in range(k)])
    ax.set_title("cluster vs true label (single-label images)")
    fig.tight_layout()
    fig.savefig(plots_dir / "cluster_vs_label.png", dpi=90)
    plt.close(fig)
