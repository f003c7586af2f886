"""Reading params.yaml once per stage."""

from __future__ import annotations

from pathlib import Path

import yaml


def load(path: str | Path = "params.yaml") -> dict:
    """All params (DVC writes `-S` overrides into params.yaml before a stage runs)."""
    with open(path) as f:
        return yaml.safe_load(f)
