"""The project's one bootstrap (pneumo.core.bootstrap): the stratified image resamples, the
percentile convention, the seed-aware interval's coverage on simulated studies with a known
difference and a known run variance, the smallest detectable difference's power, one rule
for intervals, p-values and Holm, and one run calling nothing."""

import math

import numpy as np
import pytest
from scipy import stats

from pneumo.core import bootstrap


@pytest.mark.parametrize(
    "positive",
    [[1, 0, 0, 0, 0], [0, 1, 0, 1, 1, 0, 0, 0, 0, 1], [1, 1, 1], [0, 0, 0, 0], [1] * 7 + [0] * 30],
)
def test_stratified_counts_keep_the_positive_count(positive):
    positive = np.array(positive, bool)
    w = bootstrap.stratified_counts(positive, 500, seed=3)
    assert w.shape == (500, len(positive)) and w.min() >= 0
    assert (w[:, positive].sum(1) == positive.sum()).all()
    assert (w[:, ~positive].sum(1) == (~positive).sum()).all()
    np.testing.assert_allclose(w.mean(0), 1, atol=0.25)  # every image is drawn, uniformly in its stratum
    assert w.std(0).max() > 0.5  # it does resample
    np.testing.assert_array_equal(w, bootstrap.stratified_counts(positive, 500, seed=3))
    assert not np.array_equal(w, bootstrap.stratified_counts(positive, 500, seed=4))


def simulate(runs: int, studies: int = 400, delta: float = 0.03, run_sd: float = 0.02, seed: int = 0):
    """`studies` simulated studies of two variants (`none`, `labels`) with `runs` runs each,
    scored on 200 test images (60 positive): per image and run, score = image difficulty
    (shared by all) + delta for `labels` + the variant's own image effect (SD 0.1) + a run
    effect (a part shared by the run's seed, which cancels in the paired difference, and the
    variant's own, SD `run_sd`) + noise. Returns per study the per-run differences (S, R) on
    the full test set and their values on every image resample (S, R, B)."""
    rng = np.random.default_rng(seed)
    n, n_pos, resamples = 200, 60, 400
    hard = rng.normal(0.5, 0.2, (studies, 1, n))
    own = rng.normal(0, 0.1, (studies, 1, n))
    shared = rng.normal(0, 0.02, (studies, runs, 1))
    none = hard + shared + rng.normal(0, run_sd, (studies, runs, 1)) + rng.normal(0, 0.05, (studies, runs, n))
    labels = hard + delta + own + shared + rng.normal(0, run_sd, (studies, runs, 1))
    labels = labels + rng.normal(0, 0.05, (studies, runs, n))
    diff = labels - none
    counts = bootstrap.stratified_counts(np.arange(n) < n_pos, resamples, seed)  # one matrix serves every study
    return diff.mean(2), diff @ counts.T / n


@pytest.mark.parametrize("runs", [3, 8])
def test_seed_aware_interval_covers_the_true_difference_and_image_only_does_not(runs):
    """On 400 simulated studies with a known difference (+0.03) and a known run variance, the
    seed-aware interval covers the truth about 95% of the time (within 3 binomial SEs;
    Banerjee's rule is conservative with few runs). The image-only interval, which ignores
    the runs, covers it far less often."""
    points, samples = simulate(runs)
    seed_aware, image_only = [], []
    for p, s in zip(points, samples, strict=True):
        e = bootstrap.seed_aware(p, s)
        assert e.method == bootstrap.T_RUNS_IMAGES and e.runs == runs
        assert e.high - e.value == pytest.approx(e.value - e.low)  # symmetric
        seed_aware.append(e.low <= 0.03 <= e.high)
        low, high = bootstrap.interval(p.mean(), s.mean(0))
        image_only.append(low <= 0.03 <= high)
    assert 0.917 <= np.mean(seed_aware) <= 0.99, np.mean(seed_aware)
    assert np.mean(image_only) <= 0.85 and np.mean(image_only) < np.mean(seed_aware) - 0.15, np.mean(image_only)


