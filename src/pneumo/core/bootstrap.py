"""The project's one bootstrap and its one interval convention, for the ablation report and
the pseudo-label validation alike.

Resamples are counts: row b of a (B, n) matrix says how often each image is drawn, so every
statistic that is a weighted sum over images is one matrix product for all resamples.

**Images.** `stratified_counts` draws positives among the positives and negatives among the
negatives, so each resample keeps the test split's positive count (Dice on positives and AUC
exist in every one). The same image resamples serve every variant, run and baseline: a
difference is then paired on images, and its interval shows how two models disagree on the
same images, not which images happened to be drawn.

**Runs.** Run r of every variant is the whole training chain seeded r: its own encoder (the
random `none` init, the autoencoder and its clusters, the pretraining), but the same U-Net
seed r, i.e. the same decoder initialisation, sample order and augmentation stream. Runs are
therefore paired across variants by index: a variant's per-run difference d_r compares two
chains that shared everything the U-Net seed controls, so that part of the training noise
cancels, and the pairing is fixed by design before any result is seen (run indices are
exchangeable, so resampling an index jointly for every variant keeps their joint
distribution). Pairing never assumes the noise is shared: the run variance is estimated from
the d_r themselves, whatever their correlation.

**A seed-aware interval** (`seed_aware`) covers training noise and test-set sampling. With R
runs scored on the same N test images, the run mean of a difference has two variance parts:
s^2_runs / R, s^2_runs the sample variance of the per-run values d_r on the full test set,
and SE^2_images, the image-bootstrap variance of the run mean (images are a crossed factor:
every run sees the same images, so their sampling error is common to all runs and does not
average out over runs). Their sum is SE^2. The interval's half-width combines the two parts
by Banerjee's rule (Sankhya 22, 1960; the conservative answer to the Behrens-Fisher problem):
sqrt(t_{R-1}^2 s^2_runs / R + z^2 SE^2_images), with t_{R-1} and z the 97.5% quantiles of
t(R - 1) and the normal (the image part has about as many df as test images). Its coverage
is at least 95% whatever the ratio of the two parts (Banerjee's result for normal means):
t(R - 1) when runs dominate, z when images do. Welch-Satterthwaite degrees of freedom were
measured too and rejected: on the simulated studies of tests/test_bootstrap.py they cover
87% with 2 runs and 92-93% with 3 when the run variance dominates (a run variance
underestimated by chance also inflates the df). R - 1 df for both parts is honest but, at 3
runs, t = 4.3 even when the runs agree: it covered 97-100% and resolved a true +0.03 in 9-28%.
The interval's shape (skewness) comes from bootstrap replicates:

- R >= MIN_BOOTSTRAP_RUNS (5): a two-level bootstrap, runs then images. Replicate b draws R
  run indices with replacement (`run_counts`, once per replicate, jointly for all variants)
  and an image resample, and averages the resampled runs' values on it.
- 2 <= R < 5 ("t_runs_images"): a run-level bootstrap is not honest (3 runs give only 10
  distinct resamples, and its percentiles cannot reach the t quantile's tails), so the shape
  comes from the image bootstrap of the run mean alone, and the run variance enters through
  the half-width only: a t-based (Banerjee) combination of the run and image variances.
- R = 1 ("images_only"): there is no run variance to estimate. The image-only interval is
  shown, but no difference between initialisations can be called (`Estimate.p` is None).

**The interval convention** (`interval`), for every interval in the project: the 95%
percentile interval of the replicates, re-centred on the point estimate (the bootstrap's
bias, replicate mean minus estimate, is taken out: resampling with replacement duplicates
images, which inflates NMI and ARI), then stretched about the estimate so that its
half-widths correspond to the target half-width above instead of z * SD(replicates); for
two levels this is Hesterberg's expanded percentile interval (The American Statistician 69,
2015: widen a small-sample percentile interval to the t-width of the unbiased variance).
Without a target (an image-only bootstrap: baselines, clustering, one run) the stretch is 1.
A p-value is the smallest level at which the same half-width rule excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95  # every interval in the project
ALPHA = 1 - LEVEL  # two-sided level of every call, before Holm
POWER = 0.80  # the smallest detectable difference is resolved with this probability
MIN_BOOTSTRAP_RUNS = 5  # from 5 runs (126 distinct run resamples) on, runs are resampled; 4 give 35

IMAGES_ONLY = "images_only"
T_RUNS_IMAGES = "t_runs_images"
TWO_LEVEL = "two_level_bootstrap"
METHODS = {
    IMAGES_ONLY: "one run: stratified bootstrap over the test images only, no run variance; nothing is called",
    T_RUNS_IMAGES: "fewer than 5 runs: t-based (Banerjee) combination of the run variance (t, R - 1 df) and the "
    "image-bootstrap variance, shaped by the image bootstrap",
    TWO_LEVEL: "two-level bootstrap (runs, then images), percentile interval expanded to the t-based "
    "(Banerjee) half-width of the run and image variances",
}


def stratified_counts(positive: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) int counts of a stratified bootstrap: row b says how often each image is
    drawn when the positives are drawn with replacement among the positives and the negatives
    among the negatives, so every row keeps the number of positives."""
    positive = np.asarray(positive, bool)
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, len(positive)), dtype=np.int64)
    for stratum in (np.flatnonzero(positive), np.flatnonzero(~positive)):
        k = len(stratum)
        if k:
            # draw k indices per row, offset by row, and count them all in one bincount
            draws = rng.integers(0, k, size=(resamples, k)) + k * np.arange(resamples)[:, None]
            counts[:, stratum] = np.bincount(draws.ravel(), minlength=resamples * k).reshape(resamples, k)
    return counts


