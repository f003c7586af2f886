"""`cluster_latents`: pseudo-labels from clustering the autoencoder's latent space (the
study's) or the `ssl` encoder's embedding (the field's: `cluster_latents.latent`), the two
controls of the pseudo-label claim, and the validation of every clustering against the true
CXR-14 labels, which the clustering never sees.

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
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import gammaln  # noqa: E402
from sklearn.cluster import KMeans, MiniBatchKMeans  # noqa: E402
from sklearn.decomposition import PCA, IncrementalPCA  # noqa: E402
from sklearn.metrics import adjusted_mutual_info_score  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from pneumo.core import bootstrap, data, loop, metrics, models, runtime
from pneumo.core.inference import encoder_features, load_autoencoder
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


RESAMPLE_CELLS = 2_000_000  # resamples (or permutations) x images scored per block in `compare` and `chance`
SCORES = ("ami", "nmi", "ari")
EPS = np.finfo(np.float64).eps


def _entropies(counts: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of non-negative counts, (B, K) -> (B,)."""
    p = counts / np.maximum(counts.sum(1, keepdims=True), 1e-300)
    return -(p * np.log(np.where(p > 0, p, 1))).sum(1)


def contingency(clusters: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, k, m) cluster x label tables, one per row of `weights` (B, N): how often each image
    counts (bootstrap multiplicities; ones give the table of the data). `clusters` may be
    (B, N) too: one labelling per row (shuffled ids)."""
    _, c = np.unique(clusters, return_inverse=True)
    _, lab = np.unique(labels, return_inverse=True)
    c = c.reshape(np.shape(clusters))
    k, m = c.max() + 1, lab.max() + 1
    weights = np.broadcast_to(np.asarray(weights, float), np.broadcast_shapes(np.shape(weights), c.shape))
    weights = np.atleast_2d(weights)
    cells = (c * m + lab) + k * m * np.arange(len(weights))[:, None]
    flat = np.bincount(cells.ravel(), weights=weights.ravel(), minlength=len(weights) * k * m)
    return flat.reshape(len(weights), k, m)


def expected_mutual_information(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """E[MI] (nats) of random cluster ids with these cluster sizes `rows` (B, k) and label
    sizes `cols` (B, m) (integer counts), per row: the hypergeometric sum of Vinh, Epps and
    Bailey (2010) that sklearn's `adjusted_mutual_info_score` computes, vectorised over rows,
    with log-factorials from one table. Cell counts more than 12 SD from the cell's mean
    (probability < 1e-30) are left out, so a large N costs a window, not the whole range."""
    rows, cols = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
    n = rows.sum(1)[:, None]
    log_factorial = gammaln(np.arange(n.max() + 1) + 1)  # log k! at index k
    log_int = np.log(np.maximum(np.arange(n.max() + 1), 1))
    emi = np.zeros(len(rows))
    for a in rows.T[:, :, None]:
        for b in cols.T[:, :, None]:
            present = (a > 0) & (b > 0)
            a1, b1 = np.where(present, a, 1), np.where(present, b, 1)
            mean = a1 * b1 / n
            sd = np.sqrt(a1 * b1 * (n - a1) * (n - b1) / (n * n * np.maximum(n - 1, 1)))
            start = np.maximum(np.maximum(1, a1 + b1 - n), np.floor(mean - 12 * sd - 1).astype(np.int64))
            stop = np.minimum(np.minimum(a1, b1), np.ceil(mean + 12 * sd + 1).astype(np.int64))
            width = int(np.max(np.where(present, stop - start, -1))) + 1
            if width <= 0:
                continue
            nij = start + np.arange(width)[None, :]
            valid = present & (nij <= stop)
            nij = np.where(valid, nij, start)  # any admissible count: masked below
            log_p = (
                log_factorial[a1]
                + log_factorial[b1]
                + log_factorial[n - a1]
                + log_factorial[n - b1]
                - log_factorial[n]
                - log_factorial[nij]
                - log_factorial[a1 - nij]
                - log_factorial[b1 - nij]
                - log_factorial[n - a1 - b1 + nij]
            )
            log_ratio = log_int[n] + log_int[nij] - log_int[a1] - log_int[b1]
            emi += np.where(valid, nij / n * log_ratio * np.exp(log_p), 0.0).sum(1)
    return emi


def ami_from_tables(tables: np.ndarray) -> np.ndarray:
    """Adjusted mutual information (arithmetic normalisation, sklearn's default) of each
    (k, m) table of (B, k, m), with sklearn's conventions: 1 when both sides have one
    non-empty class, 0 when one side has, and the same guards against 0 / 0."""
    rows, cols = tables.sum(2), tables.sum(1)
    joint = tables.reshape(len(tables), -1)
    h_rows, h_cols = _entropies(rows), _entropies(cols)
    mutual = h_rows + h_cols - _entropies(joint)
    emi = expected_mutual_information(rows, cols)
    numerator, denominator = mutual - emi, (h_rows + h_cols) / 2 - emi
    numerator = np.where(numerator < 0, np.minimum(numerator, -EPS), np.maximum(numerator, EPS))
    denominator = np.where(denominator < 0, np.minimum(denominator, -EPS), np.maximum(denominator, EPS))
    ami = numerator / denominator
    k, m = (rows > 0).sum(1), (cols > 0).sum(1)
    return np.where((k == 1) & (m == 1), 1.0, np.where((k == 1) | (m == 1), 0.0, ami))


def _resampled(clusters: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    return {"ami": ami_from_tables(contingency(clusters, labels, counts))} | metrics.clustering_scores_resampled(
        clusters, labels, counts
    )


def _ami(clusters: np.ndarray, labels: np.ndarray) -> float:
    """sklearn's AMI (arithmetic normalisation) of the data itself."""
    return float(adjusted_mutual_info_score(labels, clusters))


BASELINE = "raw_pixels"  # the latent every other is compared with


def compare(latents: dict[str, np.ndarray], truth: np.ndarray, resamples: int, seed: int) -> dict:
    """AMI, NMI, ARI (and purity) of each latent's clusters (`latents`: name -> cluster ids,
    the raw-pixel baseline among them), each with a 95% bootstrap interval, and for every
    other latent the paired interval of its difference from the baseline (the same resampled
    images for both), under `minus_raw_pixels`. A winner is named on AMI, only when that
    interval excludes 0. Intervals follow `bootstrap.interval`: percentiles re-centred on the
    estimate, because duplicated images look like agreement and raise every resampled score
    above the sample's own."""
    points = {name: {"ami": _ami(c, truth), **metrics.clustering_scores(c, truth)} for name, c in latents.items()}
    # resamples drawn and scored a block at a time (the same draws as all at once): a
    # (resamples, N) table would be 1.8 GB for 112k films
    rng, block = np.random.default_rng(seed), max(1, RESAMPLE_CELLS // max(len(truth), 1))
    parts: dict[str, list[dict]] = {name: [] for name in latents}
    for start in range(0, resamples, block):
        counts = rng.multinomial(len(truth), np.full(len(truth), 1 / len(truth)), min(block, resamples - start))
        for name, c in latents.items():
            parts[name].append(_resampled(c, truth, counts))
    samples = {name: {s: np.concatenate([p[s] for p in parts[name]]) for s in SCORES} for name in latents}

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


def chance(clusters: np.ndarray, truth: np.ndarray, permutations: int, seed: int) -> dict:
    """Agreement against chance: the permutation p-value of the AMI, p = (1 + #{shuffled AMI >=
    observed}) / (1 + permutations), with the cluster ids shuffled against the labels; and the
    mean NMI and AMI of the shuffled ids (what chance alone scores: NMI is above 0 at chance,
    AMI about 0). Shuffling keeps both marginals, so E[MI] and the entropies are fixed and
    only the mutual information changes: the AMI ranks as the MI does. Shuffled a block at a
    time (the same permutations as all at once), so memory stays flat in N."""
    observed = contingency(clusters, truth, 1.0)
    rows, cols = observed.sum(2), observed.sum(1)
    h_rows, h_cols = _entropies(rows)[0], _entropies(cols)[0]
    mean_h, emi = (h_rows + h_cols) / 2, expected_mutual_information(rows, cols)[0]

    def mutual(tables: np.ndarray) -> np.ndarray:
        return h_rows + h_cols - _entropies(tables.reshape(len(tables), -1))

    rng, block = np.random.default_rng([seed, 1]), max(1, RESAMPLE_CELLS // max(len(truth), 1))
    shuffled = [np.zeros(0)]
    for start in range(0, permutations, block):
        ids = rng.permuted(np.tile(clusters, (min(block, permutations - start), 1)), axis=1)
        shuffled.append(mutual(contingency(ids, truth, 1.0)))
    shuffled_mi, observed_mi = np.concatenate(shuffled), mutual(observed)[0]
    at_least = shuffled_mi >= observed_mi - 1e-12  # a tie (float sums in another order) counts against
    return {
        "ami_p": float((1 + at_least.sum()) / (1 + permutations)),
        "nmi_chance": float(np.mean(shuffled_mi / mean_h)) if permutations and mean_h > 0 else None,
        "ami_chance": float(np.mean((shuffled_mi - emi) / max(mean_h - emi, EPS))) if permutations else None,
    }


def true_classes(rows: list[dict], classes: list[str]) -> np.ndarray:
    """Index of the single true class per image, -1 where an image has none or several."""
    hot = np.array([[int(r[c]) for c in classes] for r in rows])
    return np.where(hot.sum(1) == 1, hot.argmax(1), -1)


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
    `seed`; validate each against the true labels (`compare` and `chance`); write to
    `out_dir` the cluster ids of `latent` (pseudo_labels.csv) and the two controls of the
    pseudo-label claim: the same ids shuffled across the films (permuted_clusters.csv: the
    cluster sizes, no content) and the raw pixels' clusters (raw_clusters.csv); and the plots."""
    given = {"autoencoder": model_path, "ssl": ssl_path}  # the models whose latents become clusters
    if given.get(latent) is None:
        raise ValueError(f"cluster_latents.latent={latent!r}: one of {sorted(given)} (ssl needs the ssl encoder)")
    dev = runtime.device_from(device)
    images, _, rows = load_prepared(images_dir)
    k = k or len(classes)
    model = load_autoencoder(model_path, dev)
    feed = data.loader(data.Arrays(images, None, np.arange(len(images))), batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    reduced, clusters = {}, {}
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".cluster_latents-") as tmp:
        # latents and raw pixels go to disk batch by batch; small ones are then read back whole
        started = time.perf_counter()
        latents = to_memmap(
            (t.numpy() for t in loop.iter_model(model, feed, dev, lambda m, x: m.encode(x, grid), desc="latents")),
            len(images),
            Path(tmp) / "latents.npy",
        )
        inferred = time.perf_counter()
        path = "exact, in memory" if latents.nbytes <= in_memory_mb * 2**20 else "streamed from disk"
        reduced["autoencoder"], clusters["autoencoder"] = reduce_and_cluster(
            latents, standardize, pca_dim, method, k, seed, in_memory_mb
        )
        log.info(
            "latents of %d images (%.0f MB): inference %.1f s, clustering (%s) %.1f s",
            len(images),
            latents.nbytes / 2**20,
            inferred - started,
            path,
            time.perf_counter() - inferred,
        )
        if ssl_path is not None:  # the embedding the method trains (512 per film): small at any N
            embedding = encoder_features(ssl_path, images, dev, batch_size)
            reduced["ssl"], clusters["ssl"] = reduce_and_cluster(
                embedding, standardize, pca_dim, method, k, seed, in_memory_mb
            )
        raw = to_memmap(
            (_raw_pixels(images, start, batch_size, raw_size) for start in range(0, len(images), batch_size)),
            len(images),
            Path(tmp) / "raw.npy",
        )
        _, clusters[BASELINE] = reduce_and_cluster(raw, standardize, pca_dim, method, k, seed, in_memory_mb)
        latent_features = int(latents.shape[1])
        del latents, raw  # close the memory maps before their folder goes

    chosen = clusters[latent]
    permuted = np.random.default_rng([seed, 2]).permutation(chosen)
    for name, ids in (("pseudo_labels", chosen), ("permuted_clusters", permuted), ("raw_clusters", clusters[BASELINE])):
        with open(out_dir / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_id", "cluster"])
            writer.writerows((r["image_id"], int(c)) for r, c in zip(rows, ids, strict=True))

    truth = true_classes(rows, classes)
    single = truth >= 0
    histogram = {
        f"cluster_{c}": {classes[j]: int(((chosen == c) & (truth == j)).sum()) for j in range(len(classes))}
        for c in range(k)
    }
    report = compare({name: ids[single] for name, ids in clusters.items()}, truth[single], resamples, seed)
    for name, ids in clusters.items():
        report[name] |= chance(ids[single], truth[single], permutations, seed)
    report |= {
        "pseudo_labels": latent,
        "resamples": resamples,
        "permutations": permutations,
        "images": len(rows),
        "single_label_images": int(single.sum()),
        "k": k,
        "latent_features": latent_features,
    }
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(report, indent=1) + "\n")
    _plots(reduced[latent], chosen, truth, classes, k, plots_dir, seed, latent)
    # the per-cluster label histogram: beside the metrics, not in them (k x classes numbers)
    (plots_dir / "histogram.json").write_text(json.dumps(histogram, indent=1) + "\n")
    return {**report, "histogram": histogram}


def _raw_pixels(images: np.ndarray, start: int, batch_size: int, size: int) -> np.ndarray:
    """The raw-pixel baseline's features of one batch: images area-downsampled to size x size."""
    rows = images[start : start + batch_size]
    return np.stack([cv2.resize(np.asarray(im), (size, size), interpolation=cv2.INTER_AREA).ravel() for im in rows])


def _plots(features, clusters, truth, classes, k, plots_dir: Path, seed: int, latent: str) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    xy = PCA(n_components=2, random_state=seed).fit_transform(features) if features.shape[1] > 2 else features
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    axes[0].scatter(xy[:, 0], xy[:, 1], c=clusters, cmap="tab10", s=8)
    axes[0].set_title(f"{latent} latents (PCA 2-D) by cluster")
    for j, name in enumerate(classes):
        sel = truth == j
        axes[1].scatter(xy[sel, 0], xy[sel, 1], s=8, label=name)
    axes[1].scatter(xy[truth < 0, 0], xy[truth < 0, 1], s=4, c="lightgrey", label="several/none")
    axes[1].set_title(f"{latent} latents (PCA 2-D) by true label")
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
    ax.set_title(f"{latent} cluster vs true label (single-label images)")
    fig.tight_layout()
    fig.savefig(plots_dir / "cluster_vs_label.png", dpi=90)
    plt.close(fig)
