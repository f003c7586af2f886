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
underestimated by chance also inflates the df).

**One rule for intervals, p-values and verdicts.** With two runs or more the interval is
symmetric, the estimate plus or minus that half-width, and the p-value is the smallest
level whose half-width reaches |estimate|: the interval excludes 0 exactly when p < 0.05.
Under a multiplicity correction (`holm`) each interval is drawn at the level its adjusted p
implies (`Estimate.adjusted`): 1 - 0.05 p / p_adjusted, so it excludes 0 exactly when the
adjusted p is below 0.05. (A percentile interval shaped by the image bootstrap, used here
before, could exclude 0 while the symmetric p did not: one verdict, two answers.)

**Power** (`Estimate.smallest_detectable`): the true difference that the same rule resolves
with probability 80% at two-sided 5%, from the noncentral t with the runs' R - 1 degrees of
freedom, at the rule's own critical value (half-width / SE); `detectable_upper` repeats it
with the run variance at the upper end of its 95% confidence interval (chi-square, R - 1 df),
the bound to plan runs with when few runs estimate that variance.

- R = 1 ("images_only"): there is no run variance to estimate. The image-only interval (the
  bias-corrected percentile interval of the image bootstrap, `interval`) is shown, but no
  difference between initialisations can be called (`Estimate.p` is None).

