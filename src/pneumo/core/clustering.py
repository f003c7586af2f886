"""Reduce and cluster feature rows (latents, embeddings, raw pixels), in memory or streamed.

Features are standardised, projected by PCA and clustered (`CLUSTERERS`, by name). Up to a
memory limit this is sklearn's exact path on all rows at once; larger features (a memory
map written batch by batch with `to_memmap`: the latents of 112k films at 512 px are 7 GB)
stream: the scaling from one pass of float64 sums, IncrementalPCA chunk by chunk, then the
clusterer on the small (N, pca_dim) projection, or, without PCA, k-means in mini-batches.
Peak memory is then one chunk plus the projection, flat in N but for pca_dim floats per row.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA, IncrementalPCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from pneumo.core import models

CLUSTERERS = {
    "kmeans": lambda k, seed: KMeans(n_clusters=k, n_init=10, random_state=seed),
    "gmm": lambda k, seed: GaussianMixture(n_components=k, covariance_type="diag", random_state=seed),
}
CHUNK_ROWS = 256  # rows per step of the streamed path: flat memory from 256 latents on, and faster than 1,024
MINI_BATCH_EPOCHS = 5  # passes of MiniBatchKMeans over the chunks (streamed path without PCA)


def reduce(features: np.ndarray, standardize: bool, pca_dim: int, seed: int) -> np.ndarray:
    """Optionally standardise, then PCA to `pca_dim` (0 = keep all)."""
    x = StandardScaler().fit_transform(features) if standardize else features
    if 0 < pca_dim < min(x.shape):
        x = PCA(n_components=pca_dim, random_state=seed).fit_transform(x)
    return x


def cluster(features: np.ndarray, method: str, k: int, seed: int) -> np.ndarray:
    """Cluster ids (N,) of `features` by the clusterer named `method` (`CLUSTERERS`)."""
    return models.by_name(CLUSTERERS, method, "clustering method")(k, seed).fit_predict(features)


def fits_in_memory(features: np.ndarray, in_memory_mb: float) -> bool:
    """Whether `reduce_and_cluster` takes the exact, in-memory path for these features."""
    return features.nbytes <= in_memory_mb * 2**20


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


def _minibatch_kmeans(features: np.ndarray, standardize: bool, k: int, seed: int) -> np.ndarray:
    """k-means without PCA on features too large to hold: MiniBatchKMeans over the
    standardised chunks, MINI_BATCH_EPOCHS passes, then the ids chunk by chunk."""
    mean, scale = _scaling(features, standardize)
    chunks = _row_chunks(len(features), k)
    kmeans = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=CHUNK_ROWS, n_init=3)
    for _ in range(MINI_BATCH_EPOCHS):
        for rows in chunks:
            kmeans.partial_fit((np.asarray(features[rows], np.float64) - mean) / scale)
    return np.concatenate([kmeans.predict((np.asarray(features[rows], np.float64) - mean) / scale) for rows in chunks])


def reduce_and_cluster(
    features: np.ndarray, standardize: bool, pca_dim: int, method: str, k: int, seed: int, in_memory_mb: float
) -> tuple[np.ndarray, np.ndarray]:
    """(reduced features, cluster ids). Features up to `in_memory_mb` take the exact path
    (StandardScaler, PCA, the clusterer on all rows at once); larger ones (a memory map)
    stream: standardisation and IncrementalPCA chunk by chunk, then the clusterer on the
    small (N, pca_dim) projection, or, without PCA, k-means in mini-batches (MiniBatchKMeans
    over the chunks), with a 2-D projection for the plots."""
    if fits_in_memory(features, in_memory_mb):
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
    clusters = _minibatch_kmeans(features, standardize, k, seed)
    return reduce_streamed(features, standardize, 2), clusters


def to_memmap(batches: Iterable[np.ndarray], n: int, path: Path) -> np.ndarray:
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
