"""`report`: the study's ablation table with its uncertainty, from the per-image CSVs of
every U-Net run (evaluate) and of the content-free baselines (no image input).

Every number carries a 95% interval from one stratified, paired percentile bootstrap over
the test images. Positives are resampled among the positives and negatives among the
negatives, so each resample keeps the test split's positive count (Dice on positives and
AUC exist in every one). The same resamples serve every variant, seed and baseline, so the
interval of a difference reflects how the models disagree on the same images, not which
images happened to be drawn. A resample is a row of counts W (how often each image is
drawn); every metric is a weighted statistic of W, so all resamples are one matrix product.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pneumo.formats import per_image

log = logging.getLogger(__name__)

METRICS = ("siim_dice", "dice_positive", "dice_pooled", "iou", "auc")
STUDY = {"none": 75.3, "labels": 80.0, "pseudo_labels": 76.8}  # the study's Dice (x100), for reference
POWER_FACTOR = 2.8  # z(0.975) + z(0.80): a true difference of 2.8 SD is resolved with 80% power

Table = per_image.Table


def check_same_images(tables: dict[Path, Table]) -> None:
    """Fail, naming the file, unless every table lists the same images in the same order with
    the same labels: the paired bootstrap draws image i of every table together."""
    (ref_path, ref), *others = tables.items()
    for path, table in others:
        ids, ref_ids = table["image_id"], ref["image_id"]
        if len(ids) != len(ref_ids):
            raise ValueError(f"{path}: {len(ids)} images, but {ref_path} has {len(ref_ids)}")
        differ = np.flatnonzero(ids != ref_ids)
        if len(differ):
            i = differ[0]
            raise ValueError(f"{path}: image order differs from {ref_path} (row {i + 1}: {ids[i]} vs {ref_ids[i]})")
        if not np.array_equal(table["has_pneumothorax"], ref["has_pneumothorax"]):
            raise ValueError(f"{path}: has_pneumothorax differs from {ref_path}")


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


def weighted_auc(
    pos_scores: np.ndarray, neg_scores: np.ndarray, pos_counts: np.ndarray, neg_counts: np.ndarray
) -> np.ndarray:
    """ROC AUC per row of counts (Mann-Whitney; ties count 1/2): the share of (positive,
    negative) pairs ranked right, each pair weighted by the product of the two counts."""
    if not len(pos_scores) or not len(neg_scores):
        return np.full(len(pos_counts), np.nan)
    s, t = pos_scores[:, None], neg_scores[None, :]
    h = (s > t) + 0.5 * (s == t)
    return np.einsum("bj,bj->b", pos_counts @ h, neg_counts) / (pos_counts.sum(1) * neg_counts.sum(1))


def metric_samples(table: Table, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric once per row of `counts` (B, n): its value on the test set in which image i
    appears counts[b, i] times. A single row of ones gives the metric of the data itself."""
    w = np.atleast_2d(np.asarray(counts, float))
    pos = table["has_pneumothorax"]
    inter, pred, mask = table["intersection"], table["pred_pixels"], table["mask_pixels"]
    union = pred + mask - inter
    iou = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    pooled_num, pooled_den = 2 * (w @ inter), w @ (pred + mask)
    with np.errstate(invalid="ignore"):  # no positives: Dice on positives is NaN, as in pneumo.metrics
        dice_positive = w[:, pos] @ table["dice"][pos] / w[:, pos].sum(1)
    return {
        "siim_dice": w @ table["dice"] / w.sum(1),
        "dice_positive": dice_positive,
        "dice_pooled": np.divide(pooled_num, pooled_den, out=np.zeros_like(pooled_num), where=pooled_den > 0),
        "iou": w @ iou / w.sum(1),
        "auc": weighted_auc(table["max_prob"][pos], table["max_prob"][~pos], w[:, pos], w[:, ~pos]),
    }


