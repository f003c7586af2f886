"""`python -m pneumo.launch NPROC SCRIPT [ARGS...]`: how dvc.yaml starts a training stage.

NPROC is the total number of training processes (the `nproc` param: it sets how each
global batch is sliced, so it can change a result by float rounding). NPROC = 1 runs the
script in this process (no rendezvous, nothing listens on a port: the default pipeline
runs with no network at all). NPROC > 1 hands over to torchrun: on this machine
(`--standalone`) by default, or spread over several nodes that meet through torchrun's own
c10d rendezvous when the environment says so. Where the processes run changes only speed,
so it is set by environment variables, never by params:

    PNEUMO_NNODES          nodes the NPROC processes are spread over (default 1); NPROC must
                           be a multiple of it: NPROC / PNEUMO_NNODES processes per node
    PNEUMO_RDZV_ENDPOINT   host[:port] of the c10d rendezvous (needed when PNEUMO_NNODES > 1);
                           the agent on that host serves it, the others connect
    PNEUMO_RDZV_ID         rendezvous id shared by the nodes of one run (default: derived from
                           the command line, which is the same on every node)
    PNEUMO_NODE_LAUNCHER   a command that starts one torchrun agent per node, e.g.
                           `srun --nodes=2 --ntasks-per-node=1` inside a SLURM allocation;
                           unset: this process is one agent, and every other node runs the
                           same command itself

Every node must see the repository and the prepared data at the same path (a shared file
system); only global rank 0 writes outputs."""

from __future__ import annotations

import hashlib
import os
import runpy
import shlex
import sys
from collections.abc import Mapping


def torchrun_args(nproc: int, script: str, args: list[str], env: Mapping[str, str]) -> list[str]:
    """torchrun's options for NPROC processes, on this machine or over PNEUMO_NNODES nodes."""
    text = env.get("PNEUMO_NNODES", "1").strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"PNEUMO_NNODES={text!r}: expected a whole number >= 1")
    nnodes = int(text)
    if nnodes == 1:
        return ["--standalone", f"--nproc_per_node={nproc}"]
    if nproc % nnodes:
        raise ValueError(f"nproc={nproc} processes cannot be spread evenly over PNEUMO_NNODES={nnodes} nodes")
    endpoint = env.get("PNEUMO_RDZV_ENDPOINT", "").strip()
    if not endpoint:
        raise ValueError(f"PNEUMO_NNODES={nnodes} needs PNEUMO_RDZV_ENDPOINT=host[:port] (the rendezvous host)")
    run_id = (
        env.get("PNEUMO_RDZV_ID") or "pneumo-" + hashlib.sha1(shlex.join([script, *args]).encode()).hexdigest()[:12]
    )
    return [
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc // nnodes}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={endpoint}",
        f"--rdzv_id={run_id}",
    ]


def command(nproc: int, script: str, args: list[str], env: Mapping[str, str]) -> list[str]:
    """The torchrun command line (behind PNEUMO_NODE_LAUNCHER when set) for NPROC > 1."""
    prefix = shlex.split(env.get("PNEUMO_NODE_LAUNCHER", ""))
    torchrun = [sys.executable, "-m", "torch.distributed.run", *torchrun_args(nproc, script, args, env)]
    return [*prefix, *torchrun, script, *args]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or not argv[0].isdigit() or int(argv[0]) < 1:
        sys.exit("usage: python -m pneumo.launch NPROC SCRIPT [ARGS...]  (NPROC: a whole number >= 1)")
    nproc, script, args = int(argv[0]), argv[1], argv[2:]
    if nproc == 1 and os.environ.get("PNEUMO_NNODES", "1").strip() in ("", "1"):
        sys.argv = [script, *args]
        runpy.run_path(script, run_name="__main__")
        return
    try:
        cmd = command(nproc, script, args, os.environ)
    except ValueError as e:
        sys.exit(f"pneumo.launch: {e}")
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
