"""U-Net epoch selection: never a frozen-encoder epoch (why the validation loss and not a
tuned score picks it: tests/test_validation.py); a share of the training films trains with the
steps of the whole split (which films a share holds: tests/test_prepared.py); a pretrained
encoder, and only it, learns at `encoder_lr_scale` times the decoder's rate."""

import json

import pytest
import torch

from pneumo.core import loop, models, runtime
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


def _encoder_and_rest(model: torch.nn.Module) -> tuple[set[int], set[int]]:
    encoder = {id(p) for p in model.encoder.parameters()}
    return encoder, {id(p) for p in model.parameters()} - encoder


def test_a_scaled_encoder_learns_in_a_group_of_its_own_and_the_scheduler_halves_both():
    """Scale 0.1: the encoder's parameters at lr / 10, every other parameter at lr, each once;
    an epoch that does not improve halves both rates, and a resumed optimiser keeps them."""
    model = models.build_unet(1)
    optimizer = loop.adam(train_unet.parameter_groups(model, 1e-3, 0.1), 1e-3)
    encoder, rest = _encoder_and_rest(model)
    groups = optimizer.param_groups
    assert [{id(p) for p in g["params"]} for g in groups] == [encoder, rest]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    scheduler = loop.plateau_scheduler(optimizer, 0.02)
    scheduler.step(1.0)
    scheduler.step(1.0)  # no improvement
    assert [g["lr"] for g in groups] == pytest.approx([5e-5, 5e-4])
    resumed = loop.adam(train_unet.parameter_groups(model, 1e-3, 0.1), 1e-3)
    resumed.load_state_dict(optimizer.state_dict())
    assert [g["lr"] for g in resumed.param_groups] == pytest.approx([5e-5, 5e-4])


def test_scale_one_keeps_a_single_group():
    model = models.build_unet(1)
    optimizer = loop.adam(train_unet.parameter_groups(model, 1e-3, 1.0), 1e-3)
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["lr"] == 1e-3
    assert len(optimizer.param_groups[0]["params"]) == len(list(model.parameters()))


@pytest.mark.slow  # three one-epoch trainings of the full U-Net
def test_only_a_pretrained_encoder_gets_its_own_rate(tiny_siim, unet_run, monkeypatch):
    """With scale 0.1 a pretrained encoder trains at lr / 10 beside the decoder at lr; the
    random `none` encoder (its checkpoint says pretrained=False) keeps one group at lr and ends
    with the very weights it has at scale 1."""
    built, adam = [], loop.adam

    def recorded_adam(parameters, lr):
        built.append(adam(parameters, lr))
        return built[-1]

    monkeypatch.setattr(loop, "adam", recorded_adam)
    torch.manual_seed(0)
    models.save_checkpoint(
        tiny_siim / "random.safetensors", models.build_encoder(1), kind="encoder", encoder="resnet34", pretrained=False
    )
    runs = (("scaled", "encoder.safetensors", 0.1), ("scaled-none", "random.safetensors", 0.1),
            ("default-none", "random.safetensors", 1.0))  # fmt: skip
    for run, encoder, scale in runs:
        args = unet_run(tiny_siim, run, encoder_path=tiny_siim / encoder, freeze_encoder_epochs=0)
        torch.manual_seed(0)  # the decoder's initialisation, as the stage seeds it
        train_unet.train_unet(**args, encoder_lr_scale=scale, rt=runtime.start("cpu"))
    pretrained, random, _ = (o.param_groups for o in built)
    assert [g["lr"] for g in pretrained] == pytest.approx([1e-4, 1e-3])
    assert len(random) == 1 and random[0]["lr"] == pytest.approx(1e-3)
    scaled, default = (
        models.load_checkpoint(tiny_siim / r / "model.safetensors")[0] for r in ("scaled-none", "default-none")
    )
    assert scaled.keys() == default.keys() and all(torch.equal(scaled[k], default[k]) for k in scaled)
