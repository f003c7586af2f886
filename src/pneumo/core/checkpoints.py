"""Epoch checkpoints that let a killed training stage resume, and the input fingerprint
that decides whether a checkpoint may be resumed."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from pneumo.core import dist, runtime

log = logging.getLogger(__name__)


def fingerprint(*paths: Path) -> dict[str, str]:
    """What a resumed run must share with the checkpoint besides params: md5 of small input
    files, size and mtime of large arrays (a changed or re-checked-out input starts fresh)."""
    import hashlib

    out = {}
    for path in paths:
        for f in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            if f.suffix == ".npy":
                out[str(f)] = f"{f.stat().st_size}:{f.stat().st_mtime_ns}"
            elif f.is_file():
                out[str(f)] = hashlib.md5(f.read_bytes()).hexdigest()
    return out


class Checkpoint:
    """Epoch checkpoint that lets a killed training run resume instead of starting over.

    Holds the state of every object passed in (model, optimizer, scheduler: `state_dict`;
    samplers' and augmentation's `torch.Generator`s: `get_state`), the global torch RNG,
    the last finished epoch and any extra values the loop keeps (best weights so far).
    Written atomically after an epoch as a plain dict of tensors and primitives, read back
    with `weights_only=True`, and used only if it was made with the same params: a killed
    run loses the epochs since the last checkpoint only, and finishes with the same weights
    as an uninterrupted run (CPU, fixed seed). It is written once `every_seconds` have passed
    since the last one (PNEUMO_CHECKPOINT_SECONDS, default 60; 0 = every epoch): a U-Net
    checkpoint is ~0.4 GB, half a second to write, which is a tenth of a 64 px CPU epoch but
    nothing beside a real one. A finished run leaves only a small marker."""

    def __init__(self, path: Path, params: dict, resume: bool, every_seconds: float | None = None, **stateful):
        self.path, self.resume, self.stateful = Path(path), resume, stateful
        self.params = json.dumps(params, sort_keys=True)
        self.every = runtime.local_settings().checkpoint_seconds if every_seconds is None else every_seconds
        self.last = time.monotonic()

    def restore(self) -> tuple[int, dict]:
        """(first epoch to run, extra values saved with the checkpoint); (0, {}) when starting fresh."""
        if not (self.resume and self.path.exists()):
            return 0, {}
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("complete"):  # a finished run (e.g. `dvc repro --force`): train again
            return 0, {}
        if state["params"] != self.params:
            if dist.is_main():
                log.info(f"{self.path}: made with other params; starting fresh")
            return 0, {}
        for name, obj in self.stateful.items():
            if isinstance(obj, torch.Generator):
                obj.set_state(state["objects"][name])
            else:
                obj.load_state_dict(state["objects"][name])
        torch.set_rng_state(state["torch_rng"])  # the global torch RNG continues where the killed run left it
        if dist.is_main():
            log.info(f"{self.path}: resuming after epoch {state['epoch']} (weights, optimizer, samplers, torch RNG)")
        return state["epoch"] + 1, state["extra"]

    def save(self, epoch: int, **extra) -> None:
        """Checkpoint after `epoch` if `every_seconds` have passed since the last one."""
        if not dist.is_main() or time.monotonic() - self.last < self.every:  # every process holds the same state
            return
        objects = {
            n: o.get_state() if isinstance(o, torch.Generator) else o.state_dict() for n, o in self.stateful.items()
        }
        state = {
            "params": self.params,
            "epoch": epoch,
            "torch_rng": torch.get_rng_state(),
            "objects": objects,
            "extra": extra,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, self.path)  # a kill while writing leaves the previous checkpoint intact
        self.last = time.monotonic()

    def finish(self) -> None:
        """Replace the checkpoint by a small marker once the run is complete: nothing is
        left to resume, and the DVC output stays cheap to cache."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"params": self.params, "complete": True}, self.path)
