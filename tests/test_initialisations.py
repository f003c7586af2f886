"""The registry of encoder initialisations: adding one is one entry (plus a dvc.yaml line);
pretraining, fine-tuning and activation maps then work for it with no other change."""

import csv

import numpy as np
import pytest
import torch
import yaml

from pneumo.core import initialisations, models, runtime
from pneumo.tasks import activation_maps, pretrain_encoder, train_unet


@pytest.fixture
def toy():
    """A fifth initialisation: pretrained on a made-up two-class target (image parity)."""
    entry = initialisations.Initialisation(
        "toy", "pretrain_encoder", pretraining="cluster", targets="pseudo_labels", head_target="predicted_class"
    )
    initialisations.register(entry)
    yield entry
    del initialisations.REGISTRY["toy"]


@pytest.mark.slow  # pretrains an encoder and trains a U-Net
def test_a_toy_initialisation_runs_through_pretraining_and_train_unet(toy, tiny_siim, unet_run, tmp_path):
    cxr = tiny_siim / "siim"  # any prepared image folder serves for pretraining; its ids get a toy target
    with open(cxr / "index.csv", newline="") as f:
        ids = [r["image_id"] for r in csv.DictReader(f)]
    targets = tmp_path / "toy.csv"
    targets.write_text("image_id,cluster\n" + "".join(f"{i},{k % 2}\n" for k, i in enumerate(ids)))
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
    assert 0 <= summary["val_accuracy"] <= 1  # cross-entropy over the `cluster` column, as registered
    state, meta = models.load_checkpoint(encoder)
    assert meta["source"] == "toy" and not torch.equal(state["conv1.weight"], models.build_encoder(1).conv1.weight)
    args = unet_run(tiny_siim, "toy", variant="toy", encoder_path=encoder)
    train_unet.train_unet(**args, rt=runtime.start("cpu"))
    _, meta = models.load_checkpoint(tiny_siim / "toy" / "model.safetensors")
    assert meta["variant"] == "toy"
    head, target = activation_maps._head_model(encoder, tmp_path / "heads" / "toy.safetensors", "toy", [], "cpu")
    assert head is not None and target(torch.tensor([[0.1, 0.9]])).item() == pytest.approx(0.9)


def test_unknown_and_duplicate_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown encoder initialisation 'imagenet'; valid: \['autoencoder'"):
        initialisations.get("imagenet")
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


def test_every_registered_initialisation_is_a_train_unet_variant(root):
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert set(params["train_unet"]["variants"]) <= set(initialisations.REGISTRY)
    assert np.all([e.pretraining in (None, *initialisations.PRETRAINING) for e in initialisations.REGISTRY.values()])
