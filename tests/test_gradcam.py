"""Grad-CAM: a model whose output depends on one image region gets a map that peaks there."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pneumo.core import gradcam, models


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


class TwoAreaSegmenter(nn.Module):
    """U-Net-like toy: a 3x3 conv with a bright (channel 0) and a dark (channel 1) detector, then a
    nonlinear per-pixel decoder to mask logits. Bright pixels (the finding, area A) get positive logits
    from relu(bright - dark); dark pixels (background, B) get large negative logits that rise a little
    with relu(dark - bright). Through the decoder's ReLUs, A's logits read the hooked channels one way
    and B's the other way, as in a trained U-Net, and B has many more pixels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0])[:, None, None, None].expand(2, 1, 3, 3) / 9)
            self.conv.bias.copy_(torch.tensor([-0.5, 0.5]))
        self.features = nn.ReLU()  # the hooked layer

    def forward(self, x):
        f = self.features(self.conv(x))
        bright, dark = f[:, :1], f[:, 1:]
        return 20 * F.relu(bright - dark) + 2 * F.relu(dark - bright) - 5


def test_region_target_explains_the_region_and_the_all_pixel_sum_does_not():
    torch.manual_seed(0)
    area_a = torch.zeros(32, 32, dtype=torch.bool)
    area_a[8:16, 20:28] = True  # 1/16 of the image
    x = torch.where(area_a, 0.7 + 0.3 * torch.rand(3, 1, 32, 32), 0.3 * torch.rand(3, 1, 32, 32))
    model = TwoAreaSegmenter()
    logits = model(x)[:, 0]
    assert (logits[:, area_a] > 0).float().mean() > 0.5 and (logits[:, ~area_a] < -3).all()
    in_a = np.stack([area_a.numpy()] * 3)
    region = gradcam.gradcam(model, model.features, x.clone(), gradcam.region_logit_sum(area_a.expand(3, 32, 32)))
    whole = gradcam.gradcam(model, model.features, x.clone(), gradcam.region_logit_sum(torch.ones(3, 32, 32)))
    mass_region = gradcam.mass_inside(region, in_a, dilate=0)
    mass_whole = gradcam.mass_inside(whole, in_a, dilate=0)
    assert mass_region.min() > 0.8 and mass_whole.max() < 0.2  # the background dominates the all-pixel sum
    assert region.max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("regions", "expected"),
    [
        ([[1, 0], [0, 0]], [2.0]),
        ([[1, 1], [1, 1]], [10.0]),
        ([[0, 0], [0, 0]], [0.0]),
    ],
)
def test_region_logit_sum_scores(regions, expected):
    logits = torch.tensor([[[[2.0, 3.0], [-1.0, 6.0]]]])
    scores = gradcam.region_logit_sum(torch.tensor([regions], dtype=torch.bool))(logits)
    assert scores.tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match="do not fit"):
        gradcam.region_logit_sum(torch.ones(2, 2, 2))(logits)


def test_gradcam_on_the_unet_and_classifier_encoders():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    unet = models.build_unet(1)
    regions = torch.zeros(2, 64, 64, dtype=torch.bool)
    regions[0, 16:40, 8:30] = True  # image 1: empty region -> score 0, no gradient, an all-zero map
    heat = gradcam.gradcam(unet, unet.encoder.layer3, x, gradcam.region_logit_sum(regions))
    assert heat.shape == (2, 64, 64) and 0 <= heat.min() and heat.max() <= 1
    assert heat[0].max() == pytest.approx(1.0) and not heat[1].any()
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


def test_target_regions_prefer_prediction_then_truth_then_probability():
    empty, spot, other = np.zeros((4, 4), bool), np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    spot[1, 1], other[2, 3] = True, True
    probs = np.stack([np.where(other, 0.7, 0.1)] * 4)
    probs[3] = 0.2  # nothing above 0.5
    predicted = np.stack([spot, empty, empty, empty])
    truth = np.stack([other, spot, empty, empty])
    regions, sources = gradcam.unet_regions(probs, predicted, truth)
    assert list(sources) == ["prediction", "truth", "probability", "none"]
    assert (regions == np.stack([spot, spot, other, empty])).all()
