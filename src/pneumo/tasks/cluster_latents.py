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
import logging
import tempfile
import time
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.cluster import KMeans, MiniBatchKMeans  # noqa: E402
from sklearn.decomposition import PCA, IncrementalPCA  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from pneumo.core import data, loop, metrics, models, runtime
from pneumo.core.inference import load_autoencoder
from pneumo.formats.prepared import load_prepared

log = logging.getLogger(__name__)

CLUSTERERS = {
    "kmeans": lambda k, seed: KMeans(n_clusters=k, n_init=10, random_state=seed),
    "gmm": lambda k, seed: GaussianMixture(n_components=k, covariance_type="diag", random_state=seed),
}


CHUNK_ROWS = 256  # rows per step of the streamed path: flat memory from 256 latents on, and faster than 1,024


def reduce(features: np.ndarray, standardize: bool, pca_dim: int, seed: int) -> np.ndarray:
    """Optionally standardise, then PCA to `pca_dim` (0 = keep all)."""
    x = StandardScaler().fit_transform(features) if standardize else features
    if 0 < pca_dim < min(x.shape):
        x = PCA(n_components=pca_dim, random_state=seed).fit_transform(x)
    return x


def cluster(features: np.ndarray, method: str, k: int, seed: int) -> np.ndarray:
    return models.by_name(CLUSTERERS, method, "clustering method")(k, seed).fit_predict(features)


def _row_chunks(n: int, minimum: int = 1) -> list[slice]:
    """CHUNK_ROWS-row slices of n rows; a short last one is merged into the one before
    (IncrementalPCA needs at least `minimum` rows per step)."""
    bounds = list(range(0, n, CHUNK_ROWS)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < minimum:
        del bounds[-2]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=False)]


