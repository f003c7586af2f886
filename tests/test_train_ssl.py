"""The `ssl` initialisation: VICReg (lightly's loss, projector and two-view transform) on the
prepared films, with radiograph views; a real short training, seeded like every stage."""

import json

import numpy as np
import pytest
import torch
from lightly.transforms.multi_view_transform import MultiViewTransform

from pneumo.core import loop, models, runtime
from pneumo.tasks import train_ssl

QUIET = {"crop": [1.0, 1.0], "rotate_deg": 0, "gamma": 1.0, "brightness": 0, "contrast": 0, "blur": 0, "noise": 0}
VIEWS = {
    "crop": [0.6, 1.0],
    "rotate_deg": 10,
    "gamma": 1.4,
    "brightness": 0.2,
    "contrast": 0.2,
    "blur": 0.5,
    "noise": 0.02,
}


def film(size=32, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random((1, size, size), dtype=np.float32))


def test_each_view_knob_at_zero_leaves_the_film_as_it_is():
    x = film()
    assert torch.allclose(train_ssl.radiograph_view(32, **QUIET)(x), x, atol=1e-6)
    for knob, value in VIEWS.items():  # each knob alone changes the film
        if knob == "blur":
            value = 1.0  # always blurred
        view = train_ssl.radiograph_view(32, **(QUIET | {knob: value}))
        torch.manual_seed(1)
        assert not torch.allclose(view(x), x, atol=1e-4), knob


def test_two_views_are_grey_films_of_the_same_size_that_differ():
    x = film(seed=3)
    view = train_ssl.radiograph_view(32, **VIEWS)
    torch.manual_seed(0)
    a, b = MultiViewTransform([view, view])(x)
    assert a.shape == b.shape == (1, 32, 32)  # one channel in, one out: no colour
    assert 0 <= a.min() and a.max() <= 1 and not torch.equal(a, b)


def run(tmp_path, tiny_siim, name, seed, rt=None, **overrides):
    args = {
        "images_dir": tiny_siim / "siim",  # any prepared films: labels are never read
        "out_path": tmp_path / name / "ssl.safetensors",
        "live_dir": tmp_path / name / "live",
        "checkpoint_path": tmp_path / name / "ck.pt",
        **VIEWS,
        "projector": [64, 32],
        "max_epochs": 2,
        "patience": 2,
        "min_delta": 0.005,
        "batch_size": 8,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "seed": seed,
        **overrides,
    }
    runtime.seed_everything(seed)
    summary = train_ssl.train_ssl(**args, rt=rt or runtime.start("cpu"))
    return summary, models.load_checkpoint(args["out_path"])


def test_vicreg_trains_the_unet_encoder_seeded_by_the_run(tmp_path, tiny_siim):
    summary, (state, meta) = run(tmp_path, tiny_siim, "a", seed=0)
    assert np.isfinite(summary["train_loss"]) and np.isfinite(summary["val_loss"])
    assert meta["source"] == "ssl" and meta["pretrained"] is True and "VICReg" in meta["method"]
    encoder = models.build_encoder(1)
    models.load_encoder_into(encoder, tmp_path / "a" / "ssl.safetensors")  # loads into the U-Net's encoder
    runtime.seed_everything(0)
    assert not torch.equal(state["conv1.weight"], models.build_encoder(1).conv1.weight)  # it trained
    live = json.loads((tmp_path / "a" / "live" / "metrics.json").read_text())
    assert live["plateau"]["epochs"] == 2 and live["selected"]["epoch"] in (0, 1)
    _, (same, _) = run(tmp_path, tiny_siim, "b", seed=0)
    _, (other, _) = run(tmp_path, tiny_siim, "c", seed=1)
    assert all(torch.equal(state[k], same[k]) for k in state)  # a run is its seed (CPU)
    assert not torch.equal(state["conv1.weight"], other["conv1.weight"])


def test_loader_workers_and_a_resume_change_nothing(tmp_path, tiny_siim, monkeypatch):
    """Each view's random numbers come from (seed, epoch, film): two loader workers, or a run
    killed in its third epoch and resumed from its checkpoint, end with the weights of an
    uninterrupted single-process run."""
    monkeypatch.setenv("PNEUMO_CHECKPOINT_SECONDS", "0")  # a checkpoint after every epoch
    three = {"max_epochs": 3, "patience": 3}
    _, (whole, _) = run(tmp_path, tiny_siim, "whole", seed=0, **three)
    workers = runtime.start("cpu", local=runtime.LocalSettings(loader_workers=2))
    _, (spread, _) = run(tmp_path, tiny_siim, "workers", seed=0, rt=workers, **three)
    assert all(torch.equal(whole[k], spread[k]) for k in whole)

    trained = loop.train_one_epoch

    def killed_in_epoch_2(*args):
        if args[-1] == 2:
            raise KeyboardInterrupt
        return trained(*args)

    monkeypatch.setattr(loop, "train_one_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_siim, "resumed", seed=0, **three)
    monkeypatch.setattr(loop, "train_one_epoch", trained)
    _, (resumed, _) = run(tmp_path, tiny_siim, "resumed", seed=0, **three)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
