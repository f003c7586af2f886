"""The study's statistics: the ablation of encoder initialisations, from the per-image tables
of every U-Net run (evaluate) and of the content-free baselines, as one JSON-ready summary
(`ablation`) that the report stage writes and renders (core/ablation_report.py).

Every metric is a weighted statistic of image counts, so one matrix of stratified image
resamples (`bootstrap.stratified_counts`: positives among positives, negatives among
negatives) scores every variant, run and baseline at once; the same resamples serve all
of them, so differences are paired on images. Runs pair by index (run r of every variant
shares the U-Net seed r). Intervals are `bootstrap.seed_aware`: they cover training noise
(the spread of the runs) and test-set sampling; with one run they cover only the latter,
and nothing is called.

One endpoint is primary (`dice_positive` by default: segmentation, scored without the
image-level gate that SIIM's metric is tuned with). One contrast on it is confirmatory
(`confirmatory` minus `none`, all the training films), tested alone; every other difference
from `none` on it is tested with Holm's correction within its share of the training films
(a family, `_family`), and the transfer gaps (a smaller share minus the largest) with Holm
over the variants. Every other metric is secondary: its intervals are shown, nothing is
called on it. Each interval excludes 0 exactly when its verdict calls the difference. The
confirmatory contrast carries its power (`_power`: the smallest detectable difference, the
spread of the runs, the runs an effect of interest would need); the pseudo-label validation
is summarised over the runs (`_clustering`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pneumo.core import bootstrap, initialisations, metrics
from pneumo.formats import dicom, per_image

METRICS = ("siim_dice", "dice_positive", "dice_pooled", "iou", "auc")
REFERENCE = initialisations.REFERENCE  # every variant is called against the random initialisation

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


def ungated_dice(table: Table) -> np.ndarray:
    """Per-image Dice of the gate-free prediction (the pixel threshold alone); 1 when both
    the truth and the prediction are empty."""
    inter, total = table["intersection_ungated"], table["pred_pixels_ungated"] + table["mask_pixels"]
    return np.divide(2 * inter, total, out=np.ones_like(inter), where=total > 0)


def metric_samples(table: Table, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric once per row of `counts` (B, n): its value on the test set in which image i
    appears counts[b, i] times. A single row of ones gives the metric of the data itself.
    `dice_positive` scores the gate-free prediction, the other overlap metrics the
    post-processed one (evaluate)."""
    w = np.atleast_2d(np.asarray(counts, float))
    pos = table["has_pneumothorax"]
    inter, pred, mask = table["intersection"], table["pred_pixels"], table["mask_pixels"]
    union = pred + mask - inter
    iou = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    pooled_num, pooled_den = 2 * (w @ inter), w @ (pred + mask)
    with np.errstate(invalid="ignore"):  # no positives: Dice on positives is NaN, as in pneumo.core.metrics
        dice_positive = w[:, pos] @ ungated_dice(table)[pos] / w[:, pos].sum(1)
    return {
        "siim_dice": w @ table["dice"] / w.sum(1),
        "dice_positive": dice_positive,
        "dice_pooled": np.divide(pooled_num, pooled_den, out=np.zeros_like(pooled_num), where=pooled_den > 0),
        "iou": w @ iou / w.sum(1),
        "auc": metrics.weighted_auc(table["max_prob"][pos], table["max_prob"][~pos], w[:, pos], w[:, ~pos]),
    }


def number(x: float | None, digits: int = 6) -> float | None:
    """JSON-safe float: NaN (a metric undefined on this split) becomes null."""
    return round(float(x), digits) if x is not None and np.isfinite(x) else None


def _interval(e: bootstrap.Estimate, key: str = "value", bound: float = 1.0) -> dict:
    """Point and interval, the interval clipped to where the quantity can lie: every metric is
    in [0, 1], a difference of two in [-1, 1] (with few runs a t-interval can reach beyond)."""
    low = -bound if key == "diff" else 0.0
    return {key: number(e.value), "low": number(max(e.low, low)), "high": number(min(e.high, bound))}