def _scaling(features: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and scale as StandardScaler computes them (population variance, scale 1
    where a column is constant), from a pass over row chunks with float64 sums."""
    d = features.shape[1]
    if not standardize:
        return np.zeros(d), np.ones(d)
    n, mean, m2 = 0, np.zeros(d), np.zeros(d)
    for rows in _row_chunks(len(features)):  # Chan et al.'s pairwise update of mean and squared deviations
        x = np.asarray(features[rows], np.float64)
        count, chunk_mean = len(x), x.mean(0)
        delta = chunk_mean - mean
        m2 += ((x - chunk_mean) ** 2).sum(0) + delta**2 * n * count / (n + count)
        mean += delta * count / (n + count)
        n += count
    scale = np.sqrt(m2 / max(n, 1))
    return mean, np.where(scale < 10 * np.finfo(np.float64).eps, 1.0, scale)


def reduce_streamed(features: np.ndarray, standardize: bool, pca_dim: int) -> np.ndarray | None:
    """`reduce` for latents too large to hold (a memory map): standardised on the fly and
    projected with IncrementalPCA, chunk by chunk; (N, pca_dim) in memory. Without PCA
    (`pca_dim` 0 or too large) there is nothing small to return: None."""
    n, d = features.shape
    if not 0 < pca_dim < min(n, d):
        return None
    mean, scale = _scaling(features, standardize)
    chunks = _row_chunks(n, pca_dim)
    pca = IncrementalPCA(n_components=pca_dim)
    for rows in chunks:
        pca.partial_fit((np.asarray(features[rows], np.float64) - mean) / scale)
    return np.concatenate([pca.transform((np.asarray(features[rows], np.float64) - mean) / scale) for rows in chunks])


def reduce_and_cluster(
    features: np.ndarray, standardize: bool, pca_dim: int, method: str, k: int, seed: int, in_memory_mb: float
) -> tuple[np.ndarray, np.ndarray]:
    """(reduced features, cluster ids). Features up to `in_memory_mb` take the exact path
    (StandardScaler, PCA, the clusterer on all rows at once); larger ones (a memory map)
    stream: standardisation and IncrementalPCA chunk by chunk, then the clusterer on the
    small (N, pca_dim) projection, or, without PCA, k-means in mini-batches (MiniBatchKMeans
    over the chunks). Peak memory is then that of one chunk plus the projection, flat in N
    but for pca_dim floats per image."""
    if features.nbytes <= in_memory_mb * 2**20:
        x = reduce(np.array(features), standardize, pca_dim, seed)
        return x, cluster(x, method, k, seed)
    x = reduce_streamed(features, standardize, pca_dim)
    if x is not None:
        return x, cluster(x, method, k, seed)
    if method != "kmeans":
        raise ValueError(
            f"cluster_latents.method={method!r} needs cluster_latents.pca_dim > 0 when the features "
            f"({features.nbytes / 2**20:.0f} MB) exceed cluster_latents.in_memory_mb ({in_memory_mb})"
        )
    mean, scale = _scaling(features, standardize)
    chunks = _row_chunks(len(features), k)
    kmeans = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=CHUNK_ROWS, n_init=3)
    for _ in range(MINI_BATCH_EPOCHS):
        for rows in chunks:
            kmeans.partial_fit((np.asarray(features[rows], np.float64) - mean) / scale)
    clusters = np.concatenate(
        [kmeans.predict((np.asarray(features[rows], np.float64) - mean) / scale) for rows in chunks]
    )
    return reduce_streamed(features, standardize, 2), clusters  # a 2-D projection for the plots


MINI_BATCH_EPOCHS = 5  # passes of MiniBatchKMeans over the chunks (streamed path without PCA)


def to_memmap(batches, n: int, path: Path) -> np.ndarray:
    """(B, D) batches, n rows in all -> one (n, D) float32 array on disk, opened read-only:
    the latents of 112k films at 512 px are 7 GB."""
    out, written = None, 0
    for batch in batches:
        batch = np.asarray(batch, np.float32)
        if out is None:
            out = np.lib.format.open_memmap(path, "w+", np.float32, (n, batch.shape[1]))
        out[written : written + len(batch)] = batch
        written += len(batch)
    if out is None:
        return np.zeros((0, 0), np.float32)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


RESAMPLE_CELLS = 2_000_000  # resamples x images scored per block in `compare`


def compare(ours: np.ndarray, baseline: np.ndarray, truth: np.ndarray, resamples: int, seed: int) -> dict:
    """NMI, ARI (and purity) of the autoencoder's clusters and of the raw-pixel baseline's,
    each with a 95% bootstrap interval, and the paired interval of their difference; the
    winner is named only when that interval excludes zero.

    Resampling images with replacement duplicates some, and duplicates look like agreement:
    bootstrap NMI/ARI sit above the sample's own value. The intervals are therefore the
    percentile intervals shifted back by that bias (bootstrap mean minus the estimate)."""
    runs = {"autoencoder": ours, "raw_pixels": baseline}
    points = {name: metrics.clustering_scores(c, truth) for name, c in runs.items()}
    # resamples drawn and scored a block at a time (the same draws as all at once): a
    # (resamples, N) table would be 1.8 GB for 112k films
    rng, block = np.random.default_rng(seed), max(1, RESAMPLE_CELLS // max(len(truth), 1))
    parts: dict[str, list[dict]] = {name: [] for name in runs}
    for start in range(0, resamples, block):
        counts = rng.multinomial(len(truth), np.full(len(truth), 1 / len(truth)), min(block, resamples - start))
        for name, c in runs.items():
            parts[name].append(metrics.clustering_scores_resampled(c, truth, counts))
    samples = {name: {s: np.concatenate([p[s] for p in parts[name]]) for s in ("nmi", "ari")} for name in runs}

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
    in_memory_mb: float = 2048,
    batch_size: int = 64,
    device: str = "auto",
) -> dict:
    dev = runtime.device_from(device)
    images, _, rows = load_prepared(images_dir)
    k = k or len(classes)
    model = load_autoencoder(model_path, dev)
    feed = data.loader(data.Arrays(images, None, np.arange(len(images))), batch_size)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_csv.parent, prefix=".cluster_latents-") as tmp:
        # latents and raw pixels go to disk batch by batch; small ones are then read back whole
        started = time.perf_counter()
        latents = to_memmap(
            (t.numpy() for t in loop.iter_model(model, feed, dev, lambda m, x: m.encode(x, grid), desc="latents")),
            len(images),
            Path(tmp) / "latents.npy",
        )
        inferred = time.perf_counter()
        path = "exact, in memory" if latents.nbytes <= in_memory_mb * 2**20 else "streamed from disk"
        features, clusters = reduce_and_cluster(latents, standardize, pca_dim, method, k, seed, in_memory_mb)
        log.info(
            "latents of %d images (%.0f MB): inference %.1f s, clustering (%s) %.1f s",
            len(images),
            latents.nbytes / 2**20,
            inferred - started,
            path,
            time.perf_counter() - inferred,
        )
        raw = to_memmap(
            (_raw_pixels(images, start, batch_size, raw_size) for start in range(0, len(images), batch_size)),
            len(images),
            Path(tmp) / "raw.npy",
        )
        _, raw_clusters = reduce_and_cluster(raw, standardize, pca_dim, method, k, seed, in_memory_mb)
        latent_features = int(latents.shape[1])
        del latents, raw  # close the memory maps before their folder goes

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
        "latent_features": latent_features,
    }
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(report, indent=1) + "\n")
    _plots(features, clusters, truth, classes, k, plots_dir, seed)
    # the per-cluster label histogram: beside the metrics, not in them (k x classes numbers)
    (plots_dir / "histogram.json").write_text(json.dumps(histogram, indent=1) + "\n")
    return {**report, "histogram": histogram}


def _raw_pixels(images: np.ndarray, start: int, batch_size: int, size: int) -> np.ndarray:
    """The raw-pixel baseline's features of one batch: images area-downsampled to size x size."""
    rows = images[start : start + batch_size]
    return np.stack([cv2.resize(np.asarray(im), (size, size), interpolation=cv2.INTER_AREA).ravel() for im in rows])


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
