"""`report`: the study's ablation table with its uncertainty, from the per-image CSVs of
every U-Net run (evaluate), the content-free baselines (no image input), the U-Nets'
training summaries and the pseudo-label validation of every run (cluster_latents).

Every metric is a weighted statistic of image counts, so one matrix of stratified image
resamples (`bootstrap.stratified_counts`: positives among positives, negatives among
negatives) scores every variant, run and baseline at once; the same resamples serve all
of them, so differences are paired on images. Runs pair by index (run r of every variant
shares the U-Net seed r). Intervals are `bootstrap.seed_aware`: they cover training noise
(the spread of the runs) and test-set sampling; with one run they cover only the latter,
and the report calls nothing.

One endpoint is primary (`report.primary`, `dice_positive` by default): each variant is
called against `none` on it only, with Holm's correction over the variants. Every other
metric is secondary: its intervals are shown, nothing is called on it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pneumo.core import bootstrap, initialisations, metrics
from pneumo.formats import dicom, per_image

log = logging.getLogger(__name__)

METRICS = ("siim_dice", "dice_positive", "dice_pooled", "iou", "auc")
STUDY = {"none": 75.3, "labels": 80.0, "pseudo_labels": 76.8}  # the study's Dice (x100), for reference
REFERENCE = initialisations.REFERENCE  # every variant is called against the random initialisation
CLUSTERING_METHODS = {  # bootstrap.from_runs: each run's own bootstrap SE, combined over the runs
    bootstrap.IMAGES_ONLY: "one run: its own image bootstrap only",
    bootstrap.T_RUNS_IMAGES: "t-based combination of the run spread and the runs' image-bootstrap SEs",
}

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


def metric_samples(table: Table, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric once per row of `counts` (B, n): its value on the test set in which image i
    appears counts[b, i] times. A single row of ones gives the metric of the data itself."""
    w = np.atleast_2d(np.asarray(counts, float))
    pos = table["has_pneumothorax"]
    inter, pred, mask = table["intersection"], table["pred_pixels"], table["mask_pixels"]
    union = pred + mask - inter
    iou = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    pooled_num, pooled_den = 2 * (w @ inter), w @ (pred + mask)
    with np.errstate(invalid="ignore"):  # no positives: Dice on positives is NaN, as in pneumo.core.metrics
        dice_positive = w[:, pos] @ table["dice"][pos] / w[:, pos].sum(1)
    return {
        "siim_dice": w @ table["dice"] / w.sum(1),
        "dice_positive": dice_positive,
        "dice_pooled": np.divide(pooled_num, pooled_den, out=np.zeros_like(pooled_num), where=pooled_den > 0),
        "iou": w @ iou / w.sum(1),
        "auc": metrics.weighted_auc(table["max_prob"][pos], table["max_prob"][~pos], w[:, pos], w[:, ~pos]),
    }


def _number(x: float | None, digits: int = 6) -> float | None:
    """JSON-safe float: NaN (a metric undefined on this split) becomes null."""
    return round(float(x), digits) if x is not None and np.isfinite(x) else None


def _interval(e: bootstrap.Estimate, key: str = "value", bound: float = 1.0) -> dict:
    """Point and interval, the interval clipped to where the quantity can lie: every metric is
    in [0, 1], a difference of two in [-1, 1] (with few runs a t-interval can reach beyond)."""
    low = -bound if key == "diff" else 0.0
    return {key: _number(e.value), "low": _number(max(e.low, low)), "high": _number(min(e.high, bound))}


def training_row(summary: dict | None) -> dict:
    """One U-Net run's training facts from its dvclive summary (train_unet's metrics.json):
    the selected epoch and its validation loss, the plateau rule's verdict, the precision.
    Keys the summary lacks are None (shown as not recorded)."""
    summary = summary or {}
    selected, plateau = summary.get("selected") or {}, summary.get("plateau") or {}
    return {
        "selected_epoch": selected.get("epoch"),
        "val_loss": _number(selected.get("val_loss")),
        "epochs": plateau.get("epochs"),
        "best_epoch": plateau.get("best_epoch"),
        "plateau_met": plateau.get("met"),
        "change": _number(plateau.get("change")),
        "precision": summary.get("precision"),
    }