def training_row(summary: dict | None) -> dict:
    """One U-Net run's training facts from its dvclive summary (train_unet's metrics.json):
    the selected epoch and its validation loss, the plateau rule's verdict, the precision.
    Keys the summary lacks are None (shown as not recorded)."""
    summary = summary or {}
    selected, plateau = summary.get("selected") or {}, summary.get("plateau") or {}
    return {
        "selected_epoch": selected.get("epoch"),
        "val_loss": number(selected.get("val_loss")),
        "epochs": plateau.get("epochs"),
        "best_epoch": plateau.get("best_epoch"),
        "plateau_met": plateau.get("met"),
        "change": number(plateau.get("change")),
        "precision": summary.get("precision"),
    }


LATENT_ORDER = ("autoencoder", "ssl", "raw_pixels")  # the clusterings cluster_latents validates, baseline last


def _clustering(per_run: list[dict], run_ids: list[int]) -> dict:
    """The pseudo-label validation over the runs: per run and latent the AMI (and NMI) with
    the permutation p and the run's own image-level verdict against raw pixels; and the
    seed-aware difference of each latent's AMI from raw pixels over the runs, whose winner is
    named only when its Holm-adjusted p (over the latents) is below 0.05 with two runs or more,
    exactly when its interval (drawn at the adjusted level) excludes 0."""
    latents = [n for n in LATENT_ORDER if n in per_run[0]]
    rows = []
    for r, c in zip(run_ids, per_run, strict=True):
        row = {"run": r}
        for name in latents:
            row |= {f"{s}_{name}": number(c[name].get(s)) for s in ("ami", "ami_p", "nmi", "nmi_chance")}
            row |= {f"ami_low_{name}": number(c[name]["ami_low"]), f"ami_high_{name}": number(c[name]["ami_high"])}
        rows.append(row)
    estimates = {
        name: bootstrap.from_runs(
            [c["minus_raw_pixels"][name]["ami"]["value"] for c in per_run],
            [c["minus_raw_pixels"][name]["ami"]["se"] for c in per_run],
        )
        for name in latents[:-1]
    }
    adjusted = holm_adjusted(estimates, len(per_run))
    differences = {}
    for name, diff in estimates.items():
        low, high = diff.adjusted(adjusted[name])
        called = diff.method != bootstrap.IMAGES_ONLY and adjusted[name] < bootstrap.ALPHA
        winner = (name if diff.value > 0 else "raw_pixels") if called else "unresolved"
        if diff.method == bootstrap.IMAGES_ONLY:
            winner = "not called: one run"
        differences[name] = {
            "diff": number(diff.value),
            "low": number(max(low, -2.0)),  # AMI lies in [-1, 1]
            "high": number(min(high, 2.0)),
            "p": number(diff.p),
            "adjusted_p": number(adjusted[name]),
            "called": bool(called),
            "method": diff.method,
            "winner": winner,
        }
    return {
        "runs": len(per_run),
        "pseudo_labels": per_run[0].get("pseudo_labels", "autoencoder"),  # whose clusters the pseudo-labels are
        "latents": latents,
        "ami": {name: number(np.mean([c[name]["ami"] for c in per_run])) for name in latents},
        "ami_minus_raw_pixels": differences,
        "per_run": rows,
    }


