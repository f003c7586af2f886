"""Benchmark (not a test): what DVC costs with a raw dependency of the real CXR-14 size.

In a scratch git + DVC repository (deleted afterwards) it writes --files small files into
raw/images/ (the real CXR-14 folder holds 112,120 PNGs; file count, not size, is what DVC
pays for once its state cache knows a file) and times, for two pipeline designs:

- `direct`: one stage that declares the raw folder itself as a dependency (what
  `prepare_cxr14` does with `${data.cxr14_root}`).
- `manifest`: a stage `raw_manifest` (always run) lists the folder: path, size and
  modification time of every file into manifest.tsv; the consumer stage depends on that
  file, not on the folder. DVC then hashes one file, and the consumer still reruns when any
  raw file is added, removed, resized or touched.

For each design: the first `dvc repro` (hash everything and run), then `dvc status` and a
no-op `dvc repro` twice each with DVC's state cache warm (second runs), then the same two
commands once more after deleting the state cache (`core.site_cache_dir`), which is what
the first `dvc status` on a fresh clone or another machine pays. Finally one raw file is
touched and `dvc repro` must rerun the consumer (checked, and timed).

Usage: python benchmarks/dvc_scale.py [--files 112120] [--work DIR]
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit

MANIFEST = """\
import os, sys
root = sys.argv[1]
with open("manifest.tsv", "w") as out:
    for entry in sorted(os.scandir(root + "/images"), key=lambda e: e.name):
        st = entry.stat()
        out.write(f"{entry.name}\\t{st.st_size}\\t{st.st_mtime_ns}\\n")
"""
CONSUMER = """\
import os, sys
open("consumed.txt", "w").write(str(len(os.listdir(sys.argv[1] + "/images"))) + "\\n")
"""
PIPELINES = {
    "direct": """\
stages:
  consume:
    cmd: python consume.py raw
    deps: [consume.py, raw]
    outs: [consumed.txt]
""",
    "manifest": """\
stages:
  raw_manifest:
    cmd: python manifest.py raw
    always_changed: true
    deps: [manifest.py]
    outs: [manifest.tsv]
  consume:
    cmd: python consume.py raw
    deps: [consume.py, manifest.tsv]
    outs: [consumed.txt]
""",
}


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return round(seconds, 2), proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=112_120)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    dvc = [sys.executable, "-m", "dvc"]
    top = Path(tempfile.mkdtemp(prefix="pneumo-dvc-", dir=args.work))
    try:
        for design, pipeline in PIPELINES.items():
            repo = top / design
            raw = repo / "raw" / "images"  # a real folder in each repository: DVC does not follow a symlink
            raw.mkdir(parents=True)
            start = time.perf_counter()
            for i in range(args.files):
                (raw / f"{i // 2:08d}_{i % 2:03d}.png").write_bytes(i.to_bytes(8, "little") * 8)
            emit(measure="write raw files", files=args.files, seconds=round(time.perf_counter() - start, 2))
            subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
            timed([*dvc, "init", "-q"], repo)
            state = top / f"state-{design}"
            for key, value in (("core.analytics", "false"), ("core.check_update", "false")):
                timed([*dvc, "config", key, value], repo)
            timed([*dvc, "config", "core.site_cache_dir", str(state)], repo)
            (repo / "dvc.yaml").write_text(pipeline)
            (repo / "manifest.py").write_text(MANIFEST)
            (repo / "consume.py").write_text(CONSUMER)
            record = {"design": design, "files": args.files}
            emit(**record, measure="first dvc repro (hash + run)", seconds=timed([*dvc, "repro", "-q"], repo)[0])
            for k in (1, 2):
                emit(**record, measure=f"dvc status, warm state, run {k}", seconds=timed([*dvc, "status"], repo)[0])
                emit(**record, measure=f"no-op dvc repro, warm state, run {k}", seconds=timed([*dvc, "repro"], repo)[0])
            shutil.rmtree(state)
            emit(**record, measure="dvc status, no state (fresh clone)", seconds=timed([*dvc, "status"], repo)[0])
            emit(**record, measure="no-op dvc repro after that", seconds=timed([*dvc, "repro"], repo)[0])
            victim = raw / "00000001_001.png"
            victim.write_bytes(b"x" * len(victim.read_bytes()))  # content and mtime change, size does not
            seconds, out = timed([*dvc, "repro"], repo)
            reran = "Running stage 'consume'" in out
            emit(**record, measure="dvc repro after one raw file changed", seconds=seconds, consumer_reran=reran)
            shutil.rmtree(repo)
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