def run_counts(runs: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, runs) int counts of the run level: row b says how often each run index is
    drawn (R draws with replacement). One matrix serves every variant: runs pair by index."""
    rng = np.random.default_rng([seed, runs])  # a stream of its own, apart from the image resamples
    return rng.multinomial(runs, np.full(runs, 1 / runs), size=resamples)


def _quantile(alpha: float, df: float) -> float:
    """Upper alpha/2 quantile of t(df); the normal's for df = inf."""
    return float(stats.norm.isf(alpha / 2) if math.isinf(df) else stats.t.isf(alpha / 2, df))


def half_width(run_variance: float, runs: int, image_variance: float, alpha: float = ALPHA) -> float:
    """Banerjee's two-sided (1 - alpha) half-width for a run mean whose run part has variance
    `run_variance` (s^2 / R, estimated from `runs` runs: t(R - 1)) and whose image part has
    `image_variance` (normal); one run has no run part."""
    run_q = _quantile(alpha, runs - 1) if runs > 1 else 0.0
    return math.hypot(run_q * math.sqrt(run_variance), _quantile(alpha, math.inf) * math.sqrt(image_variance))


def interval(estimate: float, replicates: np.ndarray, target: float | None = None) -> tuple[float, float]:
    """The project's 95% interval: percentiles of the replicates re-centred on `estimate`
    (bootstrap bias removed), stretched about it so that the half-width of normal-shaped
    replicates would be `target` (see the module docstring); no stretch without a target.
    NaN bounds when a replicate is NaN (a metric undefined on the split)."""
    replicates = np.asarray(replicates, float)
    if not np.isfinite(estimate) or not np.isfinite(replicates).all():
        return math.nan, math.nan
    deviation = replicates - replicates.mean()
    low, high = np.quantile(deviation, [ALPHA / 2, 1 - ALPHA / 2])
    if target is not None:
        spread = float(deviation.std(ddof=1)) if len(deviation) > 1 else 0.0
        if spread == 0:  # replicates without spread have no shape: symmetric
            return float(estimate - target), float(estimate + target)
        stretch = target / (_quantile(ALPHA, math.inf) * spread)
        low, high = stretch * low, stretch * high
    return float(estimate + low), float(estimate + high)


def p_value(estimate: float, run_variance: float, runs: int, image_variance: float) -> float:
    """Two-sided p of estimate = 0: the smallest alpha whose `half_width` reaches |estimate|."""
    if not np.isfinite(estimate):
        return math.nan
    if run_variance * (runs > 1) + image_variance == 0:
        return 1.0 if estimate == 0 else 0.0
    if estimate == 0:
        return 1.0
    gap = lambda a: half_width(run_variance, runs, image_variance, a) - abs(estimate)  # noqa: E731
    if gap(1e-300) < 0:
        return 0.0
    return float(optimize.brentq(gap, 1e-300, 1.0, xtol=1e-15, rtol=1e-10))


