"""Benchmark (not a test): wall time of each stage of the default `dvc repro`, and of a
no-op `dvc repro` right after it (nothing changed: DVC checks hashes and runs nothing).

By default it works in a fresh clone of this repository's HEAD in a temporary folder (with
../shared beside it), so the whole pipeline really runs and the workspace is untouched;
`--here` instead reruns every stage in this workspace (`dvc repro --force`), which also
refreshes dvc.lock and metrics/. A stage's time runs from DVC's "Running stage" line to
the next one (so it includes DVC's hashing and caching of its outputs); the last stage
ends when `dvc repro` exits.

Prints one JSON line per measurement.
Usage: python benchmarks/pipeline_time.py [--here [--noop-only]] [--noop-repeats 3]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--here", action="store_true", help="rerun every stage in this workspace (dvc repro --force)")
parser.add_argument("--noop-repeats", type=int, default=3)
parser.add_argument("--noop-only", action="store_true", help="with --here: only the no-op repro (pipeline up to date)")
args = parser.parse_args()
env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
STAGE = re.compile(r"Running stage '([^']+)'")


def repro(repo: Path, *extra: str) -> tuple[float, list[tuple[str, float]]]:
    """Run `dvc repro`; (total seconds, [(stage, seconds)]) from the stage lines' arrival times."""
    starts: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", *extra], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    tail = []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        if m := STAGE.search(line):
            starts.append((m.group(1), time.perf_counter()))
    if proc.wait():
        sys.exit(f"dvc repro failed:\n{''.join(tail)}")
    end = time.perf_counter()
    ends = [t for _, t in starts[1:]] + [end] if starts else []
    return end - t0, [(name, e - s) for (name, s), e in zip(starts, ends, strict=True)]


def measure(repo: Path, force: bool) -> None:
    if not args.noop_only:
        total, stages = repro(repo, *(["--force"] if force else []))
        for name, seconds in stages:
            emit(measure="stage", stage=name, seconds=round(seconds, 1))
        emit(measure="dvc_repro", stages=len(stages), seconds=round(total, 1))
    for _ in range(args.noop_repeats):
        total, stages = repro(repo)
        assert not stages, f"no-op repro ran {stages}"
        emit(measure="dvc_repro_noop", seconds=round(total, 2))


if args.here:
    measure(ROOT, force=True)
else:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "main"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        (Path(tmp) / "shared").symlink_to(ROOT.parent / "shared")
        measure(repo, force=False)
