"""The registry of encoder initialisations: adding one is one entry (plus a dvc.yaml line);
pretraining, fine-tuning and activation maps then work for it with no other change."""

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import yaml
from dvc.repo import Repo

from pneumo.core import initialisations, models, runtime
from pneumo.tasks import activation_maps, pretrain_encoder, train_unet


@dataclass(frozen=True)
class Parity(initialisations.Pretraining):
    """A kind of pretraining no task knows: one logit fitted with BCE to a made-up binary target
    (the `odd` column of a CSV), scored by the share of correct signs."""

    targets: str = "pseudo_labels"
    gradcam_label: str = "odd"

    def read(self, rows, classes, targets_csv):
        with open(targets_csv, newline="") as f:
            odd = {r["image_id"]: float(r["odd"]) for r in csv.DictReader(f)}
        return np.array([[odd[r["image_id"]]] for r in rows], dtype=np.float32)

    def outputs(self, targets):
        return 1

    def criterion(self):
        return torch.nn.BCEWithLogitsLoss()

    def scores(self, logits, truth, classes):
        return {"sign_accuracy": float(((logits > 0).float() == truth).float().mean())}, {"parity": True}

    def gradcam_target(self, classes):
        return lambda logits: logits[:, 0]


@pytest.fixture
def toy():
    """A fifth initialisation with its own kind of pretraining, registered from outside the
    package: no module in src/pneumo/tasks/ knows it."""
    entry = initialisations.Initialisation("toy", "pretrain_encoder", Parity())
    initialisations.register(entry)
    yield entry
    del initialisations.REGISTRY["toy"]


@pytest.mark.slow  # pretrains an encoder and trains a U-Net
def test_a_toy_initialisation_runs_through_pretraining_and_train_unet(toy, tiny_siim, unet_run, tmp_path):
    cxr = tiny_siim / "siim"  # any prepared image folder serves for pretraining; its ids get a toy target
    with open(cxr / "index.csv", newline="") as f:
        ids = [r["image_id"] for r in csv.DictReader(f)]
    targets = tmp_path / "toy.csv"
    targets.write_text("image_id,odd\n" + "".join(f"{i},{k % 2}\n" for k, i in enumerate(ids)))
    torch.manual_seed(0)
    encoder = tmp_path / "encoders" / "toy.safetensors"
    summary = pretrain_encoder.pretrain_encoder(
        target="toy",
        images_dir=cxr,
        out_path=encoder,
        head_path=tmp_path / "heads" / "toy.safetensors",
        live_dir=tmp_path / "live",
        checkpoint_path=tmp_path / "ck.pt",
        classes=["No Finding", "Pneumothorax"],
        targets_csv=targets,
        max_epochs=1,
        patience=2,
        min_delta=0.02,
        batch_size=8,
        lr=1e-3,
        seed=0,
        rt=runtime.start("cpu"),
    )
    assert 0 <= summary["val_sign_accuracy"] <= 1  # scored as its Pretraining says
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["parity"] is True
    state, meta = models.load_checkpoint(encoder)
    assert meta["source"] == "toy" and not torch.equal(state["conv1.weight"], models.build_encoder(1).conv1.weight)
    args = unet_run(tiny_siim, "toy", variant="toy", encoder_path=encoder)
    train_unet.train_unet(**args, rt=runtime.start("cpu"))
    _, meta = models.load_checkpoint(tiny_siim / "toy" / "model.safetensors")
    assert meta["variant"] == "toy"
    head, target = activation_maps._head_model(encoder, tmp_path / "heads" / "toy.safetensors", "toy", [], "cpu")
    assert head is not None and target(torch.tensor([[0.7]])).item() == pytest.approx(0.7)
    assert head(torch.zeros(1, 1, 64, 64)).shape == (1, 1)


def test_unknown_and_duplicate_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown encoder initialisation 'moco'; valid: \['autoencoder'"):
        initialisations.get("moco")
    with pytest.raises(ValueError, match="already registered"):
        initialisations.register(initialisations.Initialisation("labels", "x"))
    with pytest.raises(ValueError, match="has no pretraining"):
        pretrain_encoder.pretrain_encoder(
            target="none",
            images_dir=None,
            out_path=None,
            head_path=None,
            live_dir=None,
            checkpoint_path=None,
            classes=[],
            targets_csv=None,
            max_epochs=0,
            patience=2,
            min_delta=0.02,
            batch_size=1,
            lr=0.0,
            seed=0,
        )


def test_every_train_unet_variant_is_registered_and_every_pretraining_is_known(root):
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert set(params["train_unet"]["variants"]) <= set(initialisations.REGISTRY)
    assert all(
        e.pretraining is None or isinstance(e.pretraining, initialisations.Pretraining)
        for e in initialisations.REGISTRY.values()
    )


def test_each_initialisation_names_the_stage_that_writes_its_encoder(root, tmp_path):
    """`produced_by` is what dvc.yaml says: the stage whose outputs hold the encoder file, for
    every registry entry: the default's, and the experiment rows' (the pseudo-label controls,
    imagenet, ssl) once their params switch them on, as the README's commands do."""
    shutil.copy(root / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["pretrain_encoder"]["initialisations"] += ["permuted_clusters", "raw_clusters"]
    params["import_encoder"] |= {"initialisations": ["imagenet"], "weights": "/somewhere/resnet34.pth"}
    params["train_ssl"]["initialisations"] = ["ssl"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    for repo in (root, tmp_path):
        writers = {o.def_path: s.name.split("@")[0] for s in Repo(str(repo)).index.stages for o in s.outs}
        found = {p.split("/")[-1].rsplit("-", 1)[0] for p in writers if p.startswith("models/encoders/")}
        for name in found:
            encoder = f"models/encoders/{name}-{params['runs'][0]}.safetensors"
            assert writers[encoder] == initialisations.get(name).produced_by, name
        if repo == root:
            # the U-Nets' variants, plus the encoder only the probe and the clustering read
            assert found == set(params["train_unet"]["variants"]) | {"autoencoder"}
    assert found == set(initialisations.REGISTRY)  # every entry has its stage


def test_cluster_targets_are_files_of_the_run_folder(tmp_path):
    for name in ("pseudo_labels", "permuted_clusters", "raw_clusters"):
        pretraining = initialisations.get(name).pretraining
        assert pretraining.targets_file(tmp_path) == tmp_path / f"{name}.csv"
    labels = initialisations.get("labels").pretraining
    assert labels.targets_file(tmp_path / "index.csv") == tmp_path / "index.csv"


def test_a_pretraining_that_is_not_a_pretraining_object_is_refused():
    with pytest.raises(ValueError, match="a core.initialisations.Pretraining or None"):
        initialisations.register(initialisations.Initialisation("strings", "pretrain_encoder", "cluster"))
    assert "strings" not in initialisations.REGISTRY
