"""Every stage reads exactly the params its dvc.yaml entry declares. A key a stage reads but
does not declare changes its results without DVC rerunning it; a key it declares but never
reads reruns it for nothing. Tasks never see params.yaml (they take keyword arguments), so a
stage's reads are its script's: read from the source, where params are reached only by literal
keys (`p["train_unet"]["lr"]`) or through `runtime.from_params(p, seed)`."""

import ast
import functools
import re
from pathlib import Path

import pytest
import yaml

from pneumo.core import runtime

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def script_reads(source: str) -> tuple[set[str], list[str]]:
    """The params.yaml keys a stage script reads: each literal subscript chain on a name bound
    to `params.load()` (`p["train_unet"]["lr"]` -> `train_unet.lr`, `**p["evaluate"]` -> the
    whole `evaluate` section), and `runtime.PARAMS` where `p` goes to `runtime.from_params`.
    Every other use of `p` (passed on, iterated, subscripted by a variable) is returned as a
    problem, since what it reads cannot be seen."""
    tree = ast.parse(source)
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    loaded = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and ast.unparse(node.value.func) == "params.load"
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    reads, problems = set(), []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id in loaded and isinstance(node.ctx, ast.Load)):
            continue
        path, here = [], node
        while isinstance(parent.get(here), ast.Subscript) and parent[here].value is here:
            key = parent[here].slice
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                break
            path.append(key.value)
            here = parent[here]
        up = parent.get(here)
        if path and not (isinstance(up, ast.Attribute) and isinstance(parent.get(up), ast.Call)):
            reads.add(".".join(path))  # p["a"]["b"] used as a value; p["a"].items() & co are not literal
        elif not path and isinstance(up, ast.Call) and ast.unparse(up.func) == "runtime.from_params":
            reads |= set(runtime.PARAMS)
        else:
            problems.append(
                f"line {node.lineno}: `{ast.unparse(here if path else node)}` used other than by literal keys"
            )
    return reads, problems


def keys(paths) -> set[str]:
    """Param paths down to the keys of sections: a whole section counts as each of its keys."""
    out = set()
    for path in paths:
        section, _, rest = path.partition(".")
        value = PARAMS.get(section)
        out |= {f"{section}.{k}" for k in value} if not rest and isinstance(value, dict) else {path}
    return out


def interpolated(definition: dict) -> set[str]:
    """Params a stage's dvc.yaml entry uses through `${...}` (its command, deps, outs), not the
    foreach/matrix lists that decide which instances exist, nor the instance's own `item`."""
    body = {k: v for k, v in definition.items() if k not in ("foreach", "matrix")}
    body = body.get("do", body)
    names = re.findall(r"\$\{\s*([\w.]+)\s*\}", yaml.safe_dump(body))
    return {n for n in names if n != "item" and not n.startswith("item.")}


@functools.cache
def stages() -> dict[str, dict]:
    """Per stage (one instance of each foreach/matrix): its script, the params it declares
    (as DVC resolves them) and the params its entry interpolates."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for stage in Repo(str(ROOT)).index.stages:
        name = stage.addressing.split("@")[0]
        if name in out:
            continue
        script = next(w for w in stage.cmd.split() if w.startswith("stages/"))
        declared = [p for d in stage.deps if isinstance(d, ParamsDependency) for p in d.params]
        out[name] = {"script": ROOT / script, "declared": declared, "interpolated": interpolated(raw[name])}
    return out


def mismatch(source: str, declared: list[str], used_by_dvc: set[str]) -> dict[str, list[str]]:
    reads, problems = script_reads(source)
    return {
        "undeclared": sorted(keys(reads) - keys(declared)),
        "unread": sorted(keys(declared) - keys(reads | used_by_dvc)),
        "unseen": problems,
    }


CLEAN = {"undeclared": [], "unread": [], "unseen": []}


@pytest.mark.parametrize("name", sorted(stages()))
def test_a_stage_reads_exactly_the_params_it_declares(name):
    stage = stages()[name]
    assert mismatch(stage["script"].read_text(), stage["declared"], stage["interpolated"]) == CLEAN


def test_a_planted_undeclared_read_is_caught():
    stage = stages()["train_unet"]
    source = stage["script"].read_text()
    planted = source.replace('"lr": p["train_unet"]["lr"],', '"lr": p["train_unet"]["lr"] * p["train_unet"]["warmup"],')
    assert planted != source
    assert mismatch(planted, stage["declared"], stage["interpolated"])["undeclared"] == ["train_unet.warmup"]
    # the stage as it was: the whole section minus `variants` went to the task, 8 keys declared
    old = 'p = params.load()\nstage = {k: v for k, v in p["train_unet"].items() if k != "variants"}\n'
    assert mismatch(old, stage["declared"], set())["unseen"] == [
        "line 2: `p['train_unet']` used other than by literal keys"
    ]
    whole = 'p = params.load()\ntrain_unet(**p["train_unet"])\n'
    assert mismatch(whole, stage["declared"], set())["undeclared"] == ["train_unet.shares", "train_unet.variants"]


def test_a_declared_param_nothing_reads_is_caught():
    stage = stages()["evaluate"]
    found = mismatch(stage["script"].read_text(), [*stage["declared"], "report.resamples"], stage["interpolated"])
    assert found["unread"] == ["report.resamples"]