@dataclass(frozen=True)
class Estimate:
    """A run mean with its seed-aware 95% interval and the variance parts that made it."""

    value: float
    low: float
    high: float
    runs: int
    method: str
    run_variance: float  # s^2 / R of the per-run values (0 with one run: not estimable)
    image_variance: float  # bootstrap variance of the run mean over image resamples

    @property
    def se(self) -> float:
        return math.sqrt(self.run_variance + self.image_variance)

    @property
    def p(self) -> float | None:
        """Two-sided p of value = 0; None with one run (nothing can be called)."""
        if self.method == IMAGES_ONLY:
            return None
        return p_value(self.value, self.run_variance, self.runs, self.image_variance)

    @property
    def resolved(self) -> bool:
        """The interval excludes 0, with runs enough to say so."""
        return self.method != IMAGES_ONLY and bool(self.low > 0 or self.high < 0)

    @property
    def smallest_detectable(self) -> float:
        """The true difference this design resolves with probability POWER at two-sided
        ALPHA: Banerjee's combination of (t + t_power) * run SE and (z + z_power) * image SE
        (2.80 image SEs with one run, where the run part is unknown, so it is a lower bound)."""
        runs, big = self.runs, math.inf
        run_q = _quantile(ALPHA, runs - 1) + _quantile(2 * (1 - POWER), runs - 1) if runs > 1 else 0.0
        image_q = _quantile(ALPHA, big) + _quantile(2 * (1 - POWER), big)
        return math.sqrt(run_q**2 * self.run_variance + image_q**2 * self.image_variance)


def seed_aware(points: np.ndarray, samples: np.ndarray, run_draws: np.ndarray | None = None) -> Estimate:
    """The run mean of `points` (R,) (a metric or a difference per run, on the full test set)
    with its seed-aware interval. samples[r, b] is run r's value on image resample b (the same
    image resamples for every run); run_draws (B, R) are `run_counts`, needed from
    MIN_BOOTSTRAP_RUNS runs on and shared by everything compared (runs pair by index)."""
    points, samples = np.asarray(points, float), np.atleast_2d(np.asarray(samples, float))
    runs, value = len(points), float(points.mean())
    image_means = samples.mean(0)
    image_variance = float(image_means.var(ddof=1)) if np.isfinite(image_means).all() else math.nan
    if runs == 1:
        return Estimate(value, *interval(value, image_means), 1, IMAGES_ONLY, 0.0, image_variance)
    run_variance = float(points.var(ddof=1) / runs)
    if runs < MIN_BOOTSTRAP_RUNS:
        replicates, method = image_means, T_RUNS_IMAGES
    else:
        if run_draws is None or run_draws.shape != samples.T.shape:
            raise ValueError(f"{runs} runs need run_draws of shape {samples.T.shape} for the two-level bootstrap")
        replicates, method = (run_draws * samples.T).sum(1) / runs, TWO_LEVEL
    target = half_width(run_variance, runs, image_variance)
    return Estimate(value, *interval(value, replicates, target), runs, method, run_variance, image_variance)


def from_runs(points: np.ndarray, image_se: np.ndarray) -> Estimate:
    """The run mean of `points` (R,) when each run has already been summarised by its own
    image-bootstrap SE `image_se` (R,) on the same images (the pseudo-label runs): the image
    variance of the mean is taken as (mean SE)^2, its value when the runs' image errors are
    perfectly correlated and an upper bound otherwise. Symmetric: no replicates to shape it."""
    points, image_se = np.asarray(points, float), np.asarray(image_se, float)
    runs, value = len(points), float(points.mean())
    image_variance = float(image_se.mean() ** 2)
    run_variance = float(points.var(ddof=1) / runs) if runs > 1 else 0.0
    half = half_width(run_variance, runs, image_variance)
    method = IMAGES_ONLY if runs == 1 else T_RUNS_IMAGES
    return Estimate(value, value - half, value + half, runs, method, run_variance, image_variance)


def holm(p_values, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction: (adjusted p, rejected at `alpha`) in the given order. The
    i-th smallest of m p-values is multiplied by m - i + 1, made non-decreasing, capped at 1;
    a hypothesis is rejected when its adjusted p is at most alpha. It controls the family-wise
    error rate under any dependence between the tests (the variants share `none` and runs)."""
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted, adjusted <= alpha
