"""dvc.yaml's dependencies can be trusted: every stage declares every module of src/pneumo
its script imports (directly or through other modules) and every path on its command line
is a declared dependency or output. Otherwise a change there would rerun too little,
silently."""

import ast
from pathlib import Path

import pytest
import yaml

# the stages are test parameters, read at collection, before any fixture (such as `root`) exists
ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_file(name: str) -> Path | None:
    """The file of a `pneumo...` module or package, None for anything else."""
    if name != "pneumo" and not name.startswith("pneumo."):
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported(path: Path) -> set[Path]:
    """Files of the pneumo modules a file imports, with their packages' __init__ files."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # a submodule imported by name
    files = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            found = module_file(".".join(parts[:i]))
            if found:
                files.add(found)
    return files


def closure(script: Path) -> set[Path]:
    seen, todo = set(), [script]
    while todo:
        for f in imported(todo.pop()) - seen:
            seen.add(f)
            todo.append(f)
    return seen


def stages() -> dict[str, dict]:
    """Every stage of dvc.yaml as DVC resolves it (foreach/matrix instances, params filled
    in), one representative instance per stage: its command, dependencies and outputs."""
    from dvc.repo import Repo

    out = {}
    for stage in Repo(str(ROOT)).index.stages:
        name = stage.addressing.split("@")[0]
        if name not in out:
            out[name] = {
                "cmd": stage.cmd,
                "deps": [d.def_path for d in stage.deps if d.def_path != "params.yaml"],
                "outs": [o.def_path for o in stage.outs],
            }
    return out


def declared(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def covered(path: str, declared_paths: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared_paths)


def missing_deps(stage: dict) -> list[str]:
    """What the stage uses and does not declare: modules in its import closure, and paths on
    its command line that are neither a dependency nor an output."""
    deps = declared(stage.get("deps"))
    outputs = [p for kind in ("outs", "metrics", "plots") for p in declared(stage.get(kind))]
    words = stage["cmd"].split()
    script = ROOT / next(w for w in words if w.startswith("stages/"))
    launched = [module_file(words[i + 1]) for i, w in enumerate(words) if w == "-m"]
    modules = closure(script) | {f for f in launched if f} | {f for f in launched if f for f in closure(f)}
    rel = sorted(str(f.relative_to(ROOT)) for f in modules)
    missing = [f for f in [str(script.relative_to(ROOT)), *rel] if not covered(f, deps)]
    for word in words:
        # a folder whose declared files the stage opens (the dvclive folder, a model folder) counts too
        holds_declared = any(covered(d, [word]) for d in deps + outputs)
        if (
            "/" in word
            and not word.startswith(("-", "stages/"))
            and not (covered(word, deps + outputs) or holds_declared)
        ):
            missing.append(word)
    return missing


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_stage_declares_what_it_imports_and_reads(name):
    assert missing_deps(stages()[name]) == []


def test_a_planted_undeclared_import_is_caught(tmp_path, monkeypatch):
    """The check itself can fail: a stage whose module imports a module it does not declare."""
    stage = stages()["report"]
    assert missing_deps(stage) == []
    planted = dict(stage, deps=[d for d in declared(stage["deps"]) if d != "src/pneumo/formats"])
    assert "src/pneumo/formats/per_image.py" in missing_deps(planted)
    unread = dict(stage, deps=[d for d in declared(stage["deps"]) if d != "metrics/baselines"])
    assert "metrics/baselines" in missing_deps(unread)


def test_only_the_headline_is_a_metric_and_every_comparison_chart_has_every_variant():
    """`dvc exp show` lists one small metrics file; the top-level charts have short ids and
    either come from the report's chart data (every variant and run, by construction: see
    tests/test_report.py) or list run 0 of every variant with all the films by hand (DVC cannot loop over
    params there); every custom template they name is in .dvc/plots/."""
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    declared = []
    for stage in pipeline["stages"].values():
        body = stage.get("do", stage)
        declared += [next(iter(m)) if isinstance(m, dict) else m for m in body.get("metrics", [])]
    assert declared == ["metrics/headline.json"]
    # run 0 of every variant with all the training films (the largest share)
    full = max(params["train_unet"]["shares"])
    runs = [f"{full}/{variant}-{params['runs'][0]}" for variant in params["train_unet"]["variants"]]
    ids = []
    for chart in pipeline["plots"]:
        ((plot_id, spec),) = chart.items()
        ids.append(plot_id)
        assert len(plot_id) <= 20 and " " not in plot_id, plot_id
        files = list(spec["y"])
        if all(f.startswith("metrics/charts/") for f in files):
            assert len(files) == 1 and (ROOT / ".dvc" / "plots" / f"{spec['template']}.json").exists(), plot_id
        else:
            assert ["/".join(path.split("/")[2:4]) for path in files] == runs, plot_id
    assert {"forest", "dice_by_size", "val_loss", "roc"} <= set(ids)
    artifacts = {name: a["path"] for name, a in pipeline["artifacts"].items()}
    assert sorted(artifacts.values()) == sorted(f"models/unet/{run}/model.safetensors" for run in runs)
    assert all(a["type"] == "model" for a in pipeline["artifacts"].values())


def test_the_lock_holds_exactly_the_pipelines_stages():
    """`dvc.lock` lists the stages `dvc stage list` shows and no others: an entry of a stage that no
    longer exists is output nobody builds, and a reviewer reading `git diff dvc.lock` is misled."""
    from dvc.repo import Repo

    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    defined = {stage.addressing for stage in Repo(str(ROOT)).index.stages}
    assert sorted(locked - defined) == [] and sorted(defined - locked) == []