LATENT_ORDER = ("autoencoder", "ssl", "raw_pixels")  # the clusterings cluster_latents validates, baseline last


def _clustering(per_run: list[dict], run_ids: list[int]) -> dict:
    """The pseudo-label validation over the runs: per run and latent the AMI (and NMI) with
    the permutation p and the run's own image-level verdict against raw pixels; and the
    seed-aware difference of each latent's AMI from raw pixels over the runs, whose winner is
    named only when its interval excludes 0 with two runs or more."""
    latents = [n for n in LATENT_ORDER if n in per_run[0]]
    rows = []
    for r, c in zip(run_ids, per_run, strict=True):
        row = {"run": r}
        for name in latents:
            row |= {f"{s}_{name}": _number(c[name].get(s)) for s in ("ami", "ami_p", "nmi", "nmi_chance")}
            row |= {f"ami_low_{name}": _number(c[name]["ami_low"]), f"ami_high_{name}": _number(c[name]["ami_high"])}
        row |= {f"winner_{name}": d["ami"]["winner"] for name, d in c["minus_raw_pixels"].items()}
        rows.append(row)
    differences = {}
    for name in latents[:-1]:
        diff = bootstrap.from_runs(
            [c["minus_raw_pixels"][name]["ami"]["value"] for c in per_run],
            [c["minus_raw_pixels"][name]["ami"]["se"] for c in per_run],
        )
        winner = (name if diff.value > 0 else "raw_pixels") if diff.resolved else "unresolved"
        if diff.method == bootstrap.IMAGES_ONLY:
            winner = "not called: one run"
        interval = _interval(diff, "diff", bound=2.0)  # AMI lies in [-1, 1]
        differences[name] = {**interval, "method": diff.method, "winner": winner}
    return {
        "runs": len(per_run),
        "pseudo_labels": per_run[0].get("pseudo_labels", "autoencoder"),  # whose clusters the pseudo-labels are
        "latents": latents,
        "ami": {name: _number(np.mean([c[name]["ami"] for c in per_run])) for name in latents},
        "ami_minus_raw_pixels": differences,
        "per_run": rows,
    }