@pytest.mark.parametrize(("runs", "run_sd"), [(3, 0.02), (8, 0.0), (5, 0.01)])
def test_smallest_detectable_difference_is_resolved_80_percent(runs, run_sd):
    """A true difference of the smallest detectable size, computed from the design's
    variances (their means over many studies), is resolved in about 80% of simulated
    studies: the noncentral t with R - 1 df at the rule's own critical value."""
    estimates = [bootstrap.seed_aware(p, s) for p, s in zip(*simulate(runs, run_sd=run_sd), strict=True)]
    run_var = float(np.mean([e.run_variance for e in estimates]))
    image_var = float(np.mean([e.image_variance for e in estimates]))
    size = bootstrap.detectable(run_var, runs, image_var)
    studies = simulate(runs, delta=size, run_sd=run_sd, seed=1, studies=800)
    hits = np.mean([bootstrap.seed_aware(p, s).resolved for p, s in zip(*studies, strict=True)])
    assert 0.74 <= hits <= 0.88, (size, hits)


def test_smallest_detectable_difference_grows_with_the_run_variance_and_its_bound_is_above_it():
    quiet = [bootstrap.seed_aware(p, s) for p, s in zip(*simulate(8, run_sd=0.0), strict=True)]
    noisy = [bootstrap.seed_aware(p, s) for p, s in zip(*simulate(8, run_sd=0.03), strict=True)]
    assert np.median([e.smallest_detectable for e in noisy]) > 1.5 * np.median([e.smallest_detectable for e in quiet])
    assert all(e.detectable_upper > e.smallest_detectable for e in noisy)
    points, samples = simulate(8, run_sd=0.0)
    one = bootstrap.seed_aware(points[0, :1], samples[0, :1])
    assert one.smallest_detectable == pytest.approx(2.8016 * math.sqrt(one.image_variance), rel=1e-4)
    assert one.detectable_upper == one.smallest_detectable  # one run: no run variance to bound


def test_interval_and_p_agree_at_every_holm_level():
    """The report's one rule: an interval drawn at the level its Holm-adjusted p implies
    excludes 0 exactly when the adjusted p is below 0.05, on every row of many families of
    five (like the controls experiment), and the unadjusted 95% interval exactly when p is."""
    rng = np.random.default_rng(4)
    checked = called = 0
    for _ in range(300):
        family = []
        for _ in range(5):
            runs = int(rng.integers(2, 7))
            samples = rng.normal(rng.normal(0, 0.03), 0.01, (runs, 200)) + rng.normal(0, 0.02, (runs, 1))
            family.append(bootstrap.seed_aware(samples.mean(1), samples))
        adjusted, rejected = bootstrap.holm([e.p for e in family])
        for e, adj, rej in zip(family, adjusted, rejected, strict=True):
            low, high = e.adjusted(adj)
            assert (low > 0 or high < 0) == bool(rej) == (adj < 0.05)
            assert (e.low > 0 or e.high < 0) == e.resolved == (e.p < 0.05)
            checked, called = checked + 1, called + int(rej)
    assert 0.1 * checked < called < 0.9 * checked  # both outcomes are exercised


def test_one_run_calls_nothing():
    """With one run there is an image-only interval, but no p and no resolved difference,
    even when the interval is far from 0."""
    samples = np.random.default_rng(0).normal(0.2, 0.01, (1, 500))
    e = bootstrap.seed_aware([0.2], samples)
    assert e.method == bootstrap.IMAGES_ONLY and e.low > 0.15
    assert e.p is None and not e.resolved
    assert bootstrap.from_runs([0.2], [0.01]).method == bootstrap.IMAGES_ONLY
    assert not bootstrap.from_runs([0.2], [0.01]).resolved


