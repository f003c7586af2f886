"""The results in README.md and docs/, generated from metrics/, never copied by hand.

Two outputs, both rewritten from the committed metrics:

- README.md, between its `results` markers: the headline table, from `metrics/headline.json`
  (the pipeline's one DVC metrics file, the columns of `dvc exp show`), with a caption from
  `metrics/ablation.json` (test films, runs, primary endpoint).
- docs/results.md: every report for people in `metrics/` (`ablation.md` first), under a banner.

The table follows headline.json's structure, not its names: every mapping of numbers in it (at
any depth, named by its path) is a row, and rows with the same keys make one table whose columns
are those keys in file order; a row whose keys no other row shares is one line of its own. So a
new variant, endpoint, family or summary in the report needs no change here. tests/test_docs.py
fails while either output differs from what this writes from the committed metrics.

    python tools/docs_results.py           # rewrite both (`make docs-results`), after a run
    python tools/docs_results.py --check   # exit 1, naming the stale file
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- results: written by tools/docs_results.py from metrics/ (make docs-results); do not edit -->"
END = "<!-- /results -->"
FIRST_REPORT = "ablation.md"  # the study's table; other reports in metrics/ follow it by name


def number(value: float | int | bool) -> str:
    """A metric as the table shows it: floats to 4 decimals (as the report rounds them)."""
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rows(headline: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """The mappings of numbers in `headline`, in file order, each named by its path (`labels`, or
    `100.labels` when the file nests them one level deeper); other values are left out."""
    found = []
    for name, values in headline.items():
        if not isinstance(values, dict):
            continue
        numbers = {k: v for k, v in values.items() if _is_number(v)}
        if numbers:
            found.append((f"{prefix}{name}", numbers))
        found += rows({k: v for k, v in values.items() if isinstance(v, dict)}, f"{prefix}{name}.")
    return found


def caption(ablation: dict) -> str:
    """One line on what the numbers are, from the report's own summary (parts it lacks are left out)."""
    parts = []
    if "test_images" in ablation:
        positive = f", {ablation['test_positive']} with a pneumothorax" if "test_positive" in ablation else ""
        parts.append(f"{ablation['test_images']} test films{positive}")
    if "runs" in ablation:
        parts.append(f"{ablation['runs']} run(s) per variant")
    if "primary" in ablation:
        parts.append(f"primary endpoint `{ablation['primary']}`")
    where = ablation.get("holds_on", "the embedded default")
    return f"On {where}: " + "; ".join(parts) + "." if parts else f"On {where}."


def headline_block(headline: dict, ablation: dict) -> str:
    """The markdown between the README's markers."""
    entries = rows(headline)
    groups: dict[tuple[str, ...], list[tuple[str, dict]]] = {}
    for name, values in entries:
        groups.setdefault(tuple(values), []).append((name, values))
    lines = [caption(ablation), ""]
    singles = []
    for keys, members in groups.items():
        if len(members) == 1:
            singles.append(members[0])
            continue
        lines.append("| | " + " | ".join(f"`{k}`" for k in keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        lines += [f"| {name} | " + " | ".join(number(values[k]) for k in keys) + " |" for name, values in members]
        lines.append("")
    for name, values in singles:
        lines.append(f"- `{name}`: " + ", ".join(f"{k} {number(v)}" for k, v in values.items()))
    return "\n".join(lines).rstrip() + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with what lies between the markers replaced by `block`."""
    pattern = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END), re.S)
    if len(pattern.findall(text)) != 1:
        raise SystemExit(f"README.md needs exactly one block from\n{BEGIN}\nto\n{END}")
    return pattern.sub(lambda _: f"{BEGIN}\n{block}{END}", text)


def demoted(markdown: str) -> str:
    """Every heading one level down (outside code fences), so the page keeps one title."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(out)


def results_page(reports: dict[str, str]) -> str:
    """docs/results.md from the reports in metrics/ (name -> markdown)."""
    head = [
        "<!-- written by tools/docs_results.py from metrics/*.md (make docs-results); do not edit -->",
        "# Results",
        "",
        "What the `report` stage wrote for the committed run of the default pipeline, copied here by",
        "`make docs-results`. The default runs on phantoms: every verdict holds on them, not on patients.",
        "How the intervals and verdicts are made: [Statistics](statistics.md). The same numbers are in",
        "`metrics/` (`dvc metrics show`, `dvc exp show`, `make results`).",
    ]
    body = [f"<!-- metrics/{name} -->\n{demoted(text).strip()}" for name, text in reports.items()]
    return "\n\n".join(["\n".join(head), *body]) + "\n"


def reports(metrics: Path) -> dict[str, str]:
    """The markdown reports in metrics/, the study's first."""
    names = sorted(p.name for p in metrics.glob("*.md"))
    names.sort(key=lambda n: n != FIRST_REPORT)
    return {name: (metrics / name).read_text(encoding="utf-8") for name in names}


def expected(root: Path) -> dict[Path, str]:
    """What README.md and docs/results.md must hold, given the metrics under `root`."""
    metrics = root / "metrics"
    headline = json.loads((metrics / "headline.json").read_text())
    ablation_file = metrics / "ablation.json"
    ablation = json.loads(ablation_file.read_text()) if ablation_file.exists() else {}
    readme = root / "README.md"
    return {
        readme: replace_block(readme.read_text(encoding="utf-8"), headline_block(headline, ablation)),
        root / "docs" / "results.md": results_page(reports(metrics)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project root (default: this checkout)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected(args.root).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "is stale: run `make docs-results`" if args.check else "rewritten"
        print(f"{path.relative_to(args.root)} {verb}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
