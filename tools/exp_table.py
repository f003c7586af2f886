"""`make results`: the headline columns of `dvc exp show` in a terminal's width.

`dvc exp show` puts every metric, param and dependency of every experiment in one row, so at 80
or 100 columns it shows little more than "…". This reads `dvc exp show --json` and turns the
table around: one row per headline metric (the keys of the DVC metrics files, today
`metrics/headline.json`), one column per experiment (the workspace, each baseline commit, then
the experiments, newest first), numbered, with a legend above. Experiments that do not fit in
`--width` columns are counted, not squeezed.

    python tools/exp_table.py              # within 100 columns
    python tools/exp_table.py --width 160
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 100
GAP = 2


@dataclass
class Column:
    label: str  # what the legend says: name, short rev, date
    metrics: dict[str, float | int | str] = field(default_factory=dict)


def flatten(data: dict, prefix: str = "") -> dict[str, float | int | str]:
    """{'none': {'dice_positive': 0.55}} -> {'none.dice_positive': 0.55}; lists are left out."""
    flat: dict[str, float | int | str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, int | float | str) and not isinstance(value, bool):
            flat[name] = value
    return flat


def metrics_of(state: dict) -> dict[str, float | int | str]:
    """The metrics of one `dvc exp show --json` entry, keyed as `exp show` names its columns
    (prefixed by the file only when there are several files)."""
    files = ((state.get("data") or {}).get("metrics")) or {}
    several = len(files) > 1
    flat: dict[str, float | int | str] = {}
    for path, content in files.items():
        flat.update(flatten((content or {}).get("data") or {}, f"{path}:" if several else ""))
    return flat


def _label(state: dict, name: str | None = None) -> str:
    """`workspace`, or the name (branch or experiment), short rev and time of a commit."""
    rev = state.get("rev") or "?"
    if rev == "workspace":
        return rev
    stamp = ((state.get("data") or {}).get("timestamp") or "")[:16].replace("T", " ")
    return " ".join(part for part in (name or state.get("name"), rev[:7], stamp) if part)


def columns(exp_show: list[dict]) -> list[Column]:
    """Workspace, then each baseline commit followed by its experiments, newest first."""
    out = []
    for state in exp_show:
        out.append(Column(_label(state), metrics_of(state)))
        for exp_range in state.get("experiments") or []:
            revs = exp_range.get("revs") or []
            if revs:  # the newest commit of the experiment
                out.append(Column(_label(revs[0], exp_range.get("name")), metrics_of(revs[0])))
    return out


def number(value: float | int | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table(cols: list[Column], width: int = WIDTH) -> str:
    """The legend, then metrics down and experiments across, within `width` columns."""
    keys = list(dict.fromkeys(k for c in cols for k in c.metrics))
    if not keys:
        return "no metrics: has `dvc repro` (or `make repro`) run?"
    pad = min(max(map(len, keys)), width // 2)
    shown, used = [], pad
    for i, col in enumerate(cols, 1):
        cell = max([len(str(i))] + [len(number(col.metrics.get(k))) for k in keys]) + GAP
        if used + cell > width:
            break
        shown.append((i, col, cell))
        used += cell
    lines = [f"{i:>3}  {col.label}"[:width] for i, col, _ in shown]
    if len(shown) < len(cols):
        lines.append(f"     ({len(cols) - len(shown)} more not shown: widen with --width, or `dvc exp show`)")
    lines.append("")
    lines.append(f"{'':<{pad}}" + "".join(f"{i:>{cell}}" for i, _, cell in shown))
    for key in keys:
        label = key if len(key) <= pad else key[: pad - 1] + "…"
        lines.append(f"{label:<{pad}}" + "".join(f"{number(col.metrics.get(key)):>{cell}}" for _, col, cell in shown))
    return "\n".join(lines)


def exp_show(root: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"]
    return json.loads(subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True).stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=WIDTH, help=f"columns to fit in (default {WIDTH})")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project root (default: this checkout)")
    args = parser.parse_args(argv)
    print(table(columns(exp_show(args.root)), args.width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
