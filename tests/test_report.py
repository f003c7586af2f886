"""The report stage end to end, from the files its stages write to the files it writes:
seed-aware intervals, the confirmatory contrast and its power, Holm on the other contrasts,
the label-scarce family and the transfer gaps, one rule for every verdict (in the JSON and
the Markdown), one run calling nothing, the per-run table with the training facts, the
pseudo-labels against chance, the headline, the review charts and the stage script (ssl's
training may be absent). The statistics alone: tests/test_study.py."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from per_image_tables import rows_from_counts, write_csv

from pneumo.core import bootstrap, metrics, models, runtime
from pneumo.core.study import METRICS, metric_samples
from pneumo.formats import dicom, per_image
from pneumo.tasks import cluster_latents, linear_probe, report


def keys(tree) -> list[str]:
    if isinstance(tree, dict):
        return [k for key, value in tree.items() for k in [key, *keys(value)]]
    if isinstance(tree, list):
        return [k for value in tree for k in keys(value)]
    return []


QUALITY = {  # per share and run: (share of the lesion hit, false-positive rate on empty films, score separation)
    100: {
        "none": [(0.4, 0.3, 0.1)] * 8,
        "labels": [(0.9, 0.05, 0.5)] * 8,  # clearly better in every run
        "autoencoder": [(0.95, 0.02, 0.6), (0.15, 0.3, 0.1)] * 4,  # runs disagree: training noise, not an effect
    },
    25: {
        "none": [(0.2, 0.3, 0.1)] * 8,  # data-limited: far below its full-data self
        "labels": [(0.85, 0.05, 0.5)] * 8,  # the gap to none grows when labels are scarce
        "autoencoder": [(0.9, 0.02, 0.6), (0.1, 0.3, 0.1)] * 4,
    },
}
CONTROLS = ("permuted_clusters", "raw_clusters")  # extra variants, as in the controls experiment


def make_study(tmp_path: Path, runs: list[int], synthetic: bool = True, controls: bool = False) -> dict:
    """The report's inputs for a small study with `runs` at shares 100 and 25, as the stage
    passes them: per-image CSVs of `none`, `labels` (clearly better), `autoencoder` (better or
    worse by run) and `pseudo_labels` (a copy of `none`), with `controls` also two copies of
    `autoencoder`; SIIM's gate empties a fifth of the found positives (the gate-free columns keep
    them); the two content-free baselines, one training summary per U-Net run (the last run of
    `none` ended still improving), and the pseudo-label validation of every run, made by
    cluster_latents itself."""
    rng = np.random.default_rng(5)
    n, n_pos = 80, 24
    root = dicom.SYNTHETIC_UID_ROOT if synthetic else "1.2.276.0"
    ids = [f"{root}.{i}" for i in range(n)]
    positive = np.arange(n) < n_pos
    mask = np.where(positive, rng.integers(20, 200, n), 0)

    def scored(hit: float, false_positive: float, separation: float) -> list[dict]:
        found = positive & (rng.random(n) < 0.9)
        inter = np.where(found, np.round(mask * rng.uniform(hit - 0.1, hit, n)), 0).astype(int)
        fp = ~positive & (rng.random(n) < false_positive)
        pred = np.where(found, inter + rng.integers(1, 20, n), 0) + np.where(fp, rng.integers(5, 40, n), 0)
        score = np.clip(separation * positive + rng.normal(0.3, 0.2, n), 0, 1)
        gated = ~(found & (rng.random(n) < 0.2))  # the gate empties some positives
        return rows_from_counts(ids, positive, mask, pred * gated, inter * gated, score, ungated=(pred, inter))

    csvs, training = {}, {}
    for share, quality in QUALITY.items():
        csvs[share] = {}
        for v in ("none", "labels", "autoencoder"):
            csvs[share][v] = [
                write_csv(tmp_path / f"evaluate/{share}/{v}-{r}/per_image.csv", scored(*quality[v][i]))
                for i, r in enumerate(runs)
            ]
        copies = {"pseudo_labels": "none", **(dict.fromkeys(CONTROLS, "autoencoder") if controls else {})}
        for v, source in copies.items():
            csvs[share][v] = []
            for r, path in zip(runs, csvs[share][source], strict=True):
                csvs[share][v].append(write_csv(tmp_path / f"evaluate/{share}/{v}-{r}/per_image.csv", []))
                csvs[share][v][-1].write_text(path.read_text())
        training[share] = {}
        for v in csvs[share]:
            training[share][v] = []
            for r in runs:
                still = v == "none" and r == runs[-1] and len(runs) > 1
                summary = {
                    "val": {"loss": 0.4},
                    "selected": {"epoch": 11, "val_loss": 0.4},
                    "plateau": {"met": not still, "epochs": 12, "best_epoch": 7 + r, "change": 0.05 * still or 0.004},
                    "training_films": {"share": share, "films": 4 * share, "positive": share},
                    "precision": "fp32",
                }
                training[share][v].append(tmp_path / f"train_unet/{share}/{v}-{r}/metrics.json")
                training[share][v][-1].parent.mkdir(parents=True, exist_ok=True)
                training[share][v][-1].write_text(json.dumps(summary))
    zero = np.zeros(n, int)
    prior = np.where(positive, np.minimum(mask, 15), 0)
    baselines = {
        "all_empty": write_csv(
            tmp_path / "baselines/all_empty/per_image.csv", rows_from_counts(ids, positive, mask, zero, zero, zero)
        ),
        "location_prior": write_csv(
            tmp_path / "baselines/location_prior/per_image.csv",
            rows_from_counts(ids, positive, mask, np.full(n, 60), prior, np.full(n, 0.4)),
        ),
    }
    clustering = []
    for r in runs:  # the autoencoder's and ssl's clusters follow the labels a little, raw pixels not at all
        truth = rng.integers(0, 4, 300)
        latents = {
            "autoencoder": np.where(rng.random(300) < 0.5, truth, rng.integers(0, 4, 300)),
            "ssl": np.where(rng.random(300) < 0.3, truth, rng.integers(0, 4, 300)),
            "raw_pixels": rng.integers(0, 4, 300),
        }
        result = cluster_latents.compare(latents, truth, resamples=200, seed=r)
        for name, ids_ in latents.items():
            result[name] |= metrics.chance_agreement(ids_, truth, permutations=99, seed=r)
        clustering.append(tmp_path / f"pseudo_labels/{r}.json")
        clustering[-1].parent.mkdir(parents=True, exist_ok=True)
        clustering[-1].write_text(json.dumps(result))
    return {"runs": csvs, "baselines": baselines, "training": training, "clustering": clustering, "run_ids": runs}


def files(tmp_path) -> dict:
    return {"json_path": tmp_path / "a.json", "md_path": tmp_path / "a.md", "headline_path": tmp_path / "h.json"}


def run_report(tmp_path, study, **overrides) -> dict:
    settings = {"primary": "dice_positive", "confirmatory": "labels", "effect_of_interest": 0.047}
    return report.report(**study, **{**settings, "resamples": 500, "seed": 0, **overrides}, **files(tmp_path))


def verdict_rows(saved: dict) -> list[tuple[str, dict]]:
    """Every row of every table the report calls something on: the confirmatory contrast,
    each share's differences from none on the primary, the baseline checks, the transfer
    gaps and the pseudo-label latents over the runs."""
    primary = saved["primary"]
    rows = [("confirmatory", saved["confirmatory"])] if "confirmatory" in saved else []
    for share, family in saved["families"].items():
        rows += [(f"{share}/{v} - none", row[primary]) for v, row in family["vs_none"].items()]
        rows += [(f"{share}/{v} - baseline", row[primary]) for v, row in family["vs_baseline"].items()]
    rows += [(f"gap {s}/{v}", d) for s, family in saved["gap_differences"].items() for v, d in family.items()]
    if "clustering" in saved:
        rows += [(f"ami {n}", d) for n, d in saved["clustering"]["ami_minus_raw_pixels"].items()]
    return rows


def test_report_end_to_end(tmp_path):
    study = make_study(tmp_path, [0, 1, 2])
    out = run_report(tmp_path, study)
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert not [k for k in keys(saved) if "." in k or " " in k]
    assert (saved["test_images"], saved["test_positive"], saved["resamples"]) == (80, 24, 500)
    assert (saved["runs"], saved["run_ids"], saved["primary"]) == (3, [0, 1, 2], "dice_positive")
    assert (saved["shares"], saved["full_share"], list(saved["families"])) == ([100, 25], 100, ["100", "25"])
    assert saved["method"] == bootstrap.T_RUNS_IMAGES and saved["holds_on"] == "these phantoms (synthetic data)"
    full, scarce = saved["families"]["100"], saved["families"]["25"]
    for row in [*full["variants"].values(), *scarce["variants"].values(), *saved["baselines"].values()]:
        for m in METRICS:
            assert row[m]["low"] <= row[m]["value"] <= row[m]["high"], m
    assert full["variants"]["labels"]["runs"] == 3
    assert scarce["variants"]["none"]["dice_positive"]["high"] < full["variants"]["none"]["dice_positive"]["low"]
    assert saved["baselines"]["all_empty"]["auc"] == {"value": 0.5, "low": 0.5, "high": 0.5}

    # the confirmatory contrast: labels - none with all the films, alone at 5%, with its power
    c = saved["confirmatory"]
    assert (c["contrast"], c["share"], c["test"]) == ("labels - none", 100, "confirmatory")
    assert c["called"] and c["verdict"] == "resolved" and c["low"] > 0 and c["p"] < 0.05 and c["adjusted_p"] == c["p"]
    per_run = np.array(full["vs_none"]["labels"]["per_run"])
    assert c["sd_runs"] == pytest.approx(per_run.std(ddof=1), abs=1e-6)
    assert 0 < c["smallest_detectable"] < c["detectable_upper"] and c["effect_of_interest"] == 0.047
    assert c["runs_needed"] is None or c["runs_needed"] >= 2

    # every other difference on the primary: Holm within the share (the confirmatory one apart)
    vs_none = full["vs_none"]
    assert list(vs_none) == ["labels", "autoencoder", "pseudo_labels"]
    for row in vs_none.values():
        assert set(row) >= {"same_sign_runs", "per_run", *METRICS}
        for m in METRICS:
            assert row[m]["low"] <= row[m]["diff"] <= row[m]["high"] and row[m]["se"] >= 0, m
    holm = [vs_none[v]["dice_positive"] for v in ("autoencoder", "pseudo_labels")]
    adjusted, _ = bootstrap.holm([d["p"] for d in holm])
    assert [d["adjusted_p"] for d in holm] == pytest.approx(adjusted.tolist(), abs=1e-6)
    assert {d["test"] for d in holm} == {"Holm over 2"}
    noisy, same = vs_none["autoencoder"]["dice_positive"], vs_none["pseudo_labels"]["dice_positive"]
    assert not same["called"] and same["diff"] == 0 and same["p"] == 1
    # the noisy variant: its runs disagree, so the seed-aware interval includes 0 ...
    assert not noisy["called"] and noisy["verdict"] == "not resolved" and noisy["low"] < 0 < noisy["high"]
    # ... although test-set sampling alone (an image-only interval) would have called it
    tables = {v: [per_image.read(path) for path in paths] for v, paths in study["runs"][100].items()}
    counts = bootstrap.stratified_counts(tables["none"][0]["has_pneumothorax"], 500, 0)
    run_mean = {
        v: np.mean([metric_samples(t, counts)["dice_positive"] for t in tables[v]], 0) for v in ("none", "autoencoder")
    }
    assert bootstrap.interval(noisy["diff"], run_mean["autoencoder"] - run_mean["none"])[0] > 0
    assert {d["dice_positive"]["test"] for d in scarce["vs_none"].values()} == {"Holm over 3"}  # none confirmatory

    # the transfer gap: labels gains more over none with a quarter of the films
    gap = saved["gap_differences"]["25"]["labels"]
    assert gap["diff"] > 0 and gap["test"] == "Holm over 3"
    assert saved["gap_differences"]["25"]["pseudo_labels"]["diff"] == 0

    vs_base = full["vs_baseline"]["labels"]
    assert vs_base["dice_positive"]["baseline"] == "location_prior" and vs_base["dice_positive"]["called"]
    assert vs_base["siim_dice"]["baseline"] == "all_empty" and "called" not in vs_base["siim_dice"]  # secondary
    sdd = full["smallest_detectable_difference"]
    assert (sdd["versus"], sdd["runs"], sdd["includes_run_variance"]) == ("none", 3, True) and sdd["dice_positive"] > 0

    # the gate: which positives it empties, per run, and how the primary follows them
    emptied = [int(((t["pred_pixels"] == 0) & (t["pred_pixels_ungated"] > 0)).sum()) for t in tables["none"]]
    assert full["gate"]["per_run"]["none"] == emptied and min(emptied) > 0
    assert full["gate"]["emptied_positives"]["none"] == pytest.approx(np.mean(emptied), abs=0.01)
    assert -1 <= full["gate"]["r_primary"] <= 1 and -1 <= saved["gate_r_all_runs"] <= 1
    missed = [int(((t["pred_pixels_ungated"] == 0) & t["has_pneumothorax"]).sum()) for t in tables["none"]]
    assert full["gate"]["missed_positives"]["none"] == pytest.approx(np.mean(missed), abs=0.01)

    # the per-run table and the runs still improving
    none_runs = saved["per_run"]["100"]["none"]
    assert [r["run"] for r in none_runs] == [0, 1, 2]
    assert none_runs[0] | {"dice_positive": None, "siim_dice": None, "auc": None} == {
        "run": 0,
        "dice_positive": None,
        "siim_dice": None,
        "auc": None,
        "gate_emptied": emptied[0],
        "selected_epoch": 11,
        "val_loss": 0.4,
        "epochs": 12,
        "best_epoch": 7,
        "plateau_met": True,
        "change": 0.004,
        "precision": "fp32",
    }
    assert none_runs[0]["dice_positive"] == pytest.approx(
        metric_samples(tables["none"][0], np.ones((1, 80)))["dice_positive"][0], abs=1e-6
    )
    assert saved["still_improving"] == ["100-none-2", "25-none-2"] and saved["plateau_not_recorded"] == []
    assert saved["training_films"] == {"100": 400, "25": 100}

    # the pseudo-labels: every run, and the seed-aware AMI difference over the runs (Holm over the latents)
    clustering = saved["clustering"]
    assert clustering["runs"] == 3 and [r["run"] for r in clustering["per_run"]] == [0, 1, 2]
    for row in clustering["per_run"]:
        assert row["ami_autoencoder"] > 0.1 and row["ami_p_autoencoder"] == 0.01  # 1 / (1 + 99 permutations)
        assert row["ami_low_raw_pixels"] <= row["ami_raw_pixels"] <= row["ami_high_raw_pixels"]
        assert row["nmi_chance_raw_pixels"] > 0
        assert not [k for k in row if k.startswith("winner")]  # one run calls nothing
    assert clustering["latents"] == ["autoencoder", "ssl", "raw_pixels"]
    assert clustering["pseudo_labels"] == "autoencoder"
    for latent in ("autoencoder", "ssl"):
        assert clustering["ami_minus_raw_pixels"][latent]["winner"] == latent
        assert clustering["ami_minus_raw_pixels"][latent]["method"] == bootstrap.T_RUNS_IMAGES
    assert clustering["ami"]["autoencoder"] > clustering["ami"]["ssl"] > clustering["ami"]["raw_pixels"]

    md = (tmp_path / "a.md").read_text()
    assert "**Every verdict below holds on these phantoms (synthetic data)**" in md
    assert "80 test images (24 with pneumothorax); 3 run(s) per variant (runs 0, 1, 2" in md
    assert "Primary endpoint: `dice_positive`" in md and "| dice_positive (primary) |" in md
    assert "Confirmatory contrast: `labels - none`" in md
    assert "## Confirmatory contrast: labels - none on `dice_positive`" in md and ": **resolved**." in md
    assert "## 100% of the training films (400 films)" in md and "## 25% of the training films (100 films)" in md
    section = md.split("## 100% of the training films")[1].split("## 25%")[0]
    assert re.search(r"\| none \| 3 \| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \|.* \| 75\.3 \|", section)
    assert "| all_empty (baseline) | – | " in section
    assert re.search(
        r"\| labels \| \+\d\.\d{3} \[\+\d\.\d{3}, \+\d\.\d{3}\] \| 3/3 runs \| .* \| confirmatory \| "
        r"\*\*resolved\*\* \|",
        section,
    )
    assert re.search(r"\| autoencoder \| .* \| Holm over 2 \| not resolved \|", section)
    secondary = section.split("Secondary endpoints")[1].split("SIIM's gate")[0]
    assert "nothing called" in secondary.splitlines()[0] and "**" not in secondary
    assert "dice_positive" not in secondary.split("\n\n")[1].splitlines()[0]  # the primary is not repeated there
    assert "## Transfer gap with 25% of the films minus with 100%" in md
    assert "| 100% | none | 2 | " in md and "⚠ still improving" in md and "still improving: 100-none-2" in md
    assert "## Pseudo-labels against chance" in md and "**autoencoder**" in md
    chance = md.split("## Pseudo-labels against chance")[1].split("##")[0]
    assert "| run | AMI autoencoder | p | AMI ssl | p | AMI raw pixels | p |" in chance
    assert "AMI difference, ssl minus raw pixels, over 3 run(s): +" in chance and "Holm-adjusted" in chance
    assert "80% power at two-sided 5% (noncentral t, 2 df)" in md

    # the headline: every variant and baseline with all the films, then the scarce share, the confirmatory contrast
    head = json.loads((tmp_path / "h.json").read_text())
    assert list(head) == [
        "none", "labels", "autoencoder", "pseudo_labels", "all_empty", "location_prior",
        "none@25", "labels@25", "autoencoder@25", "pseudo_labels@25", "confirmatory", "clustering",
    ]  # fmt: skip
    for name in ("none", "labels", "all_empty"):
        source = {**full["variants"], **saved["baselines"]}[name]["dice_positive"]
        half = round((source["high"] - source["low"]) / 2, 4)
        assert head[name] == {"dice_positive": round(source["value"], 4), "ci": half}
    assert head["none@25"]["dice_positive"] == round(scarce["variants"]["none"]["dice_positive"]["value"], 4)
    assert head["confirmatory"]["diff"] == round(c["diff"], 4) and head["confirmatory"]["detectable"] > 0
    assert head["clustering"] == {
        f"ami_{n}": round(clustering["ami"][n], 4) for n in ("autoencoder", "ssl", "raw_pixels")
    }
    assert not [k for k in keys(head) if "." in k or " " in k]


@pytest.mark.parametrize(("runs", "controls"), [([0, 1, 2], False), ([0, 1, 2, 3, 4], True), ([0, 1], True)])
def test_every_verdict_agrees_with_its_interval_and_p(tmp_path, runs, controls):
    """The report's one rule, on every row of every table it calls something on (the
    confirmatory contrast, each share's variants against none and against the baselines, the
    transfer gaps, the pseudo-label latents), with three variants and with five (the controls
    experiment's size), 2, 3 and 5 runs: the interval excludes 0 exactly when the verdict calls
    the difference, exactly when the adjusted p is below 0.05; and the Markdown bolds exactly
    those rows."""
    saved = run_report(tmp_path, make_study(tmp_path, runs, controls=controls), resamples=300)
    rows = verdict_rows(saved)
    assert len(rows) >= (27 if controls else 19)
    for name, d in rows:
        excludes = d["low"] > 0 or d["high"] < 0
        assert excludes == d["called"] == (d["adjusted_p"] < 0.05), (name, d)
        assert d["low"] <= d["diff"] <= d["high"], name
    assert any(d["called"] for _, d in rows) and not all(d["called"] for _, d in rows)
    md = (tmp_path / "a.md").read_text()
    bold = [line for line in md.splitlines() if line.startswith("| ") and "**resolved**" in line]
    table_rows = [d for name, d in rows if not name.startswith(("ami", "confirmatory"))]
    assert len(bold) == sum(d["called"] for d in table_rows)


def test_one_run_calls_nothing(tmp_path):
    """With one run the report shows image-only intervals, says that it calls nothing and
    why, and calls nothing: not the confirmatory contrast (even `labels`, clearly better on
    these images), not against the baselines, the gaps or between the pseudo-label latents."""
    saved = run_report(tmp_path, make_study(tmp_path, [0], synthetic=False))
    assert saved["method"] == bootstrap.IMAGES_ONLY and saved["holds_on"] == "this test split"
    for _, d in verdict_rows(saved):
        assert not d["called"] and d.get("verdict", d.get("winner")) in ("not called: one run",)
    c = saved["confirmatory"]
    assert c["p"] is None and c["low"] > 0  # the images alone would have "resolved" it
    assert saved["families"]["100"]["smallest_detectable_difference"]["includes_run_variance"] is False
    md = (tmp_path / "a.md").read_text()
    assert "**Every verdict below holds on this test split**" in md
    assert "**One run per variant: this report calls no difference between initialisations.**" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert not [line for line in rows if "**" in line]


def test_a_training_summary_without_the_plateau_rule_is_flagged(tmp_path):
    """A summary written before train_unet recorded the plateau rule (selected epoch only) is
    read, and its run is named as not recorded, apart from the runs still improving."""
    study = make_study(tmp_path, [0, 1])
    old = {"train": {"loss": 0.51}, "val": {"loss": 0.53}, "step": 5, "selected": {"epoch": 5, "val_loss": 0.53}}
    study["training"][100]["labels"][1].write_text(json.dumps(old))
    saved = run_report(tmp_path, study, resamples=100)
    row = saved["per_run"]["100"]["labels"][1]
    assert (row["selected_epoch"], row["val_loss"], row["plateau_met"], row["epochs"], row["precision"]) == (
        5,
        0.53,
        None,
        None,
        None,
    )
    assert saved["plateau_not_recorded"] == ["100-labels-1"]
    assert saved["still_improving"] == ["100-none-1", "25-none-1"]
    md = (tmp_path / "a.md").read_text()
    assert "| 100% | labels | 1 | " in md and "| 5 | n/a | ⚠ not recorded | n/a | n/a |" in md
    assert "does not record the plateau rule: 100-labels-1." in md


def test_report_fails_on_a_file_with_other_image_order(tmp_path):
    study = make_study(tmp_path, [0, 1])
    bad = study["runs"][100]["labels"][1]
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    with pytest.raises(ValueError, match=re.escape(str(bad))) as error:
        run_report(tmp_path, study, resamples=10)
    assert "\n" not in str(error.value) and "order" in str(error.value)
    assert not (tmp_path / "a.json").exists()


def test_stage_reads_params_and_writes_both_files(root, tmp_path, tiny_cxr14, tiny_siim_films):
    make_study(tmp_path, [0, 1, 2])
    for r in (0, 2):  # a real probe table: random encoders on tiny films
        runtime.seed_everything(r)
        models.save_checkpoint(tmp_path / "encoders" / f"none-{r}.safetensors", models.build_encoder(1))
    linear_probe.linear_probe(
        images_dir=tiny_cxr14,
        siim_dir=tiny_siim_films,
        encoders_dir=tmp_path / "encoders",
        encoders=["none"],
        run_ids=[0, 2],
        classes=["No Finding", "Effusion", "Pneumothorax"],
        c=0.1,
        resamples=50,
        seed=0,
        out_path=tmp_path / "linear_probe.json",
        device="cpu",
    )
    (tmp_path / "params.yaml").write_text(
        "seed: 7\nruns: [0, 2]\ntrain_unet: {variants: [none, labels], shares: [100]}\n"
        "report: {resamples: 50, primary: dice_positive, confirmatory: labels, effect_of_interest: 0.047}\n"
        "train_ssl: {initialisations: [ssl]}\n"
    )
    cmd = [sys.executable, str(root / "stages" / "report.py"), "--results", "evaluate", "--baselines", "baselines"]
    for name, met in (
        ("train_autoencoder/0", True),
        ("train_autoencoder/2", False),
        ("train_ssl/0", True),
        ("train_ssl/2", True),
        ("pretrain_encoder/labels-0", True),
        ("pretrain_encoder/labels-2", False),
    ):
        plateau = {"met": met, "change": 0.01 if met else 0.07, "epochs": 16, "best_epoch": 15}
        if name.endswith("labels-2"):  # stopped after too few epochs for the rule to say anything
            plateau = {"met": False, "change": None, "epochs": 1, "best_epoch": 0}
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.json").write_text(json.dumps({"plateau": plateau}))
    cmd += ["--training", "train_unet", "--pseudo-labels", "pseudo_labels"]
    cmd += ["--autoencoders", "train_autoencoder", "--ssl", "train_ssl", "--pretraining", "pretrain_encoder"]
    cmd += [
        "--linear-probe",
        "linear_probe.json",
        "--json",
        "m/ablation.json",
        "--md",
        "m/ablation.md",
        "--headline",
        "m/h.json",
        "--charts",
        "m/charts",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "m" / "ablation.json").read_text())
    assert list(saved["families"]) == ["100"] and saved["gap_differences"] == {}
    assert list(saved["families"]["100"]["variants"]) == ["none", "labels"] and saved["resamples"] == 50
    assert saved["run_ids"] == [0, 2] and [r["run"] for r in saved["clustering"]["per_run"]] == [0, 2]
    assert saved["still_improving"] == ["100-none-2"]
    assert list(saved["baselines"]) == ["all_empty", "location_prior"]
    md = (tmp_path / "m" / "ablation.md").read_text()
    assert md.startswith("# Ablation")
    # the encoders' own training: the labels pretraining of runs 0 and 2 (none is not pretrained), both
    # autoencoders and ssl encoders
    assert list(saved["upstream_training"]) == [
        "train_autoencoder@0",
        "train_autoencoder@2",
        "train_ssl@ssl-0",
        "train_ssl@ssl-2",
        "pretrain_encoder@labels-0",
        "pretrain_encoder@labels-2",
    ]
    assert (
        "still improving: train_autoencoder@2 (16 epochs, still 7.0% better), pretrain_encoder@labels-2 (1 epochs)."
        in md
    )
    probe = md.split("## Linear probe")[1].split("\n## ")[0]
    assert "scored on the 40 films of the `probe` split, which no encoder trained" in probe
    assert re.search(r"\| none \| 0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\] \| – \|", probe)
    assert "| encoder | layer1 | layer2 | layer3 | layer4 |" in probe  # by layer, CXR-14 then SIIM
    siim = probe.split("### The target")[1]
    assert "fitted on the 60 SIIM training films and scored on the 30 validation films (10 with a pneumothorax)" in siim
    assert re.search(r"\| none \| [01]\.\d{3} \[[01]\.\d{3}, [01]\.\d{3}\] \| [01]\.\d{3}", siim)
    head = json.loads((tmp_path / "m" / "h.json").read_text())
    assert list(head) == ["none", "labels", "all_empty", "location_prior", "confirmatory", "clustering", "linear_probe"]
    assert head["linear_probe"] == {
        "macro_auc_none": round(saved["linear_probe"]["encoders"]["none"]["macro_auc"]["value"], 4)
    }
    assert "confirmatory labels - none on dice_positive: resolved" in proc.stderr


def test_review_chart_data_covers_every_variant_and_run(tmp_path):
    """forest.json mirrors the ablation's differences with all the films; Dice by size averages
    the runs of each variant per quartile of true mask area; the curves average the runs that
    reached an epoch."""
    study = make_study(tmp_path, [0, 1, 2])
    for summaries in study["training"][100].values():  # per-epoch losses beside each training summary
        for r, summary in enumerate(summaries):
            tsv = Path(summary).parent / "plots" / "metrics" / "val" / "loss.tsv"
            tsv.parent.mkdir(parents=True, exist_ok=True)
            epochs = 3 + r  # runs of different lengths (an older plateau-stopped study)
            tsv.write_text("step\tloss\n" + "".join(f"{e}\t{1.0 / (e + 1) + r * 0.1}\n" for e in range(epochs)))
    saved = run_report(tmp_path, study, charts_dir=tmp_path / "charts")
    vs_none = saved["families"]["100"]["vs_none"]
    forest = json.loads((tmp_path / "charts" / "forest.json").read_text())
    assert {(r["variant"], r["metric"]) for r in forest} == {(v, m) for v in vs_none for m in METRICS}
    for row in forest:
        assert row["diff"] == vs_none[row["variant"]][row["metric"]]["diff"]
        assert row["primary"] == (row["metric"] == "dice_positive")
    sizes = json.loads((tmp_path / "charts" / "dice_by_size.json").read_text())
    assert {r["variant"] for r in sizes} == set(study["runs"][100]) and len(sizes) == 4 * report.SIZE_BINS
    assert sum(r["images"] for r in sizes if r["variant"] == "none") == saved["test_positive"]
    assert all(r["low"] <= r["dice_positive"] <= r["high"] for r in sizes)
    loss = json.loads((tmp_path / "charts" / "val_loss.json").read_text())
    none = {r["epoch"]: r for r in loss if r["variant"] == "none"}
    assert sorted(none) == [0, 1, 2, 3, 4] and [none[e]["runs"] for e in range(5)] == [3, 3, 3, 2, 1]
    assert none[0]["mean"] == pytest.approx(1.1) and (none[0]["low"], none[0]["high"]) == (1.0, 1.2)
    assert json.loads((tmp_path / "charts" / "train_loss.json").read_text()) == []  # no such curves logged


def stage_main(root: Path):
    """stages/report.py's main(), imported as a test imports a stage script."""
    spec = importlib.util.spec_from_file_location("report_stage", root / "stages" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("ssl", ["absent", "left by an earlier experiment", "not given"])
def test_the_stage_reads_ssl_only_when_the_params_train_it(root, tmp_path, monkeypatch, ssl):
    """ssl's pretraining is an experiment (train_ssl.initialisations): without it in the params the
    report leaves out ssl's plateau rows, whatever lies in its folder, and names only the stages
    it read; everything else is what the same run with ssl writes."""
    make_study(tmp_path, [0, 1])
    shutil.copy(root / "metrics" / "linear_probe.json", tmp_path / "linear_probe.json")
    params = (
        "seed: 7\nruns: [0, 1]\ntrain_unet: {variants: [none, labels], shares: [100, 25]}\n"
        "report: {resamples: 50, primary: dice_positive, confirmatory: labels, effect_of_interest: 0.047}\n"
    )
    (tmp_path / "params.yaml").write_text(params + "train_ssl: {initialisations: []}\n")
    autoencoders = ["train_autoencoder@0", "train_autoencoder@1"]
    pretraining = ["pretrain_encoder@labels-0", "pretrain_encoder@labels-1"]
    for name in (
        "train_autoencoder/0",
        "train_autoencoder/1",
        "pretrain_encoder/labels-0",
        "pretrain_encoder/labels-1",
    ):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.json").write_text(json.dumps({"plateau": {"met": True, "epochs": 9}}))
    monkeypatch.chdir(tmp_path)
    args = ["--results", "evaluate", "--baselines", "baselines", "--training", "train_unet"]
    args += ["--pseudo-labels", "pseudo_labels", "--autoencoders", "train_autoencoder"]
    args += ["--pretraining", "pretrain_encoder", "--linear-probe", "linear_probe.json", "--charts", "charts"]
    args += ["--json", "ablation.json", "--md", "ablation.md", "--headline", "h.json"]

    def train_ssl_metrics():
        for r in (0, 1):
            (tmp_path / "train_ssl" / str(r)).mkdir(parents=True, exist_ok=True)
            (tmp_path / "train_ssl" / str(r) / "metrics.json").write_text(json.dumps({"plateau": {"met": True}}))

    if ssl == "left by an earlier experiment":
        train_ssl_metrics()
    main = stage_main(root)
    main([*args, *([] if ssl == "not given" else ["--ssl", "train_ssl"])])
    without = {name: (tmp_path / name).read_text() for name in ("ablation.json", "ablation.md", "h.json")}
    train_ssl_metrics()  # the same run with ssl trained
    (tmp_path / "params.yaml").write_text(params + "train_ssl: {initialisations: [ssl]}\n")
    main([*args, "--ssl", "train_ssl"])
    saved, with_ssl = json.loads(without["ablation.json"]), json.loads((tmp_path / "ablation.json").read_text())
    assert list(saved["upstream_training"]) == [*autoencoders, *pretraining]
    assert list(with_ssl["upstream_training"]) == [*autoencoders, "train_ssl@ssl-0", "train_ssl@ssl-1", *pretraining]
    for name in ("train_ssl@ssl-0", "train_ssl@ssl-1"):
        del with_ssl["upstream_training"][name]
    assert saved == with_ssl and without["h.json"] == (tmp_path / "h.json").read_text()
    sentence = "The training that made the encoders ({} stage runs: autoencoders, {}encoder pretraining) stops"
    assert sentence.format(4, "") in without["ablation.md"]
    with_ssl_md = without["ablation.md"].replace(sentence.format(4, ""), sentence.format(6, "ssl, "))
    assert with_ssl_md == (tmp_path / "ablation.md").read_text()


def test_the_report_shows_how_fast_each_variant_converged(tmp_path):
    """From the validation Dice on positives logged per epoch beside each U-Net's summary: the
    epochs until 95% of the run's best, per variant and share, with the difference from none;
    shares whose curves were not logged have no row."""
    study = make_study(tmp_path, [0, 1, 2])
    # the epoch (1-based) at which each run first reaches 95% of its best
    reached = {"none": [4, 5, 6], "labels": [2, 2, 3], "autoencoder": [5, 5, 6], "pseudo_labels": [6, 6, 7]}
    for variant, summaries in study["training"][100].items():
        for r, summary in enumerate(summaries):
            tsv = Path(summary).parent / "plots" / "metrics" / "val" / "dice_positive.tsv"
            tsv.parent.mkdir(parents=True, exist_ok=True)
            curve = [0.1] * (reached[variant][r] - 1) + [0.96, 1.0, 0.9]
            tsv.write_text("step\tdice_positive\n" + "".join(f"{e}\t{v}\n" for e, v in enumerate(curve)))
    saved = run_report(tmp_path, study)
    rows = saved["convergence"]["100"]
    assert {v: rows[v]["per_run"] for v in rows} == reached and saved["convergence"]["25"] == {}
    assert rows["labels"]["minus_none"]["value"] == pytest.approx(-8 / 3)
    assert rows["labels"]["minus_none"]["high"] < 0  # every run faster by 2-3 epochs: a narrow interval
    table = (tmp_path / "a.md").read_text().split("## Convergence speed")[1].split("##")[0]
    assert "| 100% | labels | 2.3 [" in table and "| 100% | none | 5.0 [" in table
