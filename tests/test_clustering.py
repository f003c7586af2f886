"""Reduce and cluster (`pneumo.core.clustering`): the exact path is sklearn's; over the memory
limit the features stream from a memory map chunk by chunk (scaling, IncrementalPCA,
MiniBatchKMeans without PCA) and find the clusters the exact path finds."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from pneumo.core import clustering


def batches(n: int, size: int):
    return [slice(a, a + size) for a in range(0, n, size)]


def blobs(n: int = 600, d: int = 40, k: int = 4):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, n)
    centres = rng.normal(0, 4, (k, d))
    return (centres[labels] + rng.normal(0, 1, (n, d))).astype(np.float32), labels


def test_streamed_scaling_is_standard_scalers(monkeypatch):
    x, _ = blobs()
    x[:, 3] = 7.0  # a constant column keeps scale 1
    monkeypatch.setattr(clustering, "CHUNK_ROWS", 128)
    mean, scale = clustering._scaling(x, True)
    reference = StandardScaler().fit(x)
    np.testing.assert_allclose(mean, reference.mean_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scale, reference.scale_, rtol=1e-6)


def test_latents_over_the_memory_limit_stream_to_the_same_clusters(tmp_path, monkeypatch):
    """Over `in_memory_mb` the latents go through IncrementalPCA (and, without PCA,
    MiniBatchKMeans) from a memory map, chunk by chunk: on separable clusters they find
    the clusters the exact path finds."""
    x, labels = blobs()
    monkeypatch.setattr(clustering, "CHUNK_ROWS", 100)
    on_disk = clustering.to_memmap((x[b] for b in batches(len(x), 64)), len(x), tmp_path / "x.npy")
    assert isinstance(on_disk, np.memmap) and np.array_equal(on_disk, x)
    exact_x, exact = clustering.reduce_and_cluster(on_disk, True, 8, "kmeans", 4, 0, in_memory_mb=1)
    assert np.array_equal(exact, KMeans(4, n_init=10, random_state=0).fit_predict(clustering.reduce(x, True, 8, 0)))
    streamed_x, streamed = clustering.reduce_and_cluster(on_disk, True, 8, "kmeans", 4, 0, in_memory_mb=0)
    assert streamed_x.shape == exact_x.shape == (600, 8)
    for j in range(3):  # the leading components agree up to sign
        assert abs(np.corrcoef(streamed_x[:, j], exact_x[:, j])[0, 1]) > 0.99
    assert adjusted_rand_score(exact, streamed) == 1.0 and adjusted_rand_score(labels, exact) == 1.0
    projection, mini = clustering.reduce_and_cluster(on_disk, True, 0, "kmeans", 4, 0, in_memory_mb=0)
    assert projection.shape == (600, 2) and adjusted_rand_score(labels, mini) == 1.0
    with pytest.raises(ValueError, match="pca_dim"):
        clustering.reduce_and_cluster(on_disk, True, 0, "gmm", 4, 0, in_memory_mb=0)


@pytest.mark.parametrize(
    ("n", "minimum", "sizes"),
    [(600, 1, [256, 256, 88]), (520, 16, [256, 264]), (256, 1, [256]), (100, 200, [100]), (0, 1, [])],
)
def test_row_chunks_merge_a_short_last_chunk(monkeypatch, n, minimum, sizes):
    monkeypatch.setattr(clustering, "CHUNK_ROWS", 256)
    chunks = clustering._row_chunks(n, minimum)
    assert [c.stop - c.start for c in chunks] == sizes and sum(sizes) == n
    assert all(a.stop == b.start for a, b in zip(chunks[:-1], chunks[1:], strict=True))


def test_the_clusterer_is_chosen_by_name_and_the_error_lists_the_names():
    x, labels = blobs(200, 6, 3)
    for method in clustering.CLUSTERERS:
        assert adjusted_rand_score(labels, clustering.cluster(clustering.reduce(x, True, 4, 0), method, 3, 0)) == 1.0
    with pytest.raises(ValueError, match="gmm.*kmeans|kmeans.*gmm"):
        clustering.cluster(x, "dbscan", 3, 0)


def test_reduce_keeps_every_column_without_pca_and_to_memmap_writes_nothing_for_no_batches(tmp_path):
    x, _ = blobs(50, 6)
    np.testing.assert_allclose(clustering.reduce(x, True, 0, 0), StandardScaler().fit_transform(x))
    assert clustering.reduce(x, False, 6, 0) is x  # pca_dim not below the width: nothing to project
    assert clustering.to_memmap(iter([]), 0, tmp_path / "none.npy").shape == (0, 0)
    assert not (tmp_path / "none.npy").exists()
    assert clustering.fits_in_memory(x, x.nbytes / 2**20) and not clustering.fits_in_memory(x, 0)
