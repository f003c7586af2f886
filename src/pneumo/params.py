"""Reading params.yaml once per stage, and seeding everything from it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import yaml


def load(path: str | Path = "params.yaml") -> dict:
    """All params (DVC writes `-S` overrides into params.yaml before a stage runs)."""
    with open(path) as f:
        return yaml.safe_load(f)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one number."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
