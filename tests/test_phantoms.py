"""The phantom generator (`pneumo.core.phantoms`): pneumothorax regions darker and smoother
than lung, placed where the location map of the real SIIM regions puts them, on one side as
often as real ones; each finding visible where it is drawn; the same draws give the same film."""

import csv
import math

import numpy as np
import pytest

from pneumo.core import phantoms


@pytest.fixture(scope="session")
def shipped_map(root):
    return root / "data" / "siim_location_map.csv"


def test_pneumothorax_region_is_darker_and_smoother_than_lung(shipped_map):
    rng = np.random.default_rng(1)
    image, masks = phantoms.phantom(rng, 256, set(), [0.03], phantoms.LocationMap.read(shipped_map))
    region = masks[0]
    healthy = phantoms._ellipse(256, 0.31, 0.46, 0.08, 0.15) & ~region
    assert image[region].mean() < image[healthy].mean() - 10
    assert image[region].std() < image[healthy].std()


def test_lesions_lie_where_the_map_puts_real_ones(shipped_map):
    """Region centroids of 300 phantoms fall on each side and in each half of the film in the
    map's shares (tolerance: ~3 binomial standard deviations). The old phantom put nearly
    every region in the upper half."""
    places = phantoms.LocationMap.read(shipped_map)
    assert places.cumulative[-1] == 3576  # every positive row of the public SIIM train labels
    counts = np.array([int(r["regions"]) for r in csv.DictReader(open(shipped_map))]).reshape(16, 16)
    expected = {"left": counts[:, :8].sum() / counts.sum(), "upper": counts[:8].sum() / counts.sum()}
    rng = np.random.default_rng(0)
    centroids = []
    for _ in range(300):
        area = min(max(math.exp(rng.normal(-3.9, 1.09)), 0.001), 0.08)  # the default's sizes
        _, masks = phantoms.phantom(rng, 96, set(), [area], places)
        for m in masks:
            ys, xs = np.nonzero(m)
            centroids.append(((xs.mean() + 0.5) / 96, (ys.mean() + 0.5) / 96))
    centroids = np.array(centroids)
    assert len(centroids) == 300  # none lost
    found = {"left": (centroids[:, 0] < 0.5).mean(), "upper": (centroids[:, 1] < 0.5).mean()}
    assert expected["left"] == pytest.approx(0.580, abs=0.001) and expected["upper"] == pytest.approx(0.783, abs=0.001)
    for key in expected:
        assert found[key] == pytest.approx(expected[key], abs=0.08), key


def test_regions_of_one_image_share_a_side_as_often_as_real_ones(shipped_map):
    """`LocationMap.draw(side=...)` keeps to that half of the film; a two-region phantom puts
    both regions on one side with probability `one_sided` (real: 437 of 624 multi-region
    images), else on opposite sides."""
    places = phantoms.LocationMap.read(shipped_map)
    rng = np.random.default_rng(1)
    for side in (0, 1):
        assert all((places.draw(rng, side)[0] >= 0.5) == bool(side) for _ in range(200))

    def same_side(one_sided: float, n: int) -> float:
        same = 0
        for _ in range(n):
            _, masks = phantoms.phantom(rng, 64, set(), [0.02, 0.02], places, one_sided)
            sides = {int(np.nonzero(m)[1].mean() >= 32) for m in masks}
            same += len(sides) == 1
        return same / n

    assert same_side(1.0, 20) == 1.0 and same_side(0.0, 20) == 0.0
    assert same_side(0.7, 150) == pytest.approx(0.7, abs=0.12)  # ~3 binomial standard deviations


def test_the_same_generator_state_draws_the_same_film():
    """A film is a function of the generator's state: generators seeded alike give the same
    pixels and masks and leave the same state behind (the next film depends on it)."""
    films = []
    for _ in range(2):
        rng = np.random.default_rng(7)
        image, masks = phantoms.phantom(rng, 64, {"Effusion", "Nodule"}, [0.02, 0.01], one_sided=0.5)
        films.append((image, masks, int(rng.integers(1 << 30))))
    assert np.array_equal(films[0][0], films[1][0]) and films[0][2] == films[1][2]
    assert len(films[0][1]) == len(films[1][1]) == 2 and all(map(np.array_equal, films[0][1], films[1][1]))


@pytest.mark.parametrize("finding", ["Effusion", "Nodule", "Infiltration", "Atelectasis"])
def test_a_finding_brightens_its_lung_and_nothing_else(finding):
    assert set(phantoms.FINDING_DRAWERS) == set(phantoms.FINDINGS) - {"Pneumothorax"}
    rng = np.random.default_rng(3)
    thorax = phantoms._thorax(rng, 128)
    before = thorax.img.copy()
    phantoms.FINDING_DRAWERS[finding](rng, thorax, thorax.lungs[1], thorax.lung_masks[1])
    changed = thorax.img != before
    assert changed.sum() > 20 and not (changed & ~thorax.lung_masks[1]).any()
    assert thorax.img[changed].mean() > before[changed].mean() + 0.1
