"""U-Net epoch selection: never a frozen-encoder epoch (why the validation loss and not a
tuned score picks it: tests/test_validation.py); a share of the training films is whole
patients, nested, trained with the steps of the whole split."""

import json

import numpy as np
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


def test_a_share_is_whole_patients_nested_and_keeps_its_positive_rate():
    """share_indices: the same films for any caller, whole patients, a smaller share inside a
    larger one, positives and negatives each cut to the share (rounded up)."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(300):
        positive = p % 4 == 0
        for _ in range(1 + p % 3):  # 1-3 films a patient
            rows.append({"patient_id": f"p{p}", "split": "train" if p < 240 else "val",
                         "mask_pixels": str(int(positive) * int(rng.integers(1, 50)))})  # fmt: skip
    films = {s: share_indices(rows, s) for s in (5, 10, 25, 50, 100)}
    assert np.array_equal(films[100], split_indices(rows, "train"))
    for small, large in ((5, 10), (10, 25), (25, 50), (50, 100)):
        assert set(films[small]) < set(films[large])
    for s, kept in films.items():
        patients = {rows[i]["patient_id"] for i in kept}
        assert {i for i, r in enumerate(rows) if r["patient_id"] in patients} == set(kept.tolist())  # whole patients
        positive = np.array([int(rows[i]["mask_pixels"]) > 0 for i in kept])
        train_positive = np.array([int(rows[i]["mask_pixels"]) > 0 for i in films[100]])
        assert positive.sum() >= np.ceil(s * train_positive.sum() / 100)
        assert positive.sum() <= np.ceil(s * train_positive.sum() / 100) + 2  # at most one patient over
    assert np.array_equal(share_indices(list(reversed(rows)), 25), len(rows) - 1 - share_indices(rows, 25)[::-1])
    with pytest.raises(ValueError, match="percentage"):
        share_indices(rows, 0)
