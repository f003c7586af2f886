"""The layers of the package hold: formats <- core <- tasks <- stage scripts, each importing
only the layers below it; a task module is the engine of its own stage only; no task decides
by comparing an initialisation's name (the registry's objects carry the behaviour); code that
only tests use lives in tests/."""

import ast
from pathlib import Path

import pytest

from pneumo.core import initialisations

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "pneumo"


def imports(path: Path) -> set[str]:
    """Every module name a file imports (`from a.b import c` gives a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("formats", ("pneumo.core", "pneumo.tasks", "pneumo.params")),
        ("core", ("pneumo.tasks", "pneumo.params")),
        ("tasks", ("pneumo.params",)),
    ],
)
def test_a_layer_imports_only_the_layers_below_it(layer, forbidden):
    wrong = {
        str(path.relative_to(ROOT)): sorted(n for n in imports(path) if n.startswith(forbidden))
        for path in modules(PACKAGE / layer)
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_a_task_module_is_imported_only_by_its_stage_script():
    """Tests and the benchmarks that time a stage drive tasks too; nothing else in the project."""
    users = {}
    for path in [*modules(PACKAGE), *modules(ROOT / "stages"), *modules(ROOT / "tools")]:
        for name in imports(path):
            if name.startswith("pneumo.tasks."):
                task = name.split(".")[2]
                if path not in (ROOT / "stages" / f"{task}.py", PACKAGE / "tasks" / f"{task}.py"):
                    users.setdefault(task, []).append(str(path.relative_to(ROOT)))
    assert users == {}


def test_no_task_branches_on_an_initialisation_or_pretraining_name():
    names = set(initialisations.REGISTRY) | {"multilabel", "cluster", "predicted_class"}
    found = []
    for path in modules(PACKAGE / "tasks"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [c.value for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)]
                if any(isinstance(c, str) and c in names for c in constants):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_test_only_writers_are_not_in_the_package():
    defined = {
        node.name
        for path in modules(PACKAGE)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef)
    }
    assert not defined & {"write_as", "write_without_meta"}


def test_every_stage_script_runs_only_under_its_main_guard():
    """Importing a stage script (as a test does) runs nothing: module level holds only the
    docstring, imports, constants and functions; `main()` runs under `__main__`."""
    for path in modules(ROOT / "stages"):
        body = ast.parse(path.read_text()).body
        loose = [
            ast.unparse(node)[:60]
            for node in body
            if not isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.Assign | ast.If)
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        ]
        guards = [n for n in body if isinstance(n, ast.If)]
        assert loose == [], path.name
        assert [ast.unparse(g.test) for g in guards] == ["__name__ == '__main__'"], path.name
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in body), path.name
