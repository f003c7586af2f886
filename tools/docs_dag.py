"""The pipeline at a glance: DVC's stage graph with every foreach/matrix instance folded into
its stage (`dvc dag --collapse-foreach-matrix`), so it stays ~16 nodes however many runs and
variants params.yaml asks for.

`dvc dag` draws that graph ~600 columns wide; this prints it one stage a line, in the order
`dvc repro` can run them, each with the stages it reads from (`make dag`). With `--write` it
puts the mermaid form into the marked block of docs/pipeline.md; tests/test_docs.py fails while
that block differs from what DVC says now.

    python tools/docs_dag.py                        # readable, within 100 columns
    python tools/docs_dag.py --write                # refresh docs/pipeline.md (make docs)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path("docs") / "pipeline.md"
BEGIN = "<!-- dag: written by tools/docs_dag.py from `dvc dag --collapse-foreach-matrix --mermaid`; do not edit -->"
END = "<!-- /dag -->"
WIDTH = 100


def mermaid(root: Path) -> str:
    """DVC's stage-level graph as a mermaid flowchart."""
    cmd = [sys.executable, "-m", "dvc", "dag", "--collapse-foreach-matrix", "--mermaid"]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def edges(flowchart: str) -> dict[str, list[str]]:
    """stage -> the stages it reads from, from a mermaid flowchart of `dvc dag`."""
    names = dict(re.findall(r'^\s*(node\d+)\["([^"]+)"\]\s*$', flowchart, re.M))
    inputs: dict[str, list[str]] = {name: [] for name in names.values()}
    for source, target in re.findall(r"^\s*(node\d+)-->(node\d+)\s*$", flowchart, re.M):
        inputs[names[target]].append(names[source])
    return inputs


def in_run_order(inputs: dict[str, list[str]]) -> list[str]:
    """The stages so that each comes after what it reads from (ties by name)."""
    done: list[str] = []
    while len(done) < len(inputs):
        ready = sorted(s for s, deps in inputs.items() if s not in done and all(d in done for d in deps))
        if not ready:
            raise ValueError("the graph has a cycle")
        done += ready
    return done


def readable(inputs: dict[str, list[str]], width: int = WIDTH) -> str:
    """One line per stage, `stage  <- what it reads from`, wrapped within `width` columns."""
    order = in_run_order(inputs)
    pad = max(map(len, order)) + 2
    lines = []
    for stage in order:
        reads = ", ".join(sorted(inputs[stage], key=order.index)) or "(params and files only)"
        lines += textwrap.wrap(
            reads, width, initial_indent=f"{stage:<{pad}}<- ", subsequent_indent=" " * (pad + 3), break_on_hyphens=False
        )
    return "\n".join(lines)


def block(flowchart: str) -> str:
    return f"{BEGIN}\n```mermaid\n{flowchart}\n```\n{END}"


def with_block(page: str, flowchart: str) -> str:
    """`page` with its dag block replaced by `flowchart`."""
    pattern = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END), re.S)
    if len(pattern.findall(page)) != 1:
        raise SystemExit(f"{PAGE} needs exactly one block from\n{BEGIN}\nto\n{END}")
    return pattern.sub(lambda _: block(flowchart), page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"refresh the graph in {PAGE}")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project root (default: this checkout)")
    args = parser.parse_args(argv)
    flowchart = mermaid(args.root)
    if args.write:
        path = args.root / PAGE
        path.write_text(with_block(path.read_text(encoding="utf-8"), flowchart), encoding="utf-8")
    else:
        print(readable(edges(flowchart)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
