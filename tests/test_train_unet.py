"""U-Net epoch selection: never a frozen-encoder epoch (why the validation loss and not a
tuned score picks it: tests/test_validation.py); a share of the training films trains with the
steps of the whole split (which films a share holds: tests/test_prepared.py)."""

import json

import pytest

from pneumo.core import models, runtime
from pneumo.formats.prepared import load_prepared, share_indices, split_indices
from pneumo.tasks import train_unet


@pytest.mark.slow  # two training epochs of the full U-Net
def test_a_frozen_encoder_epoch_is_never_kept(tiny_siim, unet_run):
    """Epoch 0 trains the decoder only; epoch 1 unfreezes the encoder with a learning rate
    so large that its validation loss is worse. The rule still keeps epoch 1: an epoch
    whose encoder never trained is not a candidate (for `none` it is a random encoder)."""
    args = unet_run(tiny_siim, "frozen", max_epochs=2, freeze_encoder_epochs=1, lr=0.5)
    best = train_unet.train_unet(**args, rt=runtime.start("cpu"))
    history = (tiny_siim / "frozen" / "live" / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()[1:]
    losses = [float(r.split("\t")[1]) for r in history]
    assert not losses[1] <= losses[0], "the setup must make the frozen epoch look better (nan: diverged)"
    assert best["epoch"] == 1
    _, meta = models.load_checkpoint(tiny_siim / "frozen" / "model.safetensors")
    assert meta["best_epoch"] == 1
    summary = json.loads((tiny_siim / "frozen" / "live" / "metrics.json").read_text())
    assert summary["selected"]["epoch"] == 1


@pytest.mark.slow  # two training epochs of the full U-Net
def test_a_share_trains_on_its_films_with_the_steps_of_the_whole_split(tiny_siim, unet_run):
    """A 50% share learns from half the training films (whole patients) and still draws, each
    epoch, as many films as the whole split holds: the same steps for every share."""
    _, _, rows = load_prepared(tiny_siim / "siim")
    half = share_indices(rows, 50)
    train_unet.train_unet(**unet_run(tiny_siim, "half", share=50, freeze_encoder_epochs=0), rt=runtime.start("cpu"))
    summary = json.loads((tiny_siim / "half" / "live" / "metrics.json").read_text())
    assert summary["training_films"]["films"] == len(half) < len(split_indices(rows, "train"))
    assert summary["training_films"]["share"] == 50
