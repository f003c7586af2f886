"""`report`: reads what the study's stages wrote (evaluate's per-image CSVs of every U-Net
run, the content-free baselines, the U-Nets' training summaries, the pseudo-label validation
of every run, the training summaries of the stages that made the encoders, the linear probe),
checks that the CSVs share their images, and writes the ablation: its statistics from
`core.study` as JSON, its Markdown from `core.ablation_report`, the headline numbers (the
one DVC metrics file) and the review charts' data (the forest plot, Dice by lesion size, the
training curves over all runs).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pneumo.core import ablation_report, study
from pneumo.core.study import METRICS, number
from pneumo.formats import per_image

log = logging.getLogger(__name__)

SIZE_BINS = 4  # lesion-size bins of the Dice-by-size chart: quartiles of the positive test images' mask area
CURVES = ("val/loss", "val/dice_positive", "val/siim_dice", "train/loss")  # per-epoch curves over all runs
Table = per_image.Table


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
            "p": number(c["p"], 4),
            "detectable": number(c["smallest_detectable"], 4),
        }
    clustering = summary.get("clustering")
    if clustering:
        out["clustering"] = {f"ami_{name}": number(value, 4) for name, value in clustering["ami"].items()}
    probe = summary.get("linear_probe")
    if probe:
        out["linear_probe"] = {
            f"macro_auc_{n}": number(e["macro_auc"]["value"], 4) for n, e in probe["encoders"].items()
        }
    return out


def _spread(values: list[float], name: str) -> dict:
    """A chart's value over runs: the mean under `name`, the lowest and the highest run."""
    return {name: number(np.mean(values)), "low": number(min(values)), "high": number(max(values))}


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
            per_run = [float(study.ungated_dice(t)[positive][members].mean()) for t in tables]
            rows.append(
                {"variant": variant, "size": label, **_spread(per_run, "dice_positive"), "images": int(members.sum())}
            )
    return rows


def _logged(folder: Path, quantity: str) -> list[tuple[int, float]]:
    """One U-Net run's (epoch, value) of `quantity` (dvclive's TSV beside its summary); none
    when it was not logged."""
    tsv = folder / "plots" / "metrics" / f"{quantity}.tsv"
    if not tsv.exists():
        return []
    rows = (line.split("\t") for line in tsv.read_text().splitlines()[1:])
    return [(int(step), float(value)) for step, value, *_ in rows]


def curves(training_dirs: dict[str, list[Path]], quantity: str) -> list[dict]:
    """One per-epoch curve over all runs of each variant: at each epoch the mean of the runs
    that reached it, the lowest and highest, and how many runs (runs stop at their plateau)."""
    rows = []
    for variant, dirs in training_dirs.items():
        by_epoch: dict[int, list[float]] = {}
        for folder in dirs:
            for step, value in _logged(Path(folder), quantity):
                by_epoch.setdefault(step, []).append(value)
        for epoch, values in sorted(by_epoch.items()):
            rows.append({"variant": variant, "epoch": epoch, **_spread(values, "mean"), "runs": len(values)})
    return rows


def write_charts(folder: Path, summary: dict, runs: dict[str, list[Table]], training_dirs: dict[str, list[Path]]):
    """The review charts' data (drawn by the templates in .dvc/plots/, see dvc.yaml `plots`):
    forest.json, dice_by_size.json, label_efficiency(_gap).json and one curve file per
    quantity (`val_loss.json`, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    efficiency, gaps = ablation_report.label_efficiency(summary)
    # none's own line at 0 in the gap chart: the reference, and every variant keeps its colour of the first chart
    zero = {"value": 0.0, "low": 0.0, "high": 0.0, "verdict": "reference"}  # every row has the same fields (DVC)
    gaps = [r | zero for r in efficiency if r["variant"] == study.REFERENCE] + gaps
    charts = {"forest": forest(summary), "dice_by_size": dice_by_size(runs)}
    charts |= {"label_efficiency": efficiency, "label_efficiency_gap": gaps}
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
    study.check_same_images(tables)
    summaries = {
        s: {v: [json.loads(Path(p).read_text()) for p in ps] for v, ps in family.items()}
        for s, family in training.items()
    }
    summary = study.ablation(
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
    # every epoch draws as many films as the whole training split holds: the full share's films
    films_per_epoch = summary["training_films"].get("100")
    val_dice = {s: {v: [[x for _, x in _logged(Path(p).parent, "val/dice_positive")] for p in ps]
                    for v, ps in family.items()} for s, family in training.items()}  # fmt: skip
    summary["convergence"] = {str(s): study.convergence(family, films_per_epoch) for s, family in val_dice.items()}
    summary["upstream_training"] = {
        name: study.training_row(json.loads(Path(p).read_text())) for name, p in (upstream or {}).items()
    }
    if linear_probe is not None:
        summary["linear_probe"] = json.loads(Path(linear_probe).read_text())
    for path in (json_path, md_path, headline_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    md_path.write_text(ablation_report.markdown(summary))
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
