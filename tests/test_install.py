"""A clone outside this machine: installable into an existing environment (ranges in
pyproject.toml, exact tested pins in constraints.txt that `make` uses), and tests that
need the real samples skip with a reason there, while CI refuses to run without them; a clone
installed with `pip install -e .` alone (no make) draws `dvc plots` offline."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement


def test_dependencies_are_ranges_and_constraints_pin_each_exactly(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    for req in requirements:
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{req}: exact pin in pyproject.toml"
        name = re.sub(r"[-_.]+", "-", req.name.lower())
        assert name in pins, f"{req.name} has no exact version in constraints.txt"
        assert req.specifier.contains(pins[name]), f"constraints.txt {req.name}=={pins[name]} is outside {req}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "-c constraints.txt" in (root / "Makefile").read_text()


def test_ci_refuses_to_run_without_the_real_samples(root, tmp_path):
    env = {**os.environ, "PNEUMO_REALDATA": str(tmp_path / "nowhere")}
    proc = subprocess.run(["bash", str(root / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "real samples are missing" in proc.stderr and "nowhere" in proc.stderr


@pytest.mark.slow  # a fresh pytest process imports torch: seconds
def test_tests_needing_real_samples_skip_with_a_reason(root, tmp_path):
    env = {**os.environ, "PNEUMO_REALDATA": str(tmp_path / "nowhere")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_cxr14.py"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "2 passed, 4 skipped" in proc.stdout  # two tests there need no real sample
    assert f"real samples not found at {tmp_path / 'nowhere'}" in proc.stdout and "PNEUMO_REALDATA" in proc.stdout


def test_plots_render_offline_in_a_clone_installed_without_make(root, tmp_path):
    # what a clone gets: every file git tracks or would add (no ignored, generated ones); the
    # environment is this one, which `pip install -e .` alone makes, so no make step has run
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    clone = tmp_path / "clone"
    for name in filter(None, listed):
        if (root / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, clone / name)
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "plots")],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    page = (tmp_path / "plots" / "index.html").read_text(encoding="utf-8")
    assert "window.vegaEmbed=" in page and not re.search(r"<script[^>]*\ssrc=", page)  # inlined, no CDN
    specs = [json.loads(s) for s in re.findall(r"var spec = (\{.*?\});\s*vegaEmbed\(", page, re.S)]
    assert specs, "no chart in the page"
    for spec in specs:  # vega-lite 5 specs with their data inline, for the inlined vega-lite 5
        assert spec["$schema"] == "https://vega.github.io/schema/vega-lite/v5.json" and spec["data"]["values"]
