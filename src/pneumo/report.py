"""`report`: the study's table rebuilt: variant x metric on the test split, mean ± std
over seeds, with the all-empty prediction as a row of its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLUMNS = ("siim_dice", "dice_positive", "dice_pooled", "iou", "auc")
STUDY = {"none": 75.3, "labels": 80.0, "pseudo_labels": 76.8}  # the study's Dice (x100), for reference


def ablation(results: list[dict]) -> dict:
    """Group evaluate results by variant; mean and std over seeds per metric."""
    by_variant: dict[str, list[dict]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r["test"])
    by_variant["all_empty"] = [results[0]["all_empty"]] if results else []
    table = {}
    for variant, runs in by_variant.items():
        table[variant] = {"seeds": len(runs)}
        for c in COLUMNS:
            values = np.array([run[c] for run in runs], dtype=float)
            table[variant][c] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return table


def markdown(table: dict) -> str:
    multi = any(row["seeds"] > 1 for row in table.values())
    cell = (lambda v: f"{v['mean']:.3f} ± {v['std']:.3f}") if multi else (lambda v: f"{v['mean']:.3f}")
    lines = [
        "| variant | seeds | " + " | ".join(COLUMNS) + " | study Dice |",
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for variant, row in table.items():
        study = f"{STUDY[variant]:.1f}" if variant in STUDY else ""
        lines.append(f"| {variant} | {row['seeds']} | " + " | ".join(cell(row[c]) for c in COLUMNS) + f" | {study} |")
    return "\n".join(lines) + "\n"


def report(*, results: list[Path], json_path: Path, md_path: Path) -> dict:
    table = ablation([json.loads(p.read_text()) for p in results])
    json_path.write_text(json.dumps(table, indent=1) + "\n")
    md_path.write_text(
        "# Ablation: encoder initialisation (test split)\n\n"
        + markdown(table)
        + "\n`all_empty` predicts no pneumothorax anywhere. Metric definitions: see any MODEL_CARD.md.\n"
    )
    return table