def test_two_runs_and_more_resolve_a_clear_difference():
    rng = np.random.default_rng(1)
    samples = 0.2 + rng.normal(0, 0.01, (3, 500)) + np.array([[0.0], [0.01], [-0.01]])
    e = bootstrap.seed_aware(samples.mean(1), samples)
    assert e.method == bootstrap.T_RUNS_IMAGES and e.resolved and e.p < 0.01


def test_interval_is_recentred():
    rng = np.random.default_rng(2)
    replicates = rng.normal(0, 1, 20000)
    low, high = bootstrap.interval(0.0, replicates)
    assert low == pytest.approx(-1.96, abs=0.05) and high == pytest.approx(1.96, abs=0.05)
    # a bootstrap bias (replicates centred above the estimate) is taken out
    assert bootstrap.interval(0.0, replicates + 0.7) == pytest.approx((low, high))
    # skewness is kept: the long tail stays long
    low, high = bootstrap.interval(0.0, rng.exponential(1, 20000))
    assert high > -low
    assert bootstrap.interval(0.5, np.full(100, 0.5)) == (0.5, 0.5)
    assert all(math.isnan(x) for x in bootstrap.interval(0.5, np.r_[np.nan, np.ones(9)]))


def test_half_width_is_banerjees_and_p_inverts_it():
    # runs alone: t(R - 1); images alone: the normal
    assert bootstrap.half_width(0.01**2, 3, 0.0) == pytest.approx(stats.t.ppf(0.975, 2) * 0.01)
    assert bootstrap.half_width(0.0, 3, 0.01**2) == pytest.approx(1.959964 * 0.01)
    both = bootstrap.half_width(0.01**2, 3, 0.01**2)
    assert both == pytest.approx(math.hypot(stats.t.ppf(0.975, 2), 1.959964) * 0.01)
    for run_var, runs, image_var in ((1e-4, 3, 4e-5), (1e-4, 8, 0.0), (0.0, 3, 1e-4), (2e-4, 2, 1e-5)):
        for alpha in (0.5, 0.05, 0.01, 1e-6):
            d = bootstrap.half_width(run_var, runs, image_var, alpha)
            assert bootstrap.p_value(d, run_var, runs, image_var) == pytest.approx(alpha, rel=1e-6)
            assert bootstrap.p_value(-d, run_var, runs, image_var) == pytest.approx(alpha, rel=1e-6)
    assert bootstrap.p_value(0.0, 1e-4, 3, 1e-4) == 1.0
    assert bootstrap.p_value(0.1, 0.0, 3, 0.0) == 0.0 and bootstrap.p_value(0.0, 0.0, 3, 0.0) == 1.0


@pytest.mark.parametrize(
    ("p", "adjusted", "rejected"),
    [
        # the textbook case: sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1, then non-decreasing
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02], [True, False, False, True]),
        ([0.04], [0.04], [True]),
        ([0.2, 0.01, 0.012], [0.2, 0.03, 0.03], [False, True, True]),
        # a later, larger p can never be adjusted below an earlier one; capped at 1
        ([0.6, 0.001, 0.4], [0.8, 0.003, 0.8], [False, True, False]),
        ([0.5, 0.7, 0.9], [1.0, 1.0, 1.0], [False, False, False]),
        # ties keep their order and share their adjusted value
        ([0.02, 0.02, 0.5], [0.06, 0.06, 0.5], [False, False, False]),
        ([0.01, 0.01, 0.01, 0.01], [0.04, 0.04, 0.04, 0.04], [True, True, True, True]),
        ([], [], []),
    ],
)
def test_holm(p, adjusted, rejected):
    got, reject = bootstrap.holm(p)
    np.testing.assert_allclose(got, adjusted, rtol=1e-12)
    assert reject.tolist() == rejected


def test_holm_controls_the_family_wise_error():
    """Three true null differences, each tested at 5%: uncorrected, at least one is called in
    ~14% of studies; after Holm in at most 5%."""
    p = np.random.default_rng(3).random((4000, 3))
    assert (p < 0.05).any(1).mean() > 0.12
    assert np.mean([bootstrap.holm(row)[1].any() for row in p]) <= 0.055
