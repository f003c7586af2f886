"""U-Net epoch selection: the validation loss, never a frozen-encoder epoch, and never an
unconfident model because post-processing can empty its predictions."""

import json

import numpy as np
import pytest
import torch

from pneumo.core import inference, metrics, models, runtime, validation
from pneumo.formats.prepared import load_prepared
from pneumo.tasks import train_unet


def criterion():
    return validation.WeightedSum(validation.PIXEL_LOSSES["bce"](), 1.0, 1.0)


def test_validation_loss_ranks_a_trained_model_above_an_untrained_one(tiny_siim):
    """On the real samples: an untrained U-Net's probabilities tie with predicting nothing
    on SIIM Dice once post-processing is tuned (its conservative settings empty every
    unconfident image), so that score cannot tell it from a model that found the masks.
    The validation loss can: it is far lower for the model that found them."""
    images, masks, _ = load_prepared(tiny_siim / "siim")
    truth = np.asarray(masks, bool)
    torch.manual_seed(0)
    untrained = inference.predict_probs(models.build_unet(1), images, np.arange(len(images)), torch.device("cpu"))
    # a model that learned the findings, imperfectly: the true masks, blurred and noisy
    rng = np.random.default_rng(0)
    trained = np.clip(0.8 * truth + 0.1 + rng.normal(0, 0.15, truth.shape), 0.01, 0.99).astype(np.float32)
    grid = ([0.5, 0.9], [0, 1000], [0.5])
    empty_score = metrics.dice_per_image(np.zeros_like(truth), truth).mean()
    assert metrics.tune_postprocess(untrained, truth, *grid)["score"] == empty_score  # tuned away
    loss_untrained = validation.validation_loss(criterion(), untrained, truth)
    loss_trained = validation.validation_loss(criterion(), trained, truth)
    assert loss_trained < loss_untrained - 0.3


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
