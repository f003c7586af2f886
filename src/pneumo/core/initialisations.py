"""The study's main axis as a registry: every way to initialise the U-Net's encoder.

Each entry says how its encoder file (`models/encoders/<name>.safetensors`) is produced,
what its pretraining head was fitted to (and so what its Grad-CAM explains), and what
producing it reads. `pretrain_encoder`, `activation_maps` and the docs read this table;
`train_unet` needs only the encoder file. Adding an initialisation: one entry here, one
task module if it needs a training method of its own (a new classifier target needs none:
`pretrain_encoder` fits any `pretraining` kind below), one line in dvc.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from pneumo.core.models import by_name

PRETRAINING = ("multilabel", "cluster")  # BCE over the class columns | cross-entropy over a `cluster` column


@dataclass(frozen=True)
class Initialisation:
    name: str
    produced_by: str  # the DVC stage that writes the encoder file
    pretraining: str | None = None  # what `pretrain_encoder` fits encoder + head to; None: not pretrained there
    targets: str | None = None  # the `pretrain_encoder` input holding those targets: labels | pseudo_labels
    head_target: str | None = None  # Grad-CAM target of the head: a class name, or "predicted_class"
    reads: tuple[str, ...] = ()  # what producing it reads (dvc.yaml declares the same)


REGISTRY: dict[str, Initialisation] = {
    "none": Initialisation("none", "init_encoder"),  # seeded random weights: the baseline
    "labels": Initialisation(
        "labels", "pretrain_encoder", "multilabel", "labels", "Pneumothorax", ("data/prepared/cxr14/index.csv",)
    ),
    "pseudo_labels": Initialisation(
        "pseudo_labels", "pretrain_encoder", "cluster", "pseudo_labels", "predicted_class", ("data/pseudo_labels",)
    ),
    "autoencoder": Initialisation("autoencoder", "train_autoencoder", reads=("data/prepared/cxr14",)),
}


def get(name: str) -> Initialisation:
    """The registered initialisation; the error lists the valid names."""
    return by_name(REGISTRY, name, "encoder initialisation")


def register(initialisation: Initialisation) -> None:
    """Add an initialisation (e.g. from a plugin or a test); its name must be new."""
    if initialisation.name in REGISTRY:
        raise ValueError(f"encoder initialisation {initialisation.name!r} is already registered")
    if initialisation.pretraining not in (None, *PRETRAINING):
        raise ValueError(f"pretraining {initialisation.pretraining!r}: valid {PRETRAINING} or None")
    REGISTRY[initialisation.name] = initialisation
