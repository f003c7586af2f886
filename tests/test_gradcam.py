"""Grad-CAM: a model whose output depends on one image region gets a map that peaks there."""

import numpy as np
import pytest
import torch
from torch import nn

from pneumo import gradcam, models


class RegionModel(nn.Module):
    """conv -> pool to 8x8 -> keep only cells (1..2, 5..6) -> linear: the output depends on that region only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4))
        self.keep = torch.zeros(1, 1, 8, 8)
        self.keep[..., 1:3, 5:7] = 1
        self.gate = nn.Identity()  # the hooked layer: activations after the region gate
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        features = self.gate(self.conv(x) * self.keep)
        return self.head(features.mean(dim=(2, 3)))


def test_gradcam_peaks_in_the_region_the_output_depends_on():
    torch.manual_seed(0)
    model = RegionModel()
    with torch.no_grad():
        model.head.weight.fill_(1.0)
        model.conv[0].bias.fill_(0.1)
    x = torch.rand(3, 1, 32, 32)
    heat = gradcam.gradcam(model, model.gate, x, gradcam.class_logit(1))
    assert heat.shape == (3, 32, 32) and heat.max() == pytest.approx(1.0)
    region = np.zeros((32, 32), bool)
    region[4:12, 20:28] = True  # cells 1..2 x 5..6 of an 8x8 grid over 32 px
    for h in heat:
        row, col = np.unravel_index(h.argmax(), h.shape)
        assert region[row, col]
    assert gradcam.mass_inside(heat, np.stack([region] * 3), dilate=2).min() > 0.9


def test_gradcam_on_the_unet_and_classifier_encoders():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    unet = models.build_unet(1)
    heat = gradcam.gradcam(unet, unet.encoder.layer4, x, gradcam.mask_logit_sum)
    assert heat.shape == (2, 64, 64) and 0 <= heat.min() and heat.max() <= 1
    classifier = models.Classifier(3)
    assert gradcam.gradcam(classifier, classifier.encoder.layer3, x, gradcam.predicted_class).shape == (2, 64, 64)


def test_mass_inside():
    heat = np.zeros((1, 4, 4))
    heat[0, 0, 0], heat[0, 3, 3] = 3.0, 1.0
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 0, 0] = True
    assert gradcam.mass_inside(heat, mask, dilate=0)[0] == pytest.approx(0.75)
    assert gradcam.mass_inside(heat, mask, dilate=3)[0] == pytest.approx(1.0)
    assert gradcam.mass_inside(np.zeros((0, 4, 4)), np.zeros((0, 4, 4), bool), dilate=1).shape == (0,)
