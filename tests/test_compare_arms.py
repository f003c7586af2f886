"""tools/compare_arms.py on a small git repository with two or three commits of per-image tables:
identical arms differ by exactly 0 and resolve nothing, an arm whose pretrained variant predicts
clearly better is resolved with a positive difference, and a DVC experiment is found by name."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from per_image_tables import rows_from_counts, write_csv

ROOT = Path(__file__).resolve().parents[1]
RUNS, IMAGES = (0, 1, 2), 40
PARAMS = "seed: 42\nreport:\n  primary: dice_positive\n  resamples: 300\n"


def tool():
    spec = importlib.util.spec_from_file_location("compare_arms", ROOT / "tools" / "compare_arms.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_arms"] = module
    spec.loader.exec_module(module)
    return module


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, gain: float) -> str:
    """Per-image tables for share 100, `none` and `labels`, runs 0-2: `labels` overlaps each
    positive's mask by a run-dependent share, raised by `gain`; `none` never changes."""
    rng = np.random.default_rng(0)
    positive = np.arange(IMAGES) % 2 == 0
    mask = np.where(positive, 100, 0)
    for variant, base in (("none", 0.3), ("labels", 0.5)):
        for run in RUNS:
            share = np.clip(base + rng.uniform(-0.2, 0.2, IMAGES) + (gain if variant == "labels" else 0), 0, 1)
            inter = np.round(share * mask).astype(int)
            rows = rows_from_counts([f"img{i}" for i in range(IMAGES)], positive, mask, mask, inter, positive * 0.9)
            write_csv(repo / "metrics" / "evaluate" / "100" / f"{variant}-{run}" / "per_image.csv", rows)
    (repo / "params.yaml").write_text(PARAMS)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", f"gain {gain}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> Path:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.org")
    git(tmp_path, "config", "user.name", "t")
    return tmp_path


def rows(repo: Path, base: str, exp: str, capsys) -> dict[str, dict]:
    out = repo / "arms.json"
    tool().main([base, exp, "--repo", str(repo), "--json", str(out)])
    assert "| 100% | labels | 3 |" in capsys.readouterr().out
    return {r["variant"]: r for r in json.loads(out.read_text())["rows"]}


def test_identical_arms_differ_by_zero_and_resolve_nothing(repo, capsys):
    base = commit(repo, 0.0)
    same = commit(repo, 0.0)  # the same tables: an empty commit
    found = rows(repo, base, same, capsys)
    assert found["labels"]["diff"] == 0 and found["labels"]["verdict"] == "not resolved"
    assert found["labels"]["test"] == "Holm over 1"
    assert found["none"]["diff"] == 0 and found["none"]["verdict"] == "identical"


def test_a_clearly_better_arm_is_resolved_and_found_by_experiment_name(repo, capsys):
    base = commit(repo, 0.0)
    better = commit(repo, 0.3)
    git(repo, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/better-arm", better)
    git(repo, "reset", "-q", "--hard", base)
    found = rows(repo, base, "better-arm", capsys)
    labels = found["labels"]
    assert labels["verdict"] == "resolved" and 0.2 < labels["diff"] and labels["low"] > 0
    assert labels["exp"] - labels["base"] == pytest.approx(labels["diff"], abs=1e-5)
    assert found["none"]["verdict"] == "identical"


def test_an_unknown_experiment_name_is_an_error(repo, capsys):
    base = commit(repo, 0.0)
    with pytest.raises(SystemExit, match="no-such-arm"):
        tool().main([base, "no-such-arm", "--repo", str(repo)])
