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

One endpoint is primary (`report.primary`, `dice_positive` by default: segmentation, scored
without the image-level gate that SIIM's metric is tuned with). One contrast on it is
confirmatory (`report.confirmatory` minus `none`, all the training films), tested alone;
every other difference from `none` on it is tested with Holm's correction within its share
of the training films, and the transfer gaps (a smaller share minus the largest) with Holm
over the variants. Every other metric is secondary: its intervals are shown, nothing is
called on it. Each interval excludes 0 exactly when its verdict calls the difference.
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
    named only when its Holm-adjusted p (over the latents) is below 0.05 with two runs or more,
    exactly when its interval (drawn at the adjusted level) excludes 0."""
    latents = [n for n in LATENT_ORDER if n in per_run[0]]
    rows = []
    for r, c in zip(run_ids, per_run, strict=True):
        row = {"run": r}
        for name in latents:
            row |= {f"{s}_{name}": _number(c[name].get(s)) for s in ("ami", "ami_p", "nmi", "nmi_chance")}
            row |= {f"ami_low_{name}": _number(c[name]["ami_low"]), f"ami_high_{name}": _number(c[name]["ami_high"])}
        rows.append(row)
    estimates = {
        name: bootstrap.from_runs(
            [c["minus_raw_pixels"][name]["ami"]["value"] for c in per_run],
            [c["minus_raw_pixels"][name]["ami"]["se"] for c in per_run],
        )
        for name in latents[:-1]
    }
    adjusted = _holm(estimates, len(per_run))
    differences = {}
    for name, diff in estimates.items():
        low, high = diff.adjusted(adjusted[name])
        called = diff.method != bootstrap.IMAGES_ONLY and adjusted[name] < bootstrap.ALPHA
        winner = (name if diff.value > 0 else "raw_pixels") if called else "unresolved"
        if diff.method == bootstrap.IMAGES_ONLY:
            winner = "not called: one run"
        differences[name] = {
            "diff": _number(diff.value),
            "low": _number(max(low, -2.0)),  # AMI lies in [-1, 1]
            "high": _number(min(high, 2.0)),
            "p": _number(diff.p),
            "adjusted_p": _number(adjusted[name]),
            "called": bool(called),
            "method": diff.method,
            "winner": winner,
        }
    return {
        "runs": len(per_run),
        "pseudo_labels": per_run[0].get("pseudo_labels", "autoencoder"),  # whose clusters the pseudo-labels are
        "latents": latents,
        "ami": {name: _number(np.mean([c[name]["ami"] for c in per_run])) for name in latents},
        "ami_minus_raw_pixels": differences,
        "per_run": rows,
    }


def _scored(tables: list[Table], counts: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metric -> (per-run values (R,), per-run values on every image resample (R, B))."""
    ones = np.ones((1, counts.shape[1]))
    point = [metric_samples(t, ones) for t in tables]
    boot = [metric_samples(t, counts) for t in tables]
    return {m: (np.array([p[m][0] for p in point]), np.stack([b[m] for b in boot])) for m in METRICS}


def _minus(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-run values and resamples of a - b, paired by run and image resample."""
    return a[0] - b[0], a[1] - b[1]


def _called(e: bootstrap.Estimate, adjusted_p: float | None, test: str, runs: int) -> dict:
    """A difference under the report's one rule: its interval at the level its (adjusted) p
    implies, which excludes 0 exactly when the verdict calls it (adjusted p < 0.05)."""
    low, high = e.adjusted(adjusted_p)
    called = runs > 1 and adjusted_p is not None and adjusted_p < bootstrap.ALPHA
    verdict = "not called: one run" if runs < 2 else ("resolved" if called else "not resolved")
    return {
        "diff": _number(e.value),
        "low": _number(max(low, -1.0)),
        "high": _number(min(high, 1.0)),
        "p": _number(e.p),
        "adjusted_p": _number(adjusted_p),
        "test": test,
        "called": bool(called),
        "verdict": verdict,
        "se": _number(e.se),
    }


def _holm(estimates: dict[str, bootstrap.Estimate], runs: int) -> dict[str, float | None]:
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
        "smallest_detectable": _number(e.smallest_detectable),
        "detectable_upper": _number(e.detectable_upper),
        "sd_runs": _number(sd),
        "image_se": _number(np.sqrt(e.image_variance)),
        "effect_of_interest": effect,
        "runs_needed": needed,
    }


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
    differences = {v: {m: bootstrap.seed_aware(*_minus(variants[v][m], variants[REFERENCE][m])) for m in METRICS}
                   for v in others}  # fmt: skip
    holm_family = {v: differences[v][primary] for v in others if v != confirmatory}
    adjusted = _holm(holm_family, n_runs)
    if confirmatory in others:
        adjusted[confirmatory] = differences[confirmatory][primary].p  # tested alone, before the others
    vs_none = {}
    for v in others:
        test = "confirmatory" if v == confirmatory else f"Holm over {len(holm_family)}"
        per_run = variants[v][primary][0] - variants[REFERENCE][primary][0]
        d = differences[v][primary]
        vs_none[v] = {
            primary: _called(d, adjusted[v], test, n_runs),
            "same_sign_runs": f"{int((np.sign(per_run) == np.sign(d.value)).sum())}/{n_runs}",
            "per_run": [_number(x) for x in per_run],
            **{m: {**_interval(differences[v][m], "diff"), "se": _number(differences[v][m].se)}
               for m in METRICS if m != primary},
        }  # fmt: skip
    vs_baseline = {}
    if bases:
        best = {m: max(bases, key=lambda b, m=m: np.nan_to_num(bases[b][m][0][0], nan=-np.inf)) for m in METRICS}
        for v, x in variants.items():
            row = {}
            for m in METRICS:
                base_points, base_samples = bases[best[m]][m]
                e = bootstrap.seed_aware(x[m][0] - base_points[0], x[m][1] - base_samples[0])
                row[m] = {"baseline": best[m], **_interval(e, "diff")}
                if m == primary:  # each variant's own check that it learns the finding: 5%, unadjusted
                    row[m] = {"baseline": best[m], **_called(e, e.p, "unadjusted", n_runs)}
            vs_baseline[v] = row
    points = [(variants[v][primary][0][i], gate_emptied[v][i]) for v in variants for i in range(n_runs)]
    primary_values, emptied = (np.array(c, float) for c in zip(*points, strict=True))
    varies = len(points) > 2 and primary_values.std() > 0 and emptied.std() > 0
    detectable = [differences[v][primary].smallest_detectable for v in others]
    return {
        "runs": n_runs,
        "variants": {v: {"runs": n_runs, **{m: _interval(e[m]) for m in METRICS}} for v, e in estimate.items()},
        "vs_none": vs_none,
        "vs_baseline": vs_baseline,
        "gate": {
            "emptied_positives": {v: _number(np.mean(gate_emptied[v]), 2) for v in variants},
            "per_run": {v: [int(x) for x in gate_emptied[v]] for v in variants},
            "r_primary": _number(np.corrcoef(primary_values, emptied)[0, 1], 3) if varies else None,
            "missed_positives": {v: _number(np.mean(missed[v]), 2) for v in variants},
        },
        "smallest_detectable_difference": {
            "versus": REFERENCE,
            "runs": n_runs,
            "includes_run_variance": n_runs > 1,
            primary: _number(np.median(detectable)) if detectable else None,
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
    """The report as a JSON-ready dict. `runs`: share (percent of the training films) ->
    variant -> one table per run, in run order. Per share a family (`_family`); the
    confirmatory contrast (`confirmatory` minus `none` on the primary endpoint, largest
    share); each variant's transfer gap at every smaller share minus the gap at the largest
    (Holm over the variants); the per-run table with the training facts; the pseudo-labels.
    Tables must share their images; every variant must have one table per run."""
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
    scored = {s: {v: _scored(tables, counts) for v, tables in runs[s].items()} for s in shares}
    bases = {b: _scored([t], counts) for b, t in baselines.items()}
    emptied = {  # positives the gate empties although pixels pass the threshold
        s: {v: [int(((t["pred_pixels"] == 0) & (t["pred_pixels_ungated"] > 0) & positive).sum()) for t in tables]
            for v, tables in runs[s].items()}
        for s in shares
    }  # fmt: skip
    missed = {  # positives with no pixel above the threshold: Dice 0 on the primary endpoint, no gate involved
        s: {v: [int(((t["pred_pixels_ungated"] == 0) & positive).sum()) for t in tables]
            for v, tables in runs[s].items()}
        for s in shares
    }  # fmt: skip
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
    values, counts_emptied = (np.array(c, float) for c in zip(*pairs, strict=True))
    varies = len(pairs) > 2 and values.std() > 0 and counts_emptied.std() > 0
    gate_r = np.corrcoef(values, counts_emptied)[0, 1] if varies else None
    summary: dict = {
        "gate_r_all_runs": _number(gate_r, 3) if gate_r is not None else None,
        "holds_on": "these phantoms (synthetic data)" if synthetic else "this test split",
        "test_images": len(positive),
        "test_positive": int(positive.sum()),
        "resamples": resamples,
        "runs": n_runs,
        "run_ids": run_ids,
        "primary": primary,
        "shares": shares,
        "full_share": full,
        "method": bootstrap.T_RUNS_IMAGES if n_runs > 1 else bootstrap.IMAGES_ONLY,
        "method_text": bootstrap.METHODS[bootstrap.T_RUNS_IMAGES if n_runs > 1 else bootstrap.IMAGES_ONLY],
        "baselines": {b: {m: _interval(bootstrap.seed_aware(*x[m])) for m in METRICS} for b, x in bases.items()},
        "families": {str(s): f for s, f in families.items()},
    }
    if REFERENCE in scored[full] and confirmatory in scored[full]:
        d = _minus(scored[full][confirmatory][primary], scored[full][REFERENCE][primary])
        e = bootstrap.seed_aware(*d)
        summary["confirmatory"] = {
            "contrast": f"{confirmatory} - {REFERENCE}",
            "share": full,
            **families[full]["vs_none"][confirmatory][primary],
            **_power(e, d[0], effect_of_interest),
        }
    gaps: dict[str, dict] = {}
    for s in shares[1:]:
        others = [v for v in scored[s] if v != REFERENCE and v in scored[full]]
        if REFERENCE not in scored[s]:
            continue
        estimates = {
            v: bootstrap.seed_aware(*_minus(
                _minus(scored[s][v][primary], scored[s][REFERENCE][primary]),
                _minus(scored[full][v][primary], scored[full][REFERENCE][primary]),
            ))
            for v in others
        }  # fmt: skip
        adjusted = _holm(estimates, n_runs)
        gaps[str(s)] = {v: _called(e, adjusted[v], f"Holm over {len(estimates)}", n_runs) for v, e in estimates.items()}
    summary["gap_differences"] = gaps
    training = training or {}
    summary["per_run"] = {
        str(s): {
            v: [
                {
                    "run": r,
                    **{m: _number(scored[s][v][m][0][i]) for m in (primary, "siim_dice", "auc")},
                    "gate_emptied": emptied[s][v][i],
                    **training_row(((training.get(s) or {}).get(v) or [None] * n_runs)[i]),
                }
                for i, r in enumerate(run_ids)
            ]
            for v in scored[s]
        }
        for s in shares
    }
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


def _verdict_cell(row: dict) -> str:
    return f"**{row['verdict']}**" if row["called"] else row["verdict"]


def _family_lines(share: str, family: dict, summary: dict) -> list[str]:
    """One share's section: the main table, the verdicts on the primary endpoint, the
    secondary differences, the gate, the baselines check."""
    primary, baselines = summary["primary"], summary["baselines"]
    header = [f"{m} (primary)" if m == primary else m for m in METRICS]
    films = summary.get("training_films", {}).get(share)
    lines = [
        "",
        f"## {share}% of the training films" + (f" ({films} films)" if films else ""),
        "",
        "| model | runs | " + " | ".join(header) + " | study Dice |",
        "|---" * (len(METRICS) + 3) + "|",
    ]
    for name, row in family["variants"].items():
        study = f"{STUDY[name]:.1f}" if name in STUDY and share == str(summary["full_share"]) else ""
        lines.append(f"| {name} | {row['runs']} | " + " | ".join(_cell(row[m]) for m in METRICS) + f" | {study} |")
    for name, row in baselines.items():
        lines.append(f"| {name} (baseline) | – | " + " | ".join(_cell(row[m]) for m in METRICS) + " |  |")
    vs_none = family["vs_none"]
    if vs_none:
        lines += [
            "",
            f"Difference from `{REFERENCE}` on `{primary}` (primary), paired by run and image. Each interval is drawn "
            "at the level its adjusted p implies, so it excludes 0 exactly when the verdict calls the difference.",
            "",
            "| variant | difference [interval] | same sign in | p | adjusted p | tested | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in vs_none.items():
            d = row[primary]
            lines.append(
                f"| {name} | {_cell(d, 'diff', True)} | {row['same_sign_runs']} runs | {_p(d['p'])} | "
                f"{_p(d['adjusted_p'])} | {d['test']} | {_verdict_cell(d)} |"
            )
        secondary = [m for m in METRICS if m != primary]
        lines += [
            "",
            "Secondary endpoints, difference from `none` (95% intervals, nothing called):",
            "",
            "| variant | " + " | ".join(secondary) + " |",
            "|---" * (len(secondary) + 1) + "|",
        ]
        for name, row in vs_none.items():
            lines.append(f"| {name} | " + " | ".join(_cell(row[m], "diff", True) for m in secondary) + " |")
    gate = family["gate"]
    r = gate["r_primary"]
    lines += [
        "",
        f"SIIM's gate (tuned for `siim_dice` on validation) empties these positive test films, of "
        f"{summary['test_positive']}, although pixels pass the threshold (mean over runs): "
        + ", ".join(f"{v} {n:.1f}" for v, n in gate["emptied_positives"].items())
        + f". It decides `siim_dice` only; correlation of the per-run `{primary}` with the films emptied: "
        + ("n/a" if r is None else f"{r:+.2f}")
        + ". Positive films with no pixel above the threshold at all (Dice 0 on the primary, no gate involved): "
        + ", ".join(f"{v} {n:.1f}" for v, n in gate["missed_positives"].items())
        + ".",
    ]
    if family["vs_baseline"]:
        first = next(iter(family["vs_baseline"].values()))[primary]
        lines += [
            "",
            f"Against the best content-free baseline on `{primary}` (`{first['baseline']}`): does each variant "
            "learn the finding? (each at 5%, unadjusted)",
            "",
            "| variant | difference [95% interval] | p | verdict |",
            "|---|---|---|---|",
        ]
        for name, row in family["vs_baseline"].items():
            d = row[primary]
            lines.append(f"| {name} | {_cell(d, 'diff', True)} | {_p(d['p'])} | {_verdict_cell(d)} |")
    return lines


def markdown(summary: dict) -> str:
    """The ablation report as Markdown: the scope and the pre-specified design, the
    confirmatory contrast with its power, one section per share of the training films, the
    transfer gaps, the per-run table with the training facts, the pseudo-labels, the linear
    probe, the method and the metric definitions."""
    primary, n_runs = summary["primary"], summary["runs"]
    runs_text = ", ".join(str(r) for r in summary["run_ids"])
    lines = [
        "# Ablation: encoder initialisation (test split)",
        "",
        f"**Every verdict below holds on {summary['holds_on']}**, not beyond it. "
        f"{summary['test_images']} test images ({summary['test_positive']} with pneumothorax); "
        f"{n_runs} run(s) per variant (runs {runs_text}: run r is the whole training chain seeded r); "
        f"{summary['resamples']} bootstrap resamples.",
        "",
        f"**Design, fixed before the runs.** Primary endpoint: `{primary}`. Confirmatory contrast: "
        f"`{summary.get('confirmatory', {}).get('contrast', 'n/a')}` on it with {summary['full_share']}% of the "
        "training films, tested alone at two-sided 5%. Every other difference from `none` on the primary endpoint "
        "is tested with Holm's correction within its share; the transfer gaps (scarce minus full) with Holm over "
        "the variants. Secondary endpoints are shown with 95% intervals and never called.",
        "",
    ]
    if n_runs == 1:
        lines += [
            "**One run per variant: this report calls no difference between initialisations.** The intervals "
            "below cover only which test images were drawn; how much another training run of the same chain "
            "would differ is unmeasured. Verdicts need at least 2 runs (`runs` in params.yaml).",
            "",
        ]
    lines.append(f"Intervals: {bootstrap.METHODS[summary['method']]}. Variants' values are means over runs.")
    if summary.get("gate_r_all_runs") is not None:
        lines += [
            "",
            f"The primary endpoint takes no post-processing gate: over all runs of every share, its per-run values "
            f"correlate with the positive films SIIM's gate empties at r = {summary['gate_r_all_runs']:+.2f}.",
        ]
    c = summary.get("confirmatory")
    if c:
        needed = "more than 100" if c["runs_needed"] is None else str(c["runs_needed"])
        lines += [
            "",
            f"## Confirmatory contrast: {c['contrast']} on `{primary}`",
            "",
            f"{_cell(c, 'diff', True)}, p {_p(c['p'])}: **{c['verdict']}**.",
            "",
            f"Power: the smallest difference this design resolves with 80% power at two-sided 5% (noncentral t, "
            f"{n_runs - 1} df) is **{_fmt(c['smallest_detectable'])}** (up to {_fmt(c['detectable_upper'])} with the "
            f"run variance at the top of its 95% interval). The per-run differences have SD "
            f"{_fmt(c['sd_runs'])}, the test images an SE of {_fmt(c['image_se'])}; resolving "
            f"{c['effect_of_interest']:.3f} (the study's labels minus none) would take {needed} runs at these "
            "variances. A difference smaller than the detectable one left unresolved is not evidence of no effect.",
        ]
    for share, family in summary["families"].items():
        lines += _family_lines(share, family, summary)
    gaps = summary.get("gap_differences") or {}
    full = summary["full_share"]
    for share, rows in gaps.items():
        lines += [
            "",
            f"## Transfer gap with {share}% of the films minus with {full}%",
            "",
            f"(variant - none at {share}%) - (variant - none at {full}%) on `{primary}`, paired by run and image; "
            "positive: pretraining helps more when labels are scarce. Holm over the variants.",
            "",
            "| variant | difference [interval] | p | adjusted p | verdict |",
            "|---|---|---|---|---|",
        ]
        for name, d in rows.items():
            lines.append(
                f"| {name} | {_cell(d, 'diff', True)} | {_p(d['p'])} | {_p(d['adjusted_p'])} | {_verdict_cell(d)} |"
            )
    lines += [
        "",
        "## Runs",
        "",
        "Each run's test scores and how its U-Net training ended: the selected epoch (lowest validation loss), "
        "the epochs run, and the plateau rule (met: the validation loss had stopped improving; `change` is the "
        "relative improvement of the best validation loss over the last epochs); `emptied`: positive test films "
        "the SIIM gate emptied although pixels passed the threshold.",
        "",
        f"| share | variant | run | {primary} | siim_dice | auc | emptied | selected epoch | epochs run | plateau "
        "| change | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for share, family in summary["per_run"].items():
        for name, rows in family.items():
            for row in rows:
                epoch = "n/a" if row["selected_epoch"] is None else row["selected_epoch"]
                epochs = "n/a" if row["epochs"] is None else row["epochs"]
                change = "n/a" if row["change"] is None else f"{row['change']:.1%}"
                lines.append(
                    f"| {share}% | {name} | {row['run']} | {_fmt(row[primary])} | {_fmt(row['siim_dice'])} | "
                    f"{_fmt(row['auc'])} | {row['gate_emptied']} | {epoch} | {epochs} | {_plateau(row)} | {change} | "
                    f"{row['precision'] or 'n/a'} |"
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
            "stops at the plateau rule. "
            + (
                f"⚠ Ended at their epoch limit while still improving: {', '.join(open_runs)}."
                if open_runs
                else "Every one met it."
            ),
        ]
    lines += _clustering_lines(summary.get("clustering"))
    lines += _probe_lines(summary.get("linear_probe"))
    lines += [
        "",
        "## Method",
        "",
        "Test images are resampled stratified (positives among positives, negatives among negatives), the same "
        "resamples for every variant, run, share and baseline. Runs pair by index across variants: run r of every "
        "variant shares the U-Net seed r (decoder initialisation, sample order, augmentation), so that part of "
        "the training noise cancels in a difference, and the run variance is estimated from the per-run "
        "differences themselves. An interval's half-width combines the run variance (t with R-1 degrees of "
        "freedom) and the image-bootstrap variance of the run mean (Banerjee's conservative rule: at least 95% "
        "coverage whatever their ratio); the interval is symmetric, and the p-value is the smallest level at "
        "which the same half-width reaches the estimate, so interval and p always agree. Under Holm each interval "
        "is drawn at level 1 - 0.05 p / p_adjusted. With one run there is no run variance: intervals show "
        "test-set sampling only and nothing is called. The smallest detectable difference is the noncentral-t "
        "answer for 80% power at the rule's own critical value.",
        "",
        "Metrics: `dice_positive` (primary, segmentation) is the mean Dice over the images with a pneumothorax of "
        "the pixels above the fixed threshold (`evaluate.threshold`), with no image-level gate; `auc` (detection) "
        "is the image-level ROC AUC of the maximum pixel probability (ties count 1/2); `siim_dice` is SIIM-ACR's "
        "metric (the competition figure), the mean over images of Dice after the post-processing tuned for it on "
        "validation, where an empty prediction on an empty image scores 1 (so predicting nothing scores the share "
        "of empty images); `dice_pooled` (Dice over all pixels of all images) and `iou` (mean per-image IoU, 1 "
        "when both are empty) score the same post-processed masks. Content-free baselines see no image: "
        "`all_empty` predicts nothing anywhere; `location_prior` predicts the mean training mask above a "
        "threshold tuned on validation for `dice_positive`. A baseline has no training noise: its interval is over "
        "the test images only.",
    ]
    return "\n".join(lines) + "\n"


def _clustering_lines(clustering: dict | None) -> list[str]:
    if not clustering:
        return []
    latents = clustering["latents"]
    lines = [
        "",
        "## Pseudo-labels against chance",
        "",
        "Agreement of the clusters with the true CXR-14 labels (single-label images), for every latent clustered "
        f"(the pseudo-labels are the **{clustering['pseudo_labels']}** clusters): adjusted mutual information "
        "(AMI, 0 at chance) with its 95% interval over the images of one run and the permutation p-value (cluster "
        "ids shuffled against the labels); NMI beside the NMI that shuffled ids score. One run calls nothing: the "
        "verdicts are over the runs, below.",
        "",
        "| run | "
        + " | ".join(f"AMI {n.replace('_', ' ')} | p" for n in latents)
        + " | "
        + " | ".join(f"NMI {n.replace('_', ' ')} (chance)" for n in latents)
        + " |",
        "|---|" + "---|---|" * len(latents) + "---|" * len(latents),
    ]
    for row in clustering["per_run"]:
        cells = []
        for name in latents:
            ami = {"value": row[f"ami_{name}"], "low": row[f"ami_low_{name}"], "high": row[f"ami_high_{name}"]}
            cells += [_cell(ami), _p(row[f"ami_p_{name}"])]
        cells += [f"{_fmt(row[f'nmi_{n}'])} ({_fmt(row[f'nmi_chance_{n}'])})" for n in latents]
        lines.append(f"| {row['run']} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, d in clustering["ami_minus_raw_pixels"].items():
        lines.append(
            f"AMI difference, {name} minus raw pixels, over {clustering['runs']} run(s): "
            f"{_cell(d, 'diff', True)} ({CLUSTERING_METHODS[d['method']]}; p {_p(d['p'])}, "
            f"Holm-adjusted {_p(d['adjusted_p'])}): **{d['winner']}**."
        )
    return lines


def _probe_lines(probe: dict | None) -> list[str]:
    if not probe:
        return []
    lines = [
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
    return lines


def headline(summary: dict) -> dict:
    """The study's numbers as the one small metrics file `dvc exp show` and `dvc metrics diff`
    list: per variant and content-free baseline the primary endpoint (run mean) with all the
    training films, keyed by its name, and `ci`, the half-width of its seed-aware 95% interval
    (the exact bounds are in the ablation JSON); the same per variant at each smaller share
    (`<variant>@<share>`); the confirmatory contrast (difference, half-width, p, smallest
    detectable difference); the clusterings' AMI (run mean) for every latent and the linear
    probe's macro AUC per encoder (run mean). Everything else is in the ablation report."""
    primary, full = summary["primary"], str(summary["full_share"])

    def pair(estimate: dict, key: str = "value") -> dict:
        value, low, high = estimate[key], estimate["low"], estimate["high"]
        ci = None if low is None or high is None else round((high - low) / 2, 4)
        return {primary: None if value is None else round(value, 4), "ci": ci}

    out = {name: pair(m[primary]) for name, m in summary["families"][full]["variants"].items()}
    out |= {name: pair(m[primary]) for name, m in summary["baselines"].items()}
    for share, family in summary["families"].items():
        if share != full:
            out |= {f"{name}@{share}": pair(m[primary]) for name, m in family["variants"].items()}
    c = summary.get("confirmatory")
    if c:
        out["confirmatory"] = {
            "diff": c["diff"] if c["diff"] is None else round(c["diff"], 4),
            "ci": None if c["low"] is None else round((c["high"] - c["low"]) / 2, 4),
            "p": _number(c["p"], 4),
            "detectable": _number(c["smallest_detectable"], 4),
        }
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
    """The forest plot's rows: each variant's difference from `none` per metric with all the
    training films, with its interval (on the primary endpoint at the level its verdict was
    tested), whether the metric is the primary one, and the verdict."""
    primary = summary["primary"]
    rows = summary["families"][str(summary["full_share"])]["vs_none"]
    return [
        {
            "variant": variant,
            "metric": metric,
            "diff": row[metric]["diff"],
            "low": row[metric]["low"],
            "high": row[metric]["high"],
            "primary": metric == primary,
            "called": bool(row[metric]["called"]) if metric == primary else False,
        }
        for variant, row in rows.items()
        for metric in METRICS
        if row[metric]["diff"] is not None
    ]


def dice_by_size(runs: dict[str, list[Table]], bins: int = SIZE_BINS) -> list[dict]:
    """Gate-free Dice on the positive test images by lesion size: the positives cut into `bins` equal
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
            per_run = [float(ungated_dice(t)[positive][members].mean()) for t in tables]
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
    runs: dict[int, dict[str, list[Path]]],
    baselines: dict[str, Path],
    training: dict[int, dict[str, list[Path]]],
    clustering: list[Path],
    run_ids: list[int],
    primary: str,
    confirmatory: str,
    effect_of_interest: float,
    resamples: int,
    seed: int,
    json_path: Path,
    md_path: Path,
    headline_path: Path,
    upstream: dict[str, Path] | None = None,
    charts_dir: Path | None = None,
    linear_probe: Path | None = None,
) -> dict:
    """Read the per-image CSVs (runs: share -> variant -> one CSV per run, in the order of
    `run_ids`; baselines: name -> CSV), the U-Nets' training summaries (same layout as
    `runs`), the pseudo-label validation of every run (cluster_latents' JSON, one per run) and
    the summaries of the training that made the encoders (`upstream`: a name such as
    `train_autoencoder@0` -> its dvclive metrics.json), check that the CSVs share their
    images, and write the ablation JSON and Markdown, the headline and (to `charts_dir`) the
    review charts' data of the largest share: the forest plot, Dice by lesion size and the
    training curves over all runs (read beside each U-Net's training summary).
    `linear_probe`: the probe table of every encoder, shown beside."""
    paths = [p for family in runs.values() for ps in family.values() for p in ps] + list(baselines.values())
    if not paths or any(not ps for family in runs.values() for ps in family.values()):
        raise ValueError("report needs at least one CSV per variant")
    tables = {Path(p): per_image.read(Path(p)) for p in paths}
    check_same_images(tables)
    summaries = {
        s: {v: [json.loads(Path(p).read_text()) for p in ps] for v, ps in family.items()}
        for s, family in training.items()
    }
    summary = ablation(
        runs={s: {v: [tables[Path(p)] for p in ps] for v, ps in family.items()} for s, family in runs.items()},
        baselines={b: tables[Path(p)] for b, p in baselines.items()},
        primary=primary,
        confirmatory=confirmatory,
        effect_of_interest=effect_of_interest,
        resamples=resamples,
        seed=seed,
        run_ids=run_ids,
        training=summaries,
        clustering=[json.loads(Path(p).read_text()) for p in clustering],
    )
    summary["training_films"] = {
        str(s): next(iter(family.values()))[0].get("training_films", {}).get("films") for s, family in summaries.items()
    }
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
    full = summary["full_share"]
    if charts_dir is not None:
        run_tables = {v: [tables[Path(p)] for p in ps] for v, ps in runs[full].items()}
        dirs = {v: [Path(p).parent for p in ps] for v, ps in training[full].items()}
        write_charts(charts_dir, summary, run_tables, dirs)
    c = summary.get("confirmatory") or {}
    log.info(
        "report: %d test images (%d positive), %d run(s), shares %s; confirmatory %s on %s: %s",
        summary["test_images"],
        summary["test_positive"],
        summary["runs"],
        summary["shares"],
        c.get("contrast"),
        primary,
        c.get("verdict"),
    )
    return summary
