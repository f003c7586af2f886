"""Reading params.yaml once per stage, and seeding everything from it."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import yaml


def load(path: str | Path = "params.yaml") -> dict:
    """All params (DVC writes `-S` overrides into params.yaml before a stage runs)."""
    with open(path) as f:
        return yaml.safe_load(f)


def runtime(p: dict):
    """The train.Runtime of a training stage from the shared hardware params (device, amp,
    channels_last, compile, loader_workers, pin_memory); joins torchrun's process group
    when the stage was launched with nproc > 1."""
    from pneumo import train

    keys = ("amp", "channels_last", "compile", "loader_workers", "pin_memory")
    return train.runtime(p["device"], **{k: p[k] for k in keys})


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one number; with `deterministic`,
    ask torch for deterministic kernels (on CUDA: no cuDNN autotuning, fixed cuBLAS
    workspace; ops without a deterministic kernel warn instead of failing)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