def scored_runs(tables: list[Table], counts: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metric -> (per-run values (R,), per-run values on every image resample (R, B))."""
    ones = np.ones((1, counts.shape[1]))
    point = [metric_samples(t, ones) for t in tables]
    boot = [metric_samples(t, counts) for t in tables]
    return {m: (np.array([p[m][0] for p in point]), np.stack([b[m] for b in boot])) for m in METRICS}


def minus(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-run values and resamples of a - b, paired by run and image resample."""
    return a[0] - b[0], a[1] - b[1]


def called_difference(e: bootstrap.Estimate, adjusted_p: float | None, test: str, runs: int) -> dict:
    """A difference under the report's one rule: its interval at the level its (adjusted) p
    implies, which excludes 0 exactly when the verdict calls it (adjusted p < 0.05)."""
    low, high = e.adjusted(adjusted_p)
    called = runs > 1 and adjusted_p is not None and adjusted_p < bootstrap.ALPHA
    verdict = "not called: one run" if runs < 2 else ("resolved" if called else "not resolved")
    return {
        "diff": number(e.value),
        "low": number(max(low, -1.0)),
        "high": number(min(high, 1.0)),
        "p": number(e.p),
        "adjusted_p": number(adjusted_p),
        "test": test,
        "called": bool(called),
        "verdict": verdict,
        "se": number(e.se),
    }


def holm_adjusted(estimates: dict[str, bootstrap.Estimate], runs: int) -> dict[str, float | None]:
    """Holm-adjusted p of each estimate (None with one run: nothing is tested)."""
    if runs < 2 or not estimates:
        return dict.fromkeys(estimates)
    adjusted, _ = bootstrap.holm([e.p for e in estimates.values()])
    return {name: float(a) for name, a in zip(estimates, adjusted, strict=True)}


def _power(e: bootstrap.Estimate, per_run: np.ndarray, effect: float) -> dict:
    """How much this design can resolve: the smallest detectable difference (80% power,
    two-sided 5%, noncentral t with the runs' df), its upper bound from the run variance's
    confidence interval, the SD of the per-run differences, and the runs that would resolve
    `effect` at the measured run and image variances (None beyond 100)."""
    sd = float(np.std(per_run, ddof=1)) if len(per_run) > 1 else None
    needed = None
    if sd is not None:
        needed = next(
            (r for r in range(2, 101) if bootstrap.detectable(sd**2 / r, r, e.image_variance) <= effect), None
        )
    return {
        "smallest_detectable": number(e.smallest_detectable),
        "detectable_upper": number(e.detectable_upper),
        "sd_runs": number(sd),
        "image_se": number(np.sqrt(e.image_variance)),
        "effect_of_interest": effect,
        "runs_needed": needed,
    }


def _vs_baseline(
    variants: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    bases: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    *,
    primary: str,
    n_runs: int,
) -> dict:
    """Each variant's difference from the best content-free baseline on every metric (the
    best by its value on the data); on the primary endpoint each variant's own check that it
    learns the finding, at 5% unadjusted."""
    best = {m: max(bases, key=lambda b, m=m: np.nan_to_num(bases[b][m][0][0], nan=-np.inf)) for m in METRICS}
    vs_baseline = {}
    for v, x in variants.items():
        row = {}
        for m in METRICS:
            base_points, base_samples = bases[best[m]][m]
            e = bootstrap.seed_aware(x[m][0] - base_points[0], x[m][1] - base_samples[0])
            row[m] = {"baseline": best[m], **_interval(e, "diff")}
            if m == primary:
                row[m] = {"baseline": best[m], **called_difference(e, e.p, "unadjusted", n_runs)}
        vs_baseline[v] = row
    return vs_baseline


def _gate_r(pairs: list[tuple[float, int]]) -> float | None:
    """Correlation of per-run primary values with the positives SIIM's gate empties in the
    same run (None unless both vary over more than two runs)."""
    values, emptied = (np.array(c, float) for c in zip(*pairs, strict=True))
    varies = len(pairs) > 2 and values.std() > 0 and emptied.std() > 0
    return np.corrcoef(values, emptied)[0, 1] if varies else None


def _family(
    variants: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    bases: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    *,
    primary: str,
    confirmatory: str | None,
    n_runs: int,
    gate_emptied: dict[str, list[int]],
    missed: dict[str, list[int]],
) -> dict:
    """One share's table: every variant (run mean) with seed-aware intervals; each variant's
    difference from `none` on every metric, the primary ones tested (the confirmatory
    contrast alone at 5%, the others with Holm), the secondary ones shown; the difference
    from the best content-free baseline; the positives the SIIM gate empties."""
    estimate = {v: {m: bootstrap.seed_aware(*x[m]) for m in METRICS} for v, x in variants.items()}
    others = [v for v in variants if v != REFERENCE] if REFERENCE in variants else []
    differences = {v: {m: bootstrap.seed_aware(*minus(variants[v][m], variants[REFERENCE][m])) for m in METRICS}
                   for v in others}  # fmt: skip
    holm_family = {v: differences[v][primary] for v in others if v != confirmatory}
    adjusted = holm_adjusted(holm_family, n_runs)
    if confirmatory in others:
        adjusted[confirmatory] = differences[confirmatory][primary].p  # tested alone, before the others
    vs_none = {}
    for v in others:
        test = "confirmatory" if v == confirmatory else f"Holm over {len(holm_family)}"
        per_run = variants[v][primary][0] - variants[REFERENCE][primary][0]
        d = differences[v][primary]
        vs_none[v] = {
            primary: called_difference(d, adjusted[v], test, n_runs),
            "same_sign_runs": f"{int((np.sign(per_run) == np.sign(d.value)).sum())}/{n_runs}",
            "per_run": [number(x) for x in per_run],
            **{m: {**_interval(differences[v][m], "diff"), "se": number(differences[v][m].se)}
               for m in METRICS if m != primary},
        }  # fmt: skip
    points = [(variants[v][primary][0][i], gate_emptied[v][i]) for v in variants for i in range(n_runs)]
    detectable = [differences[v][primary].smallest_detectable for v in others]
    return {
        "runs": n_runs,
        "variants": {v: {"runs": n_runs, **{m: _interval(e[m]) for m in METRICS}} for v, e in estimate.items()},
        "vs_none": vs_none,
        "vs_baseline": _vs_baseline(variants, bases, primary=primary, n_runs=n_runs) if bases else {},
        "gate": {
            "emptied_positives": {v: number(np.mean(gate_emptied[v]), 2) for v in variants},
            "per_run": {v: [int(x) for x in gate_emptied[v]] for v in variants},
            "r_primary": number(_gate_r(points), 3),
            "missed_positives": {v: number(np.mean(missed[v]), 2) for v in variants},
        },
        "smallest_detectable_difference": {
            "versus": REFERENCE,
            "runs": n_runs,
            "includes_run_variance": n_runs > 1,
            primary: number(np.median(detectable)) if detectable else None,
        },
    }


def ablation(
    *,
    runs: dict[int, dict[str, list[Table]]],
    baselines: dict[str, Table],
    primary: str,
    confirmatory: str,
    effect_of_interest: float,
    resamples: int,
    seed: int,
    run_ids: list[int] | None = None,
    training: dict[int, dict[str, list[dict | None]]] | None = None,
    clustering: list[dict] | None = None,
) -> dict:
    """The study as a JSON-ready dict. `runs`: share (percent of the training films) ->
    variant -> one table per run, in run order. Per share a family (`_family`); the
    confirmatory contrast (`confirmatory` minus `none` on the primary endpoint, largest
    share); each variant's transfer gap at every smaller share minus the gap at the largest
    (Holm over the variants); the per-run table with the training facts (`training`: the
    U-Nets' training summaries, laid out as `runs`); the pseudo-labels (`clustering`: one
    validation per run). Tables must share their images; every variant must have one table
    per run."""
    if primary not in METRICS:
        raise ValueError(f"report.primary={primary!r} is not a metric; valid: {', '.join(METRICS)}")
    counts_per_variant = {f"{s}/{v}": len(t) for s, family in runs.items() for v, t in family.items()}
    if not runs or len(set(counts_per_variant.values())) != 1 or 0 in counts_per_variant.values():
        raise ValueError(f"every variant needs the same runs (they pair by index): {counts_per_variant}")
    n_runs = next(iter(counts_per_variant.values()))
    run_ids = list(range(n_runs)) if run_ids is None else list(run_ids)
    if len(run_ids) != n_runs:
        raise ValueError(f"{len(run_ids)} run ids for {n_runs} runs per variant")
    shares = sorted(runs, reverse=True)
    full = shares[0]
    first = next(iter(runs[full].values()))[0]
    positive = first["has_pneumothorax"]
    counts = bootstrap.stratified_counts(positive, resamples, seed)
    scored = {s: {v: scored_runs(tables, counts) for v, tables in runs[s].items()} for s in shares}
    bases = {b: scored_runs([t], counts) for b, t in baselines.items()}
    emptied, missed = _gate_counts(runs, shares, positive)
    synthetic = all(str(i).startswith(dicom.SYNTHETIC_UID_ROOT) for i in first["image_id"])
    families = {
        s: _family(
            scored[s], bases, primary=primary, confirmatory=confirmatory if s == full else None, n_runs=n_runs,
            gate_emptied=emptied[s], missed=missed[s],
        )
        for s in shares
    }  # fmt: skip
    # over every run of every share: does the primary still follow the gate?
    pairs = [(scored[s][v][primary][0][i], emptied[s][v][i]) for s in shares for v in scored[s] for i in range(n_runs)]
    method = bootstrap.T_RUNS_IMAGES if n_runs > 1 else bootstrap.IMAGES_ONLY
    summary: dict = {
        "gate_r_all_runs": number(_gate_r(pairs), 3),
        "holds_on": "these phantoms (synthetic data)" if synthetic else "this test split",
        "test_images": len(positive),
        "test_positive": int(positive.sum()),
        "resamples": resamples,
        "runs": n_runs,
        "run_ids": run_ids,
        "primary": primary,
        "shares": shares,
        "full_share": full,
        "method": method,
        "method_text": bootstrap.METHODS[method],
        "baselines": {b: {m: _interval(bootstrap.seed_aware(*x[m])) for m in METRICS} for b, x in bases.items()},
        "families": {str(s): f for s, f in families.items()},
    }
    if REFERENCE in scored[full] and confirmatory in scored[full]:
        d = minus(scored[full][confirmatory][primary], scored[full][REFERENCE][primary])
        summary["confirmatory"] = {
            "contrast": f"{confirmatory} - {REFERENCE}",
            "share": full,
            **families[full]["vs_none"][confirmatory][primary],
            **_power(bootstrap.seed_aware(*d), d[0], effect_of_interest),
        }
    summary["gap_differences"] = _gaps(scored, primary=primary, n_runs=n_runs)
    summary["per_run"] = _per_run(scored, emptied, training or {}, primary=primary, run_ids=run_ids)
    for key, state in (("still_improving", False), ("plateau_not_recorded", None)):
        summary[key] = [
            f"{s}-{v}-{row['run']}"
            for s, family in summary["per_run"].items()
            for v, rows in family.items()
            for row in rows
            if row["plateau_met"] is state
        ]
    if clustering:
        summary["clustering"] = _clustering(clustering, run_ids)
    return summary


def _gate_counts(
    runs: dict[int, dict[str, list[Table]]], shares: list[int], positive: np.ndarray
) -> tuple[dict[int, dict[str, list[int]]], dict[int, dict[str, list[int]]]]:
    """Per share, variant and run: the positives SIIM's gate empties although pixels pass the
    threshold, and the positives with no pixel above the threshold (Dice 0 on the primary
    endpoint, no gate involved)."""
    emptied = {
        s: {v: [int(((t["pred_pixels"] == 0) & (t["pred_pixels_ungated"] > 0) & positive).sum()) for t in tables]
            for v, tables in runs[s].items()}
        for s in shares
    }  # fmt: skip
    missed = {
        s: {v: [int(((t["pred_pixels_ungated"] == 0) & positive).sum()) for t in tables]
            for v, tables in runs[s].items()}
        for s in shares
    }  # fmt: skip
    return emptied, missed


def _gaps(scored: dict[int, dict[str, dict]], *, primary: str, n_runs: int) -> dict[str, dict]:
    """Per smaller share, each variant's transfer gap on the primary endpoint, (variant - none
    at the share) - (variant - none with all the films), Holm over the variants; `scored`:
    share -> variant -> `scored_runs`, the largest share first."""
    full, *smaller = scored
    gaps: dict[str, dict] = {}
    for s in smaller:
        others = [v for v in scored[s] if v != REFERENCE and v in scored[full]]
        if REFERENCE not in scored[s]:
            continue
        estimates = {
            v: bootstrap.seed_aware(*minus(
                minus(scored[s][v][primary], scored[s][REFERENCE][primary]),
                minus(scored[full][v][primary], scored[full][REFERENCE][primary]),
            ))
            for v in others
        }  # fmt: skip
        adjusted = holm_adjusted(estimates, n_runs)
        gaps[str(s)] = {
            v: called_difference(e, adjusted[v], f"Holm over {len(estimates)}", n_runs) for v, e in estimates.items()
        }
    return gaps


def _per_run(
    scored: dict[int, dict[str, dict]],
    emptied: dict[int, dict[str, list[int]]],
    training: dict[int, dict[str, list[dict | None]]],
    *,
    primary: str,
    run_ids: list[int],
) -> dict[str, dict[str, list[dict]]]:
    """share -> variant -> one row per run: its scores on the test set, the positives the
    gate emptied and how its training ended (`training_row`; not recorded where `training`
    lacks the run)."""
    n_runs = len(run_ids)
    return {
        str(s): {
            v: [
                {
                    "run": r,
                    **{m: number(scored[s][v][m][0][i]) for m in (primary, "siim_dice", "auc")},
                    "gate_emptied": emptied[s][v][i],
                    **training_row(((training.get(s) or {}).get(v) or [None] * n_runs)[i]),
                }
                for i, r in enumerate(run_ids)
            ]
            for v in scored[s]
        }
        for s in scored
    }


CONVERGED = 0.95  # a run has converged once its validation Dice on positives reaches this share of its best


def epochs_to_converge(curve: list[float], fraction: float = CONVERGED) -> int | None:
    """The epochs a run trained until its per-epoch validation score first reached `fraction`
    of its best (1: the first epoch); None for an empty curve."""
    if not curve:
        return None
    best = max(curve)
    return next(i + 1 for i, v in enumerate(curve) if v >= fraction * best)


def _run_mean(values: np.ndarray) -> dict:
    """The mean over runs with the report's t interval over them (t, R - 1 df; no image part:
    the validation curve is one fixed split). One run: no interval."""
    mean, runs = float(np.mean(values)), len(values)
    if runs < 2:
        return {"value": number(mean), "low": None, "high": None}
    half = bootstrap.half_width(float(np.var(values, ddof=1)) / runs, runs, 0.0)
    return {"value": number(mean), "low": number(mean - half), "high": number(mean + half)}


def convergence(curves: dict[str, list[list[float]]], films_per_epoch: int | None) -> dict[str, dict]:
    """How fast each variant of one share converges (transfer mainly speeds convergence: Raghu
    et al. 2019): per run the epochs until its validation Dice on positives first reached 95% of
    its best, and the films it had seen by then; per variant their mean with a seed-aware
    interval and, paired by run, the difference from none. Describes; calls nothing."""
    # a run without its validation curve (an old summary) leaves its variant out
    epochs = {v: np.array([epochs_to_converge(c) for c in cs], float) for v, cs in curves.items() if all(cs)}
    out = {}
    for variant, e in epochs.items():
        row = {"per_run": [int(x) for x in e], "epochs": _run_mean(e)}
        if films_per_epoch:
            row["films_seen"] = number(row["epochs"]["value"] * films_per_epoch)
        if variant != REFERENCE and len(epochs.get(REFERENCE, [])) == len(e):
            row["minus_none"] = _run_mean(e - epochs[REFERENCE])
        out[variant] = row
    return out