def ablation(
    *,
    runs: dict[str, list[Table]],
    baselines: dict[str, Table],
    primary: str,
    resamples: int,
    seed: int,
    run_ids: list[int] | None = None,
    training: dict[str, list[dict | None]] | None = None,
    clustering: list[dict] | None = None,
) -> dict:
    """The report as a JSON-ready dict: every variant (run mean) and baseline with seed-aware
    intervals; each variant's difference from `none` on every metric, the Holm decision on
    the primary endpoint; the difference from the best content-free baseline; the smallest
    detectable difference; the per-run table with the training facts; the pseudo-labels.
    Tables must share their images; every variant must have one table per run, in run order."""
    if primary not in METRICS:
        raise ValueError(f"report.primary={primary!r} is not a metric; valid: {', '.join(METRICS)}")
    counts_per_variant = {v: len(tables) for v, tables in runs.items()}
    if not runs or len(set(counts_per_variant.values())) != 1 or 0 in counts_per_variant.values():
        raise ValueError(f"every variant needs the same runs (they pair by index): {counts_per_variant}")
    n_runs = next(iter(counts_per_variant.values()))
    run_ids = list(range(n_runs)) if run_ids is None else list(run_ids)
    if len(run_ids) != n_runs:
        raise ValueError(f"{len(run_ids)} run ids for {n_runs} runs per variant")
    first = runs[next(iter(runs))][0]
    positive = first["has_pneumothorax"]
    counts = bootstrap.stratified_counts(positive, resamples, seed)
    draws = bootstrap.run_counts(n_runs, resamples, seed) if n_runs >= bootstrap.MIN_BOOTSTRAP_RUNS else None
    ones = np.ones((1, len(positive)))

    def scored(tables: list[Table]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """metric -> (per-run values (R,), per-run values on every image resample (R, B))."""
        point = [metric_samples(t, ones) for t in tables]
        boot = [metric_samples(t, counts) for t in tables]
        return {m: (np.array([p[m][0] for p in point]), np.stack([b[m] for b in boot])) for m in METRICS}

    variants = {v: scored(tables) for v, tables in runs.items()}
    bases = {b: scored([t]) for b, t in baselines.items()}
    estimate = {v: {m: bootstrap.seed_aware(*x[m], draws) for m in METRICS} for v, x in variants.items()}
    method = next(iter(estimate.values()))[primary].method
    synthetic = all(str(i).startswith(dicom.SYNTHETIC_UID_ROOT) for i in first["image_id"])
    summary: dict = {
        "holds_on": "these phantoms (synthetic data)" if synthetic else "this test split",
        "test_images": len(positive),
        "test_positive": int(positive.sum()),
        "resamples": resamples,
        "runs": n_runs,
        "run_ids": run_ids,
        "primary": primary,
        "method": method,
        "method_text": bootstrap.METHODS[method],
        "variants": {
            v: {"runs": n_runs, "method": method, **{m: _interval(e[m]) for m in METRICS}} for v, e in estimate.items()
        },
        "baselines": {b: {m: _interval(bootstrap.seed_aware(*x[m])) for m in METRICS} for b, x in bases.items()},
        "vs_none": {},
        "vs_baseline": {},
    }

    # each variant against `none`, paired by run and image; Holm over the variants on the primary
    others = [v for v in variants if v != REFERENCE] if REFERENCE in variants else []
    differences = {
        v: {
            m: bootstrap.seed_aware(
                variants[v][m][0] - variants[REFERENCE][m][0], variants[v][m][1] - variants[REFERENCE][m][1], draws
            )
            for m in METRICS
        }
        for v in others
    }
    p_values = [differences[v][primary].p for v in others]
    callable_ = bool(others) and n_runs > 1
    adjusted, rejected = bootstrap.holm(p_values) if callable_ else ([None] * len(others), [False] * len(others))
    for v, p, adj, rejects in zip(others, p_values, adjusted, rejected, strict=True):
        d = differences[v][primary]
        per_run = variants[v][primary][0] - variants[REFERENCE][primary][0]
        called = bool(rejects) and d.resolved  # Holm rejects and the interval excludes 0
        verdict = "not called: one run" if not callable_ else "not resolved"
        if called:
            verdict = f"{'better' if d.value > 0 else 'worse'} than {REFERENCE}"
        summary["vs_none"][v] = {
            "runs": n_runs,
            "method": d.method,
            "primary": primary,
            "holm": {
                "p": _number(p),
                "adjusted_p": _number(adj),
                "called": called,
                "verdict": verdict,
                "family": len(others),
            },
            "same_sign_runs": f"{int((np.sign(per_run) == np.sign(d.value)).sum())}/{n_runs}",
            **{m: {**_interval(differences[v][m], "diff"), "se": _number(differences[v][m].se)} for m in METRICS},
        }

    # against the best content-free baseline per metric (the higher point estimate, first on ties)
    if bases:
        best = {m: max(bases, key=lambda b, m=m: np.nan_to_num(bases[b][m][0][0], nan=-np.inf)) for m in METRICS}
        for v, x in variants.items():
            row = {}
            for m in METRICS:
                base_points, base_samples = bases[best[m]][m]
                e = bootstrap.seed_aware(x[m][0] - base_points[0], x[m][1] - base_samples[0], draws)
                row[m] = {"baseline": best[m], **_interval(e, "diff")}
                if m == primary:
                    row[m]["resolved"] = e.resolved
            summary["vs_baseline"][v] = row

    detectable = {m: [differences[v][m].smallest_detectable for v in others] for m in METRICS}
    summary["smallest_detectable_difference"] = {
        "versus": REFERENCE,
        "runs": n_runs,
        "includes_run_variance": n_runs > 1,
        **{m: _number(np.median(detectable[m])) if detectable[m] else None for m in METRICS},
    }

    training = training or {}
    summary["per_run"] = {
        v: [
            {
                "run": r,
                **{m: _number(variants[v][m][0][i]) for m in (primary, "siim_dice", "auc")},
                **training_row((training.get(v) or [None] * n_runs)[i]),
            }
            for i, r in enumerate(run_ids)
        ]
        for v in variants
    }
    for key, state in (("still_improving", False), ("plateau_not_recorded", None)):
        summary[key] = [
            f"{v}-{row['run']}" for v, rows in summary["per_run"].items() for row in rows if row["plateau_met"] is state
        ]
    if clustering:
        summary["clustering"] = _clustering(clustering, run_ids)
    return summary


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _cell(d: dict, key: str = "value", signed: bool = False) -> str:
    return f"{_fmt(d[key], signed)} [{_fmt(d['low'], signed)}, {_fmt(d['high'], signed)}]"


def _p(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x >= 0.001 else "<0.001"


def _plateau(row: dict) -> str:
    if row["plateau_met"] is None:
        return "⚠ not recorded"
    return "met" if row["plateau_met"] else "⚠ still improving"


def markdown(summary: dict) -> str:
    """The ablation report as Markdown: the scope, the main table, the verdicts on the primary
    endpoint (Holm), the secondary differences (intervals only), the baselines, the per-run
    table with the training facts, the pseudo-labels, the method and the metric definitions."""
    variants, baselines, primary = summary["variants"], summary["baselines"], summary["primary"]
    n_runs, method = summary["runs"], summary["method"]
    runs_text = ", ".join(str(r) for r in summary["run_ids"])
    header = [f"{m} (primary)" if m == primary else m for m in METRICS]
    lines = [
        "# Ablation: encoder initialisation (test split)",
        "",
        f"**Every verdict below holds on {summary['holds_on']}**, not beyond it. "
        f"{summary['test_images']} test images ({summary['test_positive']} with pneumothorax); "
        f"{n_runs} run(s) per variant (runs {runs_text}: run r is the whole training chain seeded r); "
        f"{summary['resamples']} bootstrap resamples. Primary endpoint: `{primary}`.",
        "",
    ]
    if n_runs == 1:
        lines += [
            "**One run per variant: this report calls no difference between initialisations.** The intervals "
            "below cover only which test images were drawn; how much another training run of the same chain "
            "would differ is unmeasured, so no interval here can separate an initialisation's effect from the "
            "luck of one run. Verdicts need at least 2 runs (`runs` in params.yaml).",
            "",
        ]
    lines += [
        f"Intervals: {bootstrap.METHODS[method]}. Variants' values are means over runs.",
        "",
        "| model | runs | " + " | ".join(header) + " | study Dice |",
        "|---" * (len(METRICS) + 3) + "|",
    ]
    for name, row in variants.items():
        study = f"{STUDY[name]:.1f}" if name in STUDY else ""
        lines.append(f"| {name} | {row['runs']} | " + " | ".join(_cell(row[m]) for m in METRICS) + f" | {study} |")
    for name, row in baselines.items():
        lines.append(f"| {name} (baseline) | – | " + " | ".join(_cell(row[m]) for m in METRICS) + " |  |")

    vs_none = summary["vs_none"]
    if vs_none:
        family = len(vs_none)
        lines += [
            "",
            f"## Verdicts: difference from `none` on `{primary}` (primary)",
            "",
            f"Each variant minus `none`, paired by run and image. Called only when Holm's correction over the "
            f"{family} variant(s) keeps the family-wise error at 5% and the 95% interval excludes 0.",
            "",
            "| variant | runs | difference [95% interval] | same sign in | p | Holm-adjusted p | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in vs_none.items():
            holm = row["holm"]
            verdict = f"**{holm['verdict']}**" if holm["called"] else holm["verdict"]
            lines.append(
                f"| {name} | {row['runs']} | {_cell(row[primary], 'diff', True)} | {row['same_sign_runs']} runs | "
                f"{_p(holm['p'])} | {_p(holm['adjusted_p'])} | {verdict} |"
            )
        secondary = [m for m in METRICS if m != primary]
        lines += [
            "",
            "## Secondary endpoints: difference from `none` (intervals shown, nothing called)",
            "",
            "| variant | " + " | ".join(secondary) + " |",
            "|---" * (len(secondary) + 1) + "|",
        ]
        for name, row in vs_none.items():
            lines.append(f"| {name} | " + " | ".join(_cell(row[m], "diff", True) for m in secondary) + " |")

    if summary["vs_baseline"]:
        first = next(iter(summary["vs_baseline"].values()))
        lines += [
            "",
            "## Against the best content-free baseline",
            "",
            f"Does each variant learn the finding? ✓ on `{primary}`: the seed-aware interval excludes 0 "
            "(with two runs or more). Other columns: intervals only.",
            "",
            "| variant | " + " | ".join(f"{m} (vs {first[m]['baseline']})" for m in METRICS) + " |",
            "|---" * (len(METRICS) + 1) + "|",
        ]
        for name, row in summary["vs_baseline"].items():
            cells = [_cell(row[m], "diff", True) + (" ✓" if row[m].get("resolved") else "") for m in METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")

    sdd = summary["smallest_detectable_difference"]
    if vs_none:
        bound = (
            "" if sdd["includes_run_variance"] else " (test images only: a lower bound, one run has no run variance)"
        )
        lines += [
            "",
            f"Smallest detectable difference from `none`{bound}, 80% power at two-sided 5% before Holm, with "
            f"{n_runs} run(s) and this test split (median over the variants): "
            + ", ".join(f"{m} {_fmt(sdd[m])}" for m in METRICS)
            + ". Smaller true differences will mostly go unresolved.",
        ]

    lines += [
        "",
        "## Runs",
        "",
        "Each run's test scores and how its U-Net training ended: the selected epoch (lowest validation loss), "
        "the epochs run, and the plateau rule (met: the validation loss had stopped improving; `change` is the "
        "relative improvement of the best validation loss over the last epochs).",
        "",
        f"| variant | run | {primary} | siim_dice | auc | selected epoch | epochs run | plateau | change | precision |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in summary["per_run"].items():
        for row in rows:
            epoch = "n/a" if row["selected_epoch"] is None else row["selected_epoch"]
            epochs = "n/a" if row["epochs"] is None else row["epochs"]
            change = "n/a" if row["change"] is None else f"{row['change']:.1%}"
            lines.append(
                f"| {name} | {row['run']} | {_fmt(row[primary])} | {_fmt(row['siim_dice'])} | {_fmt(row['auc'])} | "
                f"{epoch} | {epochs} | {_plateau(row)} | {change} | {row['precision'] or 'n/a'} |"
            )
    flagged, unknown = summary["still_improving"], summary["plateau_not_recorded"]
    lines.append("")
    if flagged:
        lines.append(
            f"⚠ Runs that ended while their validation loss was still improving: {', '.join(flagged)}. Their "
            "scores are where training stopped, not where it would end."
        )
    if unknown:
        lines.append(f"⚠ Runs whose training summary does not record the plateau rule: {', '.join(unknown)}.")
    if not flagged and not unknown:
        lines.append("Every run met the plateau rule.")
    upstream = summary.get("upstream_training") or {}
    if upstream:
        open_runs = [
            f"{name} ({row['epochs']} epochs"
            + (f", still {row['change']:.1%} better)" if row["change"] is not None else ")")
            for name, row in upstream.items()
            if row["plateau_met"] is False
        ]
        lines += [
            "",
            f"The training that made the encoders ({len(upstream)} stage runs: autoencoders, ssl, encoder pretraining) "
            "follows the same plateau rule. "
            + (
                f"⚠ Ended at their epoch limit while still improving: {', '.join(open_runs)}."
                if open_runs
                else "Every one met it."
            ),
        ]

    clustering = summary.get("clustering")
    if clustering:
        latents = clustering["latents"]
        lines += [
            "",
            "## Pseudo-labels against chance",
            "",
            "Agreement of the clusters with the true CXR-14 labels (single-label images), for every latent clustered "
            f"(the pseudo-labels are the **{clustering['pseudo_labels']}** clusters): adjusted mutual information "
            "(AMI, 0 at chance) with its 95% interval and the permutation p-value (cluster ids shuffled against the "
            "labels); NMI beside the NMI that shuffled ids score.",
            "",
            "| run | "
            + " | ".join(f"AMI {n.replace('_', ' ')} | p" for n in latents)
            + " | "
            + " | ".join(f"NMI {n.replace('_', ' ')} (chance)" for n in latents)
            + " | "
            + " | ".join(f"{n.replace('_', ' ')} vs raw pixels" for n in latents[:-1])
            + " |",
            "|---|" + "---|---|" * len(latents) + "---|" * (2 * len(latents) - 1),
        ]
        for row in clustering["per_run"]:
            cells = []
            for name in latents:
                ami = {"value": row[f"ami_{name}"], "low": row[f"ami_low_{name}"], "high": row[f"ami_high_{name}"]}
                cells += [_cell(ami), _p(row[f"ami_p_{name}"])]
            cells += [f"{_fmt(row[f'nmi_{n}'])} ({_fmt(row[f'nmi_chance_{n}'])})" for n in latents]
            cells += [row[f"winner_{n}"] for n in latents[:-1]]
            lines.append(f"| {row['run']} | " + " | ".join(cells) + " |")
        lines.append("")
        for name, d in clustering["ami_minus_raw_pixels"].items():
            lines.append(
                f"AMI difference, {name} minus raw pixels, over {clustering['runs']} run(s): "
                f"{_cell(d, 'diff', True)} ({CLUSTERING_METHODS[d['method']]}): **{d['winner']}**."
            )

    probe = summary.get("linear_probe")
    if probe:
        lines += [
            "",
            "## Linear probe: what each frozen encoder knows",
            "",
            f"Frozen encoder features ({probe['features']}), a {probe['probe']} fitted on the CXR-14 training "
            f"split and scored on the {probe['split']['test_images']} films of the held-out split; mean over "
            f"{len(probe['runs'])} run(s) with seed-aware 95% intervals ({probe['method']}). Describes the "
            "encoders; nothing is called here.",
            "",
            "| encoder | macro AUC | minus none | Pneumothorax AUC | minus none |",
            "|---|---|---|---|---|",
        ]
        if probe.get("skipped"):
            lines[-2:] = [f"Not probed: {probe['skipped']}."]
        for name, e in probe["encoders"].items():
            minus = e.get("minus_none") or {}
            cells = [name]
            for score in ("macro_auc", "pneumothorax_auc"):  # Pneumothorax: absent from a tiny held-out split
                cells += [
                    _cell(e[score]) if score in e else "–",
                    _cell(minus[score], signed=True) if score in minus else "–",
                ]
            lines.append("| " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Method",
        "",
        f"Test images are resampled stratified (positives among positives, negatives among negatives), the same "
        f"resamples for every variant, run and baseline. Runs pair by index across variants: run r of every "
        f"variant shares the U-Net seed r (decoder initialisation, sample order, augmentation), so that part of "
        f"the training noise cancels in a difference, and the run variance is estimated from the per-run "
        f"differences themselves. An interval's half-width combines the run variance (t with R-1 degrees of "
        f"freedom) and the image-bootstrap variance of the run mean (Banerjee's conservative rule: at least 95% "
        f"coverage whatever their ratio); from {bootstrap.MIN_BOOTSTRAP_RUNS} runs on a two-level bootstrap "
        f"(runs, then images) gives its shape, below that the image bootstrap does. With one run there is no "
        f"run variance: intervals show test-set sampling only and nothing is called. p-values are the smallest "
        f"level at which the same rule excludes 0; Holm's step-down correction runs over the variants on the "
        f"primary endpoint only.",
        "",
        "Metrics: `siim_dice` is SIIM-ACR's metric, the mean over images of Dice where an empty prediction on an "
        "empty image scores 1 (so predicting nothing scores the share of empty images); `dice_positive` is the mean "
        "Dice over images with a pneumothorax (no content-free shortcut: the segmentation quality); `dice_pooled` "
        "is Dice over all pixels of all images pooled; `iou` is the mean per-image IoU (1 when both are empty); "
        "`auc` is the image-level ROC AUC of the maximum pixel probability (ties count 1/2). Content-free "
        "baselines see no image: `all_empty` predicts nothing anywhere; `location_prior` predicts the mean "
        "training mask, its thresholds tuned on validation. A baseline has no training noise: its interval is "
        "over the test images only.",
    ]
    return "\n".join(lines) + "\n"


def headline(summary: dict) -> dict:
    """The study's numbers as the one small metrics file `dvc exp show` and `dvc metrics diff`
    list: per variant and content-free baseline the primary endpoint (run mean), keyed by its
    name, and `ci`, the half-width of its seed-aware 95% interval (the exact bounds are in
    the ablation JSON), plus the clusterings' AMI (run mean) for every latent and the linear
    probe's macro AUC per encoder (run mean). Every difference, the Holm decisions and the secondary metrics are in
    the ablation report."""
    primary = summary["primary"]

    def pair(estimate: dict) -> dict:
        value, low, high = estimate["value"], estimate["low"], estimate["high"]
        ci = None if low is None or high is None else round((high - low) / 2, 4)
        return {primary: None if value is None else round(value, 4), "ci": ci}

    out = {name: pair(m[primary]) for group in ("variants", "baselines") for name, m in summary[group].items()}
    clustering = summary.get("clustering")
    if clustering:
        out["clustering"] = {f"ami_{name}": _number(value, 4) for name, value in clustering["ami"].items()}
    probe = summary.get("linear_probe")
    if probe:
        out["linear_probe"] = {
            f"macro_auc_{n}": _number(e["macro_auc"]["value"], 4) for n, e in probe["encoders"].items()
        }
    return out


SIZE_BINS = 4  # lesion-size bins of the Dice-by-size chart: quartiles of the positive test images' mask area
CURVES = ("val/loss", "val/dice_positive", "val/siim_dice", "train/loss")  # per-epoch curves over all runs


def _spread(values: list[float], name: str) -> dict:
    """A chart's value over runs: the mean under `name`, the lowest and the highest run."""
    return {name: _number(np.mean(values)), "low": _number(min(values)), "high": _number(max(values))}


def forest(summary: dict) -> list[dict]:
    """The forest plot's rows: each variant's difference from `none` per metric, with its
    seed-aware interval, whether the metric is the primary one, and the Holm verdict."""
    primary = summary["primary"]
    return [
        {
            "variant": variant,
            "metric": metric,
            "diff": row[metric]["diff"],
            "low": row[metric]["low"],
            "high": row[metric]["high"],
            "primary": metric == primary,
            "called": bool(row["holm"]["called"]) if metric == primary else False,
        }
        for variant, row in summary["vs_none"].items()
        for metric in METRICS
        if row[metric]["diff"] is not None
    ]


def dice_by_size(runs: dict[str, list[Table]], bins: int = SIZE_BINS) -> list[dict]:
    """Dice on the positive test images by lesion size: the positives cut into `bins` equal
    groups by true mask area (the same images for every variant), per variant the mean over
    runs of each run's mean Dice in the group, and the lowest and highest run."""
    first = next(iter(runs.values()))[0]
    positive = first["has_pneumothorax"]
    area = first["mask_pixels"][positive]
    if not len(area):
        return []
    edges = np.quantile(area, np.linspace(0, 1, bins + 1))
    group = np.clip(np.searchsorted(edges, area, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = group == b
        if not members.any():
            continue
        low_px, high_px = int(area[members].min()), int(area[members].max())
        label = f"{b + 1}: {low_px}-{high_px} px"
        for variant, tables in runs.items():
            per_run = [float(t["dice"][positive][members].mean()) for t in tables]
            rows.append(
                {"variant": variant, "size": label, **_spread(per_run, "dice_positive"), "images": int(members.sum())}
            )
    return rows


def curves(training_dirs: dict[str, list[Path]], quantity: str) -> list[dict]:
    """One per-epoch curve over all runs of each variant: at each epoch the mean of the runs
    that reached it, the lowest and highest, and how many runs (runs stop at their plateau)."""
    rows = []
    for variant, dirs in training_dirs.items():
        by_epoch: dict[int, list[float]] = {}
        for folder in dirs:
            tsv = Path(folder) / "plots" / "metrics" / f"{quantity}.tsv"
            if not tsv.exists():
                continue
            for line in tsv.read_text().splitlines()[1:]:
                step, value = line.split("\t")[:2]
                by_epoch.setdefault(int(step), []).append(float(value))
        for epoch, values in sorted(by_epoch.items()):
            rows.append({"variant": variant, "epoch": epoch, **_spread(values, "mean"), "runs": len(values)})
    return rows


def write_charts(folder: Path, summary: dict, runs: dict[str, list[Table]], training_dirs: dict[str, list[Path]]):
    """The review charts' data (drawn by the templates in .dvc/plots/, see dvc.yaml `plots`):
    forest.json, dice_by_size.json and one curve file per quantity (`val_loss.json`, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    charts = {"forest": forest(summary), "dice_by_size": dice_by_size(runs)}
    charts |= {q.replace("/", "_"): curves(training_dirs, q) for q in CURVES}
    for name, rows in charts.items():
        (folder / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")


def report(
    *,
    runs: dict[str, list[Path]],
    baselines: dict[str, Path],
    training: dict[str, list[Path]],
    clustering: list[Path],
    run_ids: list[int],
    primary: str,
    resamples: int,
    seed: int,
    json_path: Path,
    md_path: Path,
    headline_path: Path,
    upstream: dict[str, Path] | None = None,
    charts_dir: Path | None = None,
    linear_probe: Path | None = None,
) -> dict:
    """Read the per-image CSVs (runs: variant -> one CSV per run, in the order of `run_ids`;
    baselines: name -> CSV), the U-Nets' training summaries (same layout as `runs`), the
    pseudo-label validation of every run (cluster_latents' JSON, one per run) and the summaries
    of the training that made the encoders (`upstream`: a name such as `train_autoencoder@0` ->
    its dvclive metrics.json), check that the CSVs share their images, and write the ablation
    JSON and Markdown, the headline and (to `charts_dir`) the review charts' data: the forest
    plot, Dice by lesion size and the training curves over all runs (read beside each U-Net's
    training summary). `linear_probe`: the probe table of every encoder, shown beside."""
    paths = [p for ps in runs.values() for p in ps] + list(baselines.values())
    if not paths or any(not ps for ps in runs.values()):
        raise ValueError("report needs at least one CSV per variant")
    tables = {Path(p): per_image.read(Path(p)) for p in paths}
    check_same_images(tables)
    summary = ablation(
        runs={v: [tables[Path(p)] for p in ps] for v, ps in runs.items()},
        baselines={b: tables[Path(p)] for b, p in baselines.items()},
        primary=primary,
        resamples=resamples,
        seed=seed,
        run_ids=run_ids,
        training={v: [json.loads(Path(p).read_text()) for p in ps] for v, ps in training.items()},
        clustering=[json.loads(Path(p).read_text()) for p in clustering],
    )
    summary["upstream_training"] = {
        name: training_row(json.loads(Path(p).read_text())) for name, p in (upstream or {}).items()
    }
    if linear_probe is not None:
        summary["linear_probe"] = json.loads(Path(linear_probe).read_text())
    for path in (json_path, md_path, headline_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    md_path.write_text(markdown(summary))
    headline_path.write_text(json.dumps(headline(summary), indent=1) + "\n")
    if charts_dir is not None:
        run_tables = {v: [tables[Path(p)] for p in ps] for v, ps in runs.items()}
        write_charts(charts_dir, summary, run_tables, {v: [Path(p).parent for p in ps] for v, ps in training.items()})
    called = [v for v, row in summary["vs_none"].items() if row["holm"]["called"]]
    log.info(
        "report: %d test images (%d positive), %d run(s), %s; called on %s: %s",
        summary["test_images"],
        summary["test_positive"],
        summary["runs"],
        summary["method"],
        primary,
        ", ".join(called) or "nothing",
    )
    return summary