**The percentile convention** (`interval`), for intervals that call nothing (one run, the
per-run clustering scores): the 95% percentile interval of the replicates, re-centred on the
point estimate (the bootstrap's bias, replicate mean minus estimate, is taken out: resampling
with replacement duplicates images, which inflates NMI and ARI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95  # every interval in the project
ALPHA = 1 - LEVEL  # two-sided level of every call, before Holm
POWER = 0.80  # the smallest detectable difference is resolved with this probability

IMAGES_ONLY = "images_only"
T_RUNS_IMAGES = "t_runs_images"
METHODS = {
    IMAGES_ONLY: "one run: stratified bootstrap over the test images only, no run variance; nothing is called",
    T_RUNS_IMAGES: "symmetric: the estimate plus or minus the t-based (Banerjee) combination of the run variance "
    "(t, R - 1 df) and the image-bootstrap variance; it excludes 0 exactly when p < 0.05 (adjusted p under Holm)",
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


def _quantile(alpha: float, df: float) -> float:
    """Upper alpha/2 quantile of t(df); the normal's for df = inf."""
    return float(stats.norm.isf(alpha / 2) if math.isinf(df) else stats.t.isf(alpha / 2, df))


def half_width(run_variance: float, runs: int, image_variance: float, alpha: float = ALPHA) -> float:
    """Banerjee's two-sided (1 - alpha) half-width for a run mean whose run part has variance
    `run_variance` (s^2 / R, estimated from `runs` runs: t(R - 1)) and whose image part has
    `image_variance` (normal); one run has no run part."""
    run_q = _quantile(alpha, runs - 1) if runs > 1 else 0.0
    return math.hypot(run_q * math.sqrt(run_variance), _quantile(alpha, math.inf) * math.sqrt(image_variance))


def interval(estimate: float, replicates: np.ndarray) -> tuple[float, float]:
    """A 95% percentile interval of the replicates re-centred on `estimate` (bootstrap bias
    removed), for intervals that call nothing. NaN bounds when a replicate is NaN (a metric
    undefined on the split)."""
    replicates = np.asarray(replicates, float)
    if not np.isfinite(estimate) or not np.isfinite(replicates).all():
        return math.nan, math.nan
    deviation = replicates - replicates.mean()
    low, high = np.quantile(deviation, [ALPHA / 2, 1 - ALPHA / 2])
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

    def adjusted(self, adjusted_p: float | None) -> tuple[float, float]:
        """The interval at the level a multiplicity correction implies: 1 - ALPHA * p /
        adjusted_p, so that it excludes 0 exactly when `adjusted_p` < ALPHA (the 95% interval
        when nothing is adjusted). One run: the image-only interval, unchanged."""
        p = self.p
        if p is None or adjusted_p is None or not np.isfinite(self.value):
            return self.low, self.high
        alpha = ALPHA if adjusted_p <= p or p == 0 else ALPHA * p / adjusted_p
        half = half_width(self.run_variance, self.runs, self.image_variance, alpha)
        return self.value - half, self.value + half

    @property
    def smallest_detectable(self) -> float:
        """The true difference this design resolves with probability POWER at two-sided
        ALPHA (`detectable`); with one run the image part alone (a lower bound)."""
        return detectable(self.run_variance, self.runs, self.image_variance)

    @property
    def detectable_upper(self) -> float:
        """`smallest_detectable` with the run variance at the upper end of its 95% confidence
        interval, (R - 1) s^2 / chi^2_{0.025, R-1}: what the design resolves if the runs drew
        a variance lower than the truth. Equal to `smallest_detectable` with one run."""
        if self.runs < 2:
            return self.smallest_detectable
        upper = self.run_variance * (self.runs - 1) / float(stats.chi2.ppf(ALPHA / 2, self.runs - 1))
        return detectable(upper, self.runs, self.image_variance)


def detectable(run_variance: float, runs: int, image_variance: float) -> float:
    """The smallest true difference resolved with probability POWER by the rule that calls
    at two-sided ALPHA: lambda * SE, lambda the noncentrality at which a noncentral t with
    R - 1 df (normal with one run) exceeds the rule's critical value c = half_width / SE in
    absolute value with probability POWER."""
    se = math.sqrt(run_variance + image_variance)
    if not np.isfinite(se) or se == 0:
        return math.nan if not np.isfinite(se) else 0.0
    c = half_width(run_variance, runs, image_variance) / se
    df = runs - 1 if runs > 1 else math.inf

    def power(lam: float) -> float:  # P(|T'| > c); the far tail underflows (scipy may give NaN there)
        if math.isinf(df):
            return float(stats.norm.sf(c - lam) + stats.norm.cdf(-c - lam))
        return float(stats.nct.sf(c, df, lam) + np.nan_to_num(stats.nct.cdf(-c, df, lam)))

    high = c + 10.0
    while power(high) < POWER:  # heavy tails with 1 df: widen until the power is reached
        high *= 2
    return float(optimize.brentq(lambda lam: power(lam) - POWER, 0.0, high, xtol=1e-10)) * se


def seed_aware(points: np.ndarray, samples: np.ndarray) -> Estimate:
    """The run mean of `points` (R,) (a metric or a difference per run, on the full test set)
    with its seed-aware interval: symmetric with two runs or more, the image bootstrap's
    percentile interval with one. samples[r, b] is run r's value on image resample b (the
    same image resamples for every run)."""
    points, samples = np.asarray(points, float), np.atleast_2d(np.asarray(samples, float))
    runs, value = len(points), float(points.mean())
    image_means = samples.mean(0)
    image_variance = float(image_means.var(ddof=1)) if np.isfinite(image_means).all() else math.nan
    if runs == 1:
        return Estimate(value, *interval(value, image_means), 1, IMAGES_ONLY, 0.0, image_variance)
    run_variance = float(points.var(ddof=1) / runs)
    if not np.isfinite(value) or not np.isfinite(image_variance):
        return Estimate(value, math.nan, math.nan, runs, T_RUNS_IMAGES, run_variance, image_variance)
    half = half_width(run_variance, runs, image_variance)
    return Estimate(value, value - half, value + half, runs, T_RUNS_IMAGES, run_variance, image_variance)


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
    a hypothesis is rejected when its adjusted p is below alpha (as an interval excludes 0). It controls the family-wise
    error rate under any dependence between the tests (the variants share `none` and runs)."""
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted, adjusted < alpha
