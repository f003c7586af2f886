"""`python -m pneumo.launch NPROC SCRIPT [ARGS...]`: how dvc.yaml starts a training stage.

NPROC = 1 runs the script in this process (no rendezvous, nothing listens on a port: the
default pipeline runs with no network at all). NPROC > 1 hands over to torchrun on this
machine (`--standalone`): NPROC processes joined by DistributedDataParallel, one GPU each
(NCCL), or sharing the CPU cores (gloo)."""

from __future__ import annotations

import os
import runpy
import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or not argv[0].isdigit() or int(argv[0]) < 1:
        sys.exit("usage: python -m pneumo.launch NPROC SCRIPT [ARGS...]  (NPROC: a whole number >= 1)")
    nproc, script, args = int(argv[0]), argv[1], argv[2:]
    if nproc == 1:
        sys.argv = [script, *args]
        runpy.run_path(script, run_name="__main__")
        return
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    os.execv(sys.executable, [*torchrun, script, *args])


if __name__ == "__main__":
    main()
