"""pneumo.core.validation: the U-Net's validation loss picks its epoch because, unlike SIIM
Dice after tuned post-processing, it ranks a model that found the findings above an untrained
one (its streamed form against the whole-array one: tests/test_streaming.py)."""

import numpy as np
import torch

from pneumo.core import inference, metrics, models, validation
from pneumo.formats.prepared import load_prepared


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
