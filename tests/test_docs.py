"""The README is a short front door and the docs behind it stay true: the headline table and the
results page are what tools/docs_results.py writes from the committed metrics, the stage graph
is what DVC says now, `make results` and `make dag` fit a terminal, the site builds with
`mkdocs build --strict` offline, and the stale claims stay gone."""

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0 else []


def tool(name: str):
    """A script of tools/ as a module (they are importable: main() behind a __name__ guard)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def nav_pages() -> set[str]:
    """Every page named in mkdocs.yml's nav."""
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # leaves !!python/name alone

    def pages(entries):
        for entry in entries:
            for value in entry.values() if isinstance(entry, dict) else [entry]:
                yield from pages(value) if isinstance(value, list) else [value]

    return set(pages(config["nav"]))


def test_readme_is_a_short_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "not for clinical use" in readme.lower() and "phantoms" in readme
    for target in ("repro", "test", "install", "quick", "results"):
        assert f"make {target}" in readme, target


def test_every_make_target_the_docs_name_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    named = {t for path in texts for t in re.findall(r"`make ([a-z][\w-]*)", path.read_text())}
    assert named and named <= targets, named - targets
    # the quick look the README spells out is the one make runs
    quick = re.search(r"^QUICK := (.*)$", makefile, re.M).group(1)
    said = re.search(r"`make quick` is `([^`]+)`", (ROOT / "README.md").read_text()).group(1)
    assert said == f"dvc exp run -n quick-look {quick}"


def test_readme_links_into_pages_of_the_site():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)]*)?\)", readme)
    assert links
    for link in links:
        assert (ROOT / link).is_file(), link
        assert link.removeprefix("docs/") in nav_pages(), f"{link} is not in mkdocs.yml's nav"


def test_results_block_and_page_are_what_the_committed_metrics_give():
    docs_results = tool("docs_results")
    for path, text in docs_results.expected(ROOT).items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale: run `make docs-results`"


def _results_checkout(tmp_path: Path) -> Path:
    for name in ("README.md", "docs/results.md", *(p.relative_to(ROOT) for p in (ROOT / "metrics").glob("*.json"))):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "metrics" / "ablation.md", tmp_path / "metrics" / "ablation.md")
    return tmp_path


def test_the_check_fails_when_a_metric_changes(tmp_path):
    docs_results = tool("docs_results")
    root = _results_checkout(tmp_path)
    assert docs_results.main(["--check", "--root", str(root)]) == 0
    headline_file = root / "metrics" / "headline.json"
    headline = json.loads(headline_file.read_text())
    name, values = docs_results.rows(headline)[0]
    key = next(iter(values))
    changed = values[key] + 0.0123
    headline[name][key] = changed
    headline_file.write_text(json.dumps(headline))
    assert docs_results.main(["--check", "--root", str(root)]) == 1
    assert docs_results.main(["--root", str(root)]) == 0  # rewrites the block ...
    assert docs_results.main(["--check", "--root", str(root)]) == 0  # ... which then matches
    assert docs_results.number(changed) in (root / "README.md").read_text()


def test_the_table_follows_the_headline_structure_not_its_names():
    docs_results = tool("docs_results")
    headline = {
        "none@100": {"dice_positive": 0.5, "dice_positive_ci": 0.1, "auc": 0.8},
        "labels@100": {"dice_positive": 0.6, "dice_positive_ci": 0.1, "auc": 0.9},
        "all_empty": {"dice_positive": 0.0, "dice_positive_ci": 0.0, "auc": 0.5},
        "transfer_gap": {"labels": 0.02},
        "25": {"none": {"dice_positive": 0.3, "dice_positive_ci": 0.2, "auc": 0.7}},  # nested: named by its path
        "notes": "not a mapping of numbers",
        "flags": {"converged": True},
    }
    block = docs_results.headline_block(headline, {"runs": 5, "primary": "dice_positive"})
    assert "| | `dice_positive` | `dice_positive_ci` | `auc` |" in block
    assert "| labels@100 | 0.6000 | 0.1000 | 0.9000 |" in block and "| all_empty |" in block
    assert "| 25.none | 0.3000 | 0.2000 | 0.7000 |" in block
    assert "- `transfer_gap`: labels 0.0200" in block
    assert "notes" not in block and "converged" not in block
    assert "5 run(s) per variant" in block and "`dice_positive`" in block.splitlines()[0]
    # a page of several reports: the study's first, headings one level down under one title
    page = docs_results.results_page({"ablation.md": "# A\n\n## B", "other.md": "# C"})
    assert page.count("\n# ") == 1 and "\n## A" in page and "\n### B" in page
    assert page.index("## A") < page.index("## C")