def interval(samples: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of bootstrap samples."""
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def _number(x: float) -> float | None:
    """JSON-safe float: NaN (a metric undefined on this split) becomes null."""
    return round(float(x), 6) if np.isfinite(x) else None


def _estimate(points: np.ndarray, samples: np.ndarray) -> dict:
    low, high = interval(samples.mean(0))
    return {"value": _number(points.mean()), "low": _number(low), "high": _number(high)}


def _difference(model: dict, ref: dict, metric: str) -> tuple[dict, float]:
    """A model minus a reference on one metric: point, paired interval, whether it is resolved,
    and the per-seed sign agreement; plus the bootstrap SD of the difference."""
    points, ref_points = model["points"][metric], ref["points"][metric]
    diff = points.mean() - ref_points.mean()
    samples = model["samples"][metric].mean(0) - ref["samples"][metric].mean(0)
    low, high = interval(samples)
    # seeds pair by position (both lists come from train_unet.seeds); a baseline has one run
    per_seed = points - (ref_points if len(ref_points) == len(points) else ref_points.mean())
    agree = int((np.sign(per_seed) == np.sign(diff)).sum())
    entry = {
        "diff": _number(diff),
        "low": _number(low),
        "high": _number(high),
        "resolved": bool(low > 0 or high < 0),
        "same_sign_seeds": f"{agree}/{len(points)}",
    }
    return entry, float(samples.std(ddof=1))


def ablation(*, runs: dict[str, list[Table]], baselines: dict[str, Table], resamples: int, seed: int) -> dict:
    """The report as a JSON-ready dict: every variant (seed-mean) and baseline with intervals,
    each variant's difference from `none` and from the best content-free baseline per metric,
    and the smallest difference this test split can detect. Tables must share their images."""
    first = next(iter(baselines.values())) if baselines else runs[next(iter(runs))][0]
    positive = first["has_pneumothorax"]
    counts = stratified_counts(positive, resamples, seed)
    ones = np.ones((1, len(positive)))

    def model(tables: list[Table]) -> dict:
        point = [metric_samples(t, ones) for t in tables]
        boot = [metric_samples(t, counts) for t in tables]
        return {
            "points": {m: np.array([p[m][0] for p in point]) for m in METRICS},
            "samples": {m: np.stack([b[m] for b in boot]) for m in METRICS},
        }

    variants = {v: model(tables) for v, tables in runs.items()}
    bases = {b: model([t]) for b, t in baselines.items()}
    summary: dict = {
        "test_images": len(positive),
        "test_positive": int(positive.sum()),
        "resamples": resamples,
        "variants": {
            v: {**{m: _estimate(x["points"][m], x["samples"][m]) for m in METRICS}, "seeds": len(runs[v])}
            for v, x in variants.items()
        },
        "baselines": {b: {m: _estimate(x["points"][m], x["samples"][m]) for m in METRICS} for b, x in bases.items()},
        "vs_none": {},
        "vs_baseline": {},
    }
    sd_none: dict[str, list[float]] = {m: [] for m in METRICS}
    sd_base: dict[str, list[float]] = {m: [] for m in METRICS}
    if "none" in variants:
        for v, x in variants.items():
            if v != "none":
                summary["vs_none"][v] = {}
                for m in METRICS:
                    summary["vs_none"][v][m], sd = _difference(x, variants["none"], m)
                    sd_none[m].append(sd)
    if bases:
        # the best content-free baseline per metric: the higher point estimate (first on ties)
        best = {m: max(bases, key=lambda b, m=m: np.nan_to_num(bases[b]["points"][m][0], nan=-np.inf)) for m in METRICS}
        for v, x in variants.items():
            summary["vs_baseline"][v] = {}
            for m in METRICS:
                entry, sd = _difference(x, bases[best[m]], m)
                summary["vs_baseline"][v][m] = {"baseline": best[m], **entry}
                sd_base[m].append(sd)
    versus, sds = ("none", sd_none) if summary["vs_none"] else ("baseline", sd_base)
    summary["smallest_detectable_difference"] = {
        "versus": versus,
        **{m: _number(POWER_FACTOR * np.median(sds[m])) if sds[m] else None for m in METRICS},
    }
    return summary


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _diff_cell(d: dict, seeds: int) -> str:
    cell = f"{_fmt(d['diff'], True)} [{_fmt(d['low'], True)}, {_fmt(d['high'], True)}]"
    if d["resolved"]:
        cell = f"**{cell} ✓**"
    return f"{cell} ({d['same_sign_seeds']})" if seeds > 1 else cell


def markdown(summary: dict) -> str:
    """The ablation report as Markdown: main table with intervals, the two difference tables
    (resolved differences marked), the smallest detectable difference, metric definitions."""
    variants, baselines = summary["variants"], summary["baselines"]
    seeds = sorted({row["seeds"] for row in variants.values()})
    max_seeds = max(seeds, default=1)
    seeds_text = "/".join(str(s) for s in seeds) or "0"
    lines = [
        "# Ablation: encoder initialisation (test split)",
        "",
        f"{summary['test_images']} test images ({summary['test_positive']} with pneumothorax), {seeds_text} seed(s) "
        f"per variant, {summary['resamples']} bootstrap resamples. Intervals are 95% percentile intervals of a "
        "stratified, paired bootstrap over the test images: positives resampled among positives, negatives among "
        "negatives, the same resamples for every variant, seed and baseline; a variant's value is its mean over "
        "seeds (so the intervals show test-set sampling, the seed agreement shows seed variation).",
        "",
        "| model | seeds | " + " | ".join(METRICS) + " | study Dice |",
        "|---" * (len(METRICS) + 3) + "|",
    ]
    for name, row in variants.items():
        study = f"{STUDY[name]:.1f}" if name in STUDY else ""
        cells = [f"{_fmt(row[m]['value'])} [{_fmt(row[m]['low'])}, {_fmt(row[m]['high'])}]" for m in METRICS]
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cells) + f" | {study} |")
    for name, row in baselines.items():
        cells = [f"{_fmt(row[m]['value'])} [{_fmt(row[m]['low'])}, {_fmt(row[m]['high'])}]" for m in METRICS]
        lines.append(f"| {name} (baseline) | – | " + " | ".join(cells) + " |  |")
    for title, table in (
        ("Difference from `none`", summary["vs_none"]),
        ("Difference from the best content-free baseline", summary["vs_baseline"]),
    ):
        if not table:
            continue
        first = next(iter(table.values()))
        header = [f"{m} (vs {first[m]['baseline']})" if "baseline" in first[m] else m for m in METRICS]
        lines += ["", f"## {title}", "", "| variant | " + " | ".join(header) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for name, row in table.items():
            cells = [_diff_cell(row[m], variants[name]["seeds"]) for m in METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if summary["vs_none"] or summary["vs_baseline"]:
        mark = (
            "Bold with ✓: the 95% interval of the difference excludes 0, so the difference is called; an unmarked "
            "difference is within what resampling the test images produces."
        )
        if max_seeds > 1:
            mark += " (k/S): in k of the S seeds the seed's own difference has the sign of the seed-mean difference."
        lines += ["", mark]
    sdd = summary["smallest_detectable_difference"]
    versus = "`none`" if sdd["versus"] == "none" else "the best baseline"
    lines += [
        "",
        f"Smallest detectable difference (80% power at two-sided 5%: {POWER_FACTOR} × the bootstrap SD of the paired "
        f"difference, median over the variants vs {versus}): "
        + ", ".join(f"{m} {_fmt(sdd[m])}" for m in METRICS)
        + ". Smaller true differences will mostly go unresolved on this test split.",
        "",
        "Metrics: `siim_dice` is SIIM-ACR's metric, the mean over images of Dice where an empty prediction on an "
        "empty image scores 1; `dice_positive` is the mean Dice over images with a pneumothorax; `dice_pooled` is "
        "Dice over all pixels of all images pooled; `iou` is the mean per-image IoU (1 when both are empty); `auc` "
        "is the image-level ROC AUC of the maximum pixel probability (ties count 1/2). Content-free baselines see "
        "no image: `all_empty` predicts nothing anywhere; `location_prior` predicts the mean training mask, its "
        "thresholds tuned on validation.",
    ]
    return "\n".join(lines) + "\n"


def headline(summary: dict, clustering: dict | None = None) -> dict:
    """The study's numbers as the one small metrics file `dvc exp show` and `dvc metrics diff`
    list: per variant and content-free baseline its SIIM Dice (seed mean) and `ci`, the
    half-width of its 95% interval (percentile intervals are nearly symmetric here; the exact
    bounds are in the ablation JSON), plus the pseudo-labels' NMI for the autoencoder latent
    and for raw pixels. Two numbers per variant is what fits a 200-column `exp show`; Dice on
    positives, AUC and every difference with its interval are in the ablation report."""

    def pair(estimate: dict) -> dict:
        value, low, high = estimate["value"], estimate["low"], estimate["high"]
        ci = None if low is None or high is None else round((high - low) / 2, 4)
        return {"dice": None if value is None else round(value, 4), "ci": ci}

    out = {name: pair(m["siim_dice"]) for group in ("variants", "baselines") for name, m in summary[group].items()}
    if clustering:
        out["clustering"] = {f"nmi_{name}": round(clustering[name]["nmi"], 4) for name in ("autoencoder", "raw_pixels")}
    return out


def report(
    *,
    runs: dict[str, list[Path]],
    baselines: dict[str, Path],
    resamples: int,
    seed: int,
    json_path: Path,
    md_path: Path,
    headline_path: Path,
    clustering_path: Path | None = None,
) -> dict:
    """Read the per-image CSVs (runs: variant -> one CSV per seed; baselines: name -> CSV),
    check they share their images, and write the ablation JSON and Markdown and the headline
    metrics (with cluster_latents' NMI from `clustering_path`)."""
    paths = [p for ps in runs.values() for p in ps] + list(baselines.values())
    if not paths or any(not ps for ps in runs.values()):
        raise ValueError("report needs at least one CSV per variant")
    tables = {Path(p): per_image.read(Path(p)) for p in paths}
    check_same_images(tables)
    summary = ablation(
        runs={v: [tables[Path(p)] for p in ps] for v, ps in runs.items()},
        baselines={b: tables[Path(p)] for b, p in baselines.items()},
        resamples=resamples,
        seed=seed,
    )
    clustering = json.loads(Path(clustering_path).read_text()) if clustering_path else None
    for path in (json_path, md_path, headline_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    md_path.write_text(markdown(summary))
    headline_path.write_text(json.dumps(headline(summary, clustering), indent=1) + "\n")
    log.info(
        "report: %d test images (%d positive), %d resamples; smallest detectable siim_dice difference %s",
        summary["test_images"],
        summary["test_positive"],
        resamples,
        summary["smallest_detectable_difference"]["siim_dice"],
    )
    return summary
