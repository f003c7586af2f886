"""Replicated runs and convergence: every training stage of run r is seeded r, and only
pretrained encoders are frozen (the plateau rule itself: tests/test_loop.py)."""

import ast
import json
import re

import pytest
import torch
import yaml

from pneumo.core import models, runtime
from pneumo.tasks import init_encoder, train_unet

TRAINING_STAGES = ("init_encoder", "train_autoencoder", "cluster_latents", "pretrain_encoder", "train_unet")


def test_every_training_stage_of_a_run_gets_that_runs_seed(root):
    """DVC's own resolution of dvc.yaml: each instance of a training stage names its run,
    and its command passes exactly that run as --seed; the scripts seed from it."""
    from dvc.repo import Repo

    params = yaml.safe_load((root / "params.yaml").read_text())
    assert len(params["runs"]) >= 3 and "seeds" not in params["train_unet"]
    stages = {s.addressing: s.cmd for s in Repo(str(root)).index.stages}
    for name in TRAINING_STAGES:
        instances = {a: c for a, c in stages.items() if a.split("@")[0] == name}
        runs = {int(re.search(r"(\d+)$", a).group(1)) for a in instances}
        assert runs == set(params["runs"]), name
        for address, cmd in instances.items():
            run = int(re.search(r"(\d+)$", address).group(1))
            assert re.findall(r"--seed (\S+)", cmd) == [str(run)], address
        script = ast.parse((root / "stages" / f"{name}.py").read_text())
        calls = [n for n in ast.walk(script) if isinstance(n, ast.Call)]
        seeded = [c for c in calls if getattr(c.func, "attr", "") in ("seed_everything", "from_params")]
        assert seeded and all(ast.unparse(c.args[-1]) == "args.seed" for c in seeded), name
        for call in calls:  # the task gets the run's seed too, never the data seed
            for kw in call.keywords:
                if kw.arg == "seed":
                    assert ast.unparse(kw.value) == "args.seed", name


@pytest.mark.slow  # two short U-Net trainings
def test_only_a_pretrained_encoder_is_frozen(tiny_siim, unet_run, tmp_path):
    """The random `none` encoder trains from the first step; a pretrained one waits an epoch."""
    runtime.seed_everything(0)
    random_encoder = tmp_path / "none.safetensors"
    init_encoder.init_encoder(out_path=random_encoder)
    assert models.load_checkpoint(random_encoder)[1]["pretrained"] is False
    moved = {}
    for name, encoder in (("random", random_encoder), ("pretrained", tiny_siim / "encoder.safetensors")):
        args = unet_run(tiny_siim, name, encoder_path=encoder, max_epochs=1, freeze_encoder_epochs=1)
        train_unet.train_unet(**args, rt=runtime.start("cpu"))
        before, _ = models.load_checkpoint(encoder)
        after, _ = models.load_checkpoint(tiny_siim / name / "model.safetensors")
        moved[name] = not torch.equal(before["conv1.weight"], after["encoder.conv1.weight"])
        summary = json.loads((tiny_siim / name / "live" / "metrics.json").read_text())
        assert set(summary["plateau"]) >= {"met", "epochs", "best_epoch", "change", "rule"}
        assert summary["precision"] == "fp32"
    assert moved == {"random": True, "pretrained": False}  # one epoch: the pretrained encoder stayed frozen
