"""A clone outside this machine: installable into an existing environment (ranges in
pyproject.toml, exact tested pins in constraints.txt that `make` uses), and tests that
need the real samples skip with a reason there, while CI refuses to run without them; a clone
installed with `pip install -e .` alone (no make) draws `dvc plots` offline. The wheel's base
requirements are what `pneumo predict` and `pneumo score` import; the pipeline's tools and the
GPL-3.0 JPEG codec are extras."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

# not in the base package: the pipeline's tools and the GPL-3.0 codec (the `pipeline` and `jpeg` extras)
NOT_IN_BASE = {"dvc", "dvclive", "lightly", "scikit-learn", "scipy", "matplotlib", "pylibjpeg-libjpeg"}
# what `pneumo predict` and `pneumo score` run: the command line and the engines behind it
ENTRY_MODULES = ["pneumo.cli", "pneumo.core.predict", "pneumo.core.score"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.lower())


def test_dependencies_are_ranges_and_constraints_pin_each_exactly(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [Requirement(r) for r in project["dependencies"] + [r for group in extras.values() for r in group]]
    requirements = [r for r in requirements if canonical(r.name) != "pneumo"]  # `dev` names the other extras
    assert {"pipeline", "jpeg", "dev"} <= set(extras)
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
    assert "-c constraints.txt" in (root / "Makefile").read_text() and "-e '.[dev]'" in (root / "Makefile").read_text()


def _wheel(root: Path, tmp_path: Path) -> Path:
    """A wheel built from the project's sources (copied, so the checkout gets no build folders)."""
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "src" / "pneumo", src / "src" / "pneumo", ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."]
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("pneumo-*.whl")
    return wheel


def test_the_wheel_installs_what_predict_needs_and_names_its_licence(root, tmp_path):
    wheel = _wheel(root, tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = Parser().parsestr(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    base = {canonical(r.name) for r in requires if r.marker is None}
    assert base and not base & NOT_IN_BASE, base & NOT_IN_BASE
    assert {"torch", "segmentation-models-pytorch", "pydicom", "numpy", "safetensors"} <= base

    def extra(name):
        return {canonical(r.name) for r in requires if r.marker and r.marker.evaluate({"extra": name})}

    assert {"dvc", "dvclive", "lightly"} <= extra("pipeline") and extra("jpeg") == {"pylibjpeg-libjpeg"}
    assert meta["License-Expression"] == "MIT" and any(n.endswith("licenses/LICENSE") for n in names)
    assert meta.get_all("Classifier") and meta.get_all("Project-URL")
    assert "pneumo/core/model_card.md" in names  # package data predict's model card reads


def _module_file(root: Path, name: str) -> Path | None:
    base = root / "src" / Path(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()), None)


def _imports(tree: ast.Module, package: str):
    """(module name, at module level?) for every import in a module, relative ones resolved."""
    module_level = {id(node) for stmt in tree.body for node in ast.walk(stmt) if not _in_function(stmt, node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # `from . import x` in package a.b is a.b.x; `from .. import x`, a.x
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            yield name, id(node) in module_level


def _in_function(stmt: ast.stmt, node: ast.AST) -> bool:
    """Whether `node`, inside the top-level statement `stmt`, sits in a function or method body."""
    for parent in ast.walk(stmt):
        if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and parent is not node:
            if any(child is node for child in ast.walk(parent)):
                return True
    return False


def _module_level_imports(root: Path, entries: list[str]) -> dict[str, set[str]]:
    """Third-party modules imported at module level anywhere in the import closure of `entries`
    (pneumo modules are followed wherever they are imported: the command line imports its
    engines lazily), each with the files that import it."""
    seen, todo, third_party = set(), list(entries), {}
    while todo:
        name = todo.pop()
        path = _module_file(root, name)
        if path is None or path in seen:
            continue
        seen.add(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported, module_level in _imports(ast.parse(path.read_text()), package):
            top = imported.split(".")[0]
            if top == "pneumo":
                parts = imported.split(".")
                todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            elif module_level and top and top not in sys.stdlib_module_names:
                third_party.setdefault(top, set()).add(path.relative_to(root).as_posix())
    return third_party


def _outside_base(root: Path, third_party: dict[str, set[str]]) -> dict[str, set[str]]:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    base = {canonical(Requirement(r).name) for r in project["dependencies"]}
    owners = {module: {canonical(d) for d in dists} for module, dists in packages_distributions().items()}
    return {m: files for m, files in third_party.items() if not owners.get(m, {m}) & base}


def test_predict_and_score_import_only_the_base_package_at_module_level(root):
    third_party = _module_level_imports(root, ENTRY_MODULES)
    assert {"numpy", "torch", "pydicom"} <= set(third_party)
    outside = _outside_base(root, third_party)
    assert not outside, f"imported at module level by predict/score but not a base requirement: {outside}"


def test_a_planted_pipeline_import_is_caught(root, tmp_path):
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "src" / "pneumo" / "core").mkdir(parents=True)
    (tmp_path / "src" / "pneumo" / "__init__.py").write_text("")
    (tmp_path / "src" / "pneumo" / "core" / "__init__.py").write_text("")
    (tmp_path / "src" / "pneumo" / "cli.py").write_text("def main():\n    from pneumo.core import score\n")
    (tmp_path / "src" / "pneumo" / "core" / "score.py").write_text(
        "import numpy\nfrom sklearn.metrics import f1_score\n\ndef lazy():\n    import matplotlib\n"
    )
    outside = _outside_base(tmp_path, _module_level_imports(tmp_path, ["pneumo.cli"]))
    assert outside == {"sklearn": {"src/pneumo/core/score.py"}}  # module level only; numpy is base


@pytest.mark.slow  # a fresh interpreter imports torch and segmentation-models-pytorch: seconds
def test_predict_and_score_run_without_the_pipeline_packages(root, tmp_path):
    """The command line and both engines import, and `pneumo score` runs, in an interpreter where
    the `pipeline` extra cannot be imported. (The `jpeg` extra cannot be hidden this way: pylibjpeg
    finds its installed plugins by their entry points; the wheel test keeps it out of the base.)"""
    blocked = ["dvc", "dvclive", "lightly", "sklearn", "scipy", "matplotlib"]
    (tmp_path / "labels.csv").write_text("ImageId,EncodedPixels\na,1 2\nb,-1\n")
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"blocked: {{name}}", name=name)
sys.meta_path.insert(0, Block())
import pneumo.cli, pneumo.core.predict, pneumo.core.score
sys.exit(pneumo.cli.main(["score", {str(tmp_path / "labels.csv")!r}, {str(tmp_path / "labels.csv")!r}, "--size", "4"]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


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