def test_docs_show_the_current_stage_graph():
    docs_dag = tool("docs_dag")
    flowchart = docs_dag.mermaid(ROOT)
    page = (ROOT / "docs" / "pipeline.md").read_text()
    assert docs_dag.with_block(page, flowchart) == page, "docs/pipeline.md's graph is stale: run `make docs`"
    inputs = docs_dag.edges(flowchart)
    assert 10 <= len(inputs) <= 22 and not any("@" in stage for stage in inputs)  # stages, not instances
    assert {"synthesize", "train_unet", "report"} <= set(inputs)


def test_make_dag_fits_100_columns():
    docs_dag = tool("docs_dag")
    inputs = docs_dag.edges(docs_dag.mermaid(ROOT))
    text = docs_dag.readable(inputs)
    assert max(map(len, text.splitlines())) <= 100
    order = docs_dag.in_run_order(inputs)
    assert all(order.index(dep) < order.index(stage) for stage, deps in inputs.items() for dep in deps)
    for stage in inputs:
        assert re.search(rf"^{re.escape(stage)} +<- ", text, re.M), stage


def _exp(rev: str, name: str | None, metrics: dict | None, experiments=None) -> dict:
    data = {"timestamp": "2026-12-01T18:22:12", "metrics": {"metrics/headline.json": {"data": metrics}}}
    return {"rev": rev, "name": name, "data": data if metrics is not None else None, "experiments": experiments}


def test_make_results_fits_100_columns_whatever_the_experiments():
    exp_table = tool("exp_table")
    headline = json.loads((ROOT / "metrics" / "headline.json").read_text())
    other = copy.deepcopy(headline)
    first = next(k for k, v in other.items() if isinstance(v, dict))
    other[first]["a_new_metric_with_a_rather_long_name_indeed"] = 1234.5
    experiments = [
        {"name": f"a-long-experiment-name-{i}", "revs": [_exp(f"{i:040x}", None, other)], "executor": None}
        for i in range(12)
    ]
    shown = [_exp("workspace", None, headline), _exp("f" * 40, "main", headline, experiments)]
    for width in (100, 80):
        text = exp_table.table(exp_table.columns(shown), width)
        assert max(map(len, text.splitlines())) <= width
        assert "more not shown" in text and "workspace" in text and "a-long-experiment-name-0" in text
    assert exp_table.table([exp_table.Column("workspace")]).startswith("no metrics")
    # the real `dvc exp show` of this checkout
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "exp_table.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert max(map(len, proc.stdout.splitlines())) <= 100 and "workspace" in proc.stdout


def test_docs_build_strict_offline(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [*OFFLINE, sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r'<(link|script)[^>]+(href|src)="(https?:)?//', page), "the page loads something online"
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= nav_pages()


@pytest.mark.parametrize(
    "claim",
    [
        "amp applies to CUDA only",
        "trains in fp32 on CPU",
        "not reproduced",
        "better informed encoders are not the better U-Nets",
        "resolve differences of ~0.1",
    ],
)
def test_stale_claims_stay_gone(claim):
    # docs/results.md is the report itself, written from metrics/ (not prose of ours)
    texts = [ROOT / "README.md", *(p for p in (ROOT / "docs").glob("*.md") if p.name != "results.md")]
    for path in texts:
        assert claim.lower() not in " ".join(path.read_text().split()).lower(), f"{path.name}: {claim!r}"


def test_resume_names_every_training_stage():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    launched = {name for name, stage in pipeline["stages"].items() if "pneumo.launch" in str(stage.get("cmd", ""))}
    assert launched
    section = (ROOT / "docs" / "reliability.md").read_text().split("## Resume", 1)[1].split("\n## ", 1)[0]
    for stage in launched:
        assert f"`{stage}`" in section, stage
