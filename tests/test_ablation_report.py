"""The ablation report's Markdown (core/ablation_report.py) from its template
(core/ablation_report.md): the template's blocks and the module's use of them agree, fields
are checked, tables and paragraphs come out as Markdown, and the template is package data.
The report's text on a whole study: tests/test_report.py."""

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from per_image_tables import table

from pneumo.core import ablation_report, study

ROOT = Path(__file__).resolve().parents[1]


def test_every_block_of_the_template_is_used_and_every_used_block_exists():
    source = Path(ablation_report.__file__).read_text()
    used = set(re.findall(r'fill\(\s*"(\w+)"', source))
    assert used == set(ablation_report.blocks())
    assert all(block.template.strip() for block in ablation_report.blocks().values())


def test_fill_checks_the_fields():
    assert ablation_report.fill("intervals", method="m") == "Intervals: m. Variants' values are means over runs."
    with pytest.raises(ValueError, match=r"block 'intervals': fields missing \['method'\]"):
        ablation_report.fill("intervals")
    with pytest.raises(ValueError, match=r"fields not in the block \['other'\]"):
        ablation_report.fill("intervals", method="m", other=1)


def test_table():
    assert ablation_report.table(["a", "b"], [[1, "x"], ["", 2.5]]) == "| a | b |\n|---|---|\n| 1 | x |\n|  | 2.5 |"


def test_the_template_is_package_data():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert ablation_report.TEMPLATE in pyproject["tool"]["setuptools"]["package-data"]["pneumo.core"]


def summary(runs: int, upstream: dict) -> dict:
    rng = np.random.default_rng(0)
    positive = np.arange(40) % 4 == 0

    def tables(shift):
        dice = [np.clip(np.where(positive, 0.5 + shift + rng.normal(0, 0.05, 40), 1.0), 0, 1) for _ in range(runs)]
        return [table(positive, d, rng.random(40)) for d in dice]

    out = study.ablation(
        runs={100: {"none": tables(0.0), "labels": tables(0.3)}, 25: {"none": tables(0.0), "labels": tables(0.2)}},
        baselines={"all_empty": table(positive, np.where(positive, 0.0, 1.0), np.zeros(40))},
        primary="dice_positive",
        confirmatory="labels",
        effect_of_interest=0.05,
        resamples=50,
        seed=0,
    )
    upstream_rows = {name: study.training_row(s) for name, s in upstream.items()}
    return out | {"upstream_training": upstream_rows, "training_films": {"100": 30, "25": 8}}


@pytest.mark.parametrize("runs", [1, 3])
def test_the_report_is_paragraphs_and_tables_one_blank_line_apart(runs):
    md = ablation_report.markdown(summary(runs, {}))
    assert md.startswith("# Ablation: encoder initialisation (test split)\n\n**Every verdict below holds on")
    assert md.endswith(" its interval is over the test images only.\n") and "\n\n\n" not in md and "$" not in md
    assert ("**One run per variant" in md) == (runs == 1)
    sections = re.findall(r"^## (.*)$", md, re.MULTILINE)
    assert sections == [
        "Confirmatory contrast: labels - none on `dice_positive`",
        "100% of the training films (30 films)",
        "25% of the training films (8 films)",
        "Transfer gap with 25% of the films minus with 100%",
        "Label efficiency",
        "Runs",
        "Method",
    ]
    for block in md.split("\n\n"):  # a table is one block, its rows all as wide as its header
        lines = block.splitlines()
        if lines[0].startswith("| "):
            assert {line.count(" | ") for line in lines if not line.startswith("|---")} == {lines[1].count("|") - 2}


def test_the_encoders_training_names_the_stages_it_has():
    plateau = {"plateau": {"met": True, "epochs": 16, "best_epoch": 15, "change": 0.01}}
    with_ssl = {"train_autoencoder@0": plateau, "train_ssl@0": plateau, "pretrain_encoder@labels-0": plateau}
    md = ablation_report.markdown(summary(2, with_ssl))
    assert "(3 stage runs: autoencoders, ssl, encoder pretraining) stops at the plateau rule. Every one met it." in md
    without = {k: v for k, v in with_ssl.items() if not k.startswith("train_ssl")}
    assert "(2 stage runs: autoencoders, encoder pretraining)" in ablation_report.markdown(summary(2, without))


def test_label_efficiency_places_each_share_by_its_films_and_leaves_out_a_share_without_them():
    full = summary(3, {})
    scores, gaps = ablation_report.label_efficiency(full)
    assert {(r["share"], r["films"], r["variant"]) for r in scores} == {
        (s, f, v) for s, f in ((100, 30), (25, 8)) for v in ("none", "labels")
    }
    labels_100 = full["families"]["100"]["vs_none"]["labels"]["dice_positive"]
    assert [g for g in gaps if g["share"] == 100] == [
        {"variant": "labels", "share": 100, "films": 30, "value": labels_100["diff"], "low": labels_100["low"],
         "high": labels_100["high"], "verdict": labels_100["verdict"]}
    ]  # fmt: skip
    assert "| 25% | 8 |" in ablation_report.markdown(full)
    # no film count for 25% (no training summary): it has no place on the films axis
    scores, gaps = ablation_report.label_efficiency(full | {"training_films": {"100": 30}})
    assert {r["share"] for r in scores} == {r["share"] for r in gaps} == {100}
