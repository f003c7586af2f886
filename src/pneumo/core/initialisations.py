"""The study's main axis as a registry: every way to initialise the U-Net's encoder.

An entry names the DVC stage that writes its encoder file (`models/encoders/<name>-<run>.safetensors`;
`tests/test_initialisations.py` checks it against dvc.yaml) and, for encoders pretrained with a
classification head by `pretrain_encoder`, a `Pretraining`: the object that reads the targets,
sizes the head, gives the criterion and the validation scores, and says what the head's
Grad-CAM explains. `pretrain_encoder` and `activation_maps` call it and never compare names,
so a new kind of pretraining is a new `Pretraining` here (or in a plugin or a test), not an
edit of any task. `train_unet` needs only the encoder file. docs/architecture.md lists every edit that
adding an initialisation takes."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumo.core import gradcam
from pneumo.core.models import by_name


class Pretraining:
    """What `pretrain_encoder` fits encoder + head to. Subclasses set `targets` (which input of
    the stage holds the targets: `labels` = the prepared CXR-14 index, `pseudo_labels` = a
    cluster CSV) and `gradcam_label`, and implement the methods below."""

    targets: str
    gradcam_label: str  # what the head's Grad-CAM explains, as the activation-map grid names it

    def targets_file(self, given: Path) -> Path:
        """The file holding the targets, from the stage input `targets` names."""
        return given

    def read(self, rows: list[dict], classes: list[str], targets_csv: Path) -> np.ndarray:
        """Per prepared image (`rows` of its index), the target the head is fitted to."""
        raise NotImplementedError

    def outputs(self, targets: np.ndarray) -> int:
        """Width of the head for these targets."""
        raise NotImplementedError

    def criterion(self) -> nn.Module:
        raise NotImplementedError

    def scores(self, logits: torch.Tensor, truth: torch.Tensor, classes: list[str]) -> tuple[dict, dict]:
        """Validation scores logged per epoch (`name -> value`, as `val/<name>`) and entries
        for the training summary only."""
        raise NotImplementedError

    def gradcam_target(self, classes: list[str]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The head logit whose Grad-CAM `activation_maps` draws."""
        raise NotImplementedError


def _rows_by_id(rows: list[dict], targets_csv: Path) -> list[dict]:
    """The target CSV's row of every prepared image, in the images' order."""
    with open(targets_csv, newline="") as f:
        by_id = {r["image_id"]: r for r in csv.DictReader(f)}
    missing = [r["image_id"] for r in rows if r["image_id"] not in by_id]
    if missing:
        raise ValueError(f"{targets_csv}: no target for {len(missing)} image(s), e.g. {missing[0]}")
    return [by_id[r["image_id"]] for r in rows]


@dataclass(frozen=True)
class ClassLabels(Pretraining):
    """BCE over the multi-hot class columns of the CXR-14 labels; validation: the mean AUC
    over the classes (per class in the summary); Grad-CAM: the logit of `gradcam_class`."""

    gradcam_class: str = "Pneumothorax"
    targets: str = "labels"

    @property
    def gradcam_label(self) -> str:
        return self.gradcam_class

    def read(self, rows, classes, targets_csv):
        return np.array([[float(r[c]) for c in classes] for r in _rows_by_id(rows, targets_csv)], dtype=np.float32)

    def outputs(self, targets):
        return targets.shape[1]

    def criterion(self):
        return nn.BCEWithLogitsLoss()

    def scores(self, logits, truth, classes):
        from sklearn.metrics import roc_auc_score  # ~1 s to import: only where pretraining validates

        aucs = {
            re.sub(r"\W+", "_", name.lower()): float(roc_auc_score(truth[:, j], logits[:, j]))
            for j, name in enumerate(classes)
            if 0 < truth[:, j].sum() < len(truth)  # keys without spaces: "No Finding" -> no_finding
        }
        if not aucs:
            return {}, {}
        return {"auc": float(np.mean(list(aucs.values())))}, {"val_auc_by_class": aucs}  # the curve: the mean

    def gradcam_target(self, classes):
        return gradcam.class_logit(classes.index(self.gradcam_class))


@dataclass(frozen=True)
class Clusters(Pretraining):
    """Cross-entropy over the `cluster` column of `<table>.csv` in the run's cluster folder
    (cluster_latents: the pseudo-labels, or a control of them); validation: accuracy;
    Grad-CAM: the logit of the cluster each image is predicted to be."""

    table: str = "pseudo_labels"
    targets: str = "pseudo_labels"
    gradcam_label: str = "cluster"

    def targets_file(self, given):
        return Path(given) / f"{self.table}.csv"

    def read(self, rows, classes, targets_csv):
        return np.array([int(r["cluster"]) for r in _rows_by_id(rows, targets_csv)], dtype=np.int64)

    def outputs(self, targets):
        return int(targets.max()) + 1

    def criterion(self):
        return nn.CrossEntropyLoss()

    def scores(self, logits, truth, classes):
        return {"accuracy": float((logits.argmax(1) == truth).float().mean())}, {}

    def gradcam_target(self, classes):
        return gradcam.predicted_class


@dataclass(frozen=True)
class Initialisation:
    name: str
    produced_by: str  # the DVC stage that writes the encoder file (tested against dvc.yaml)
    pretraining: Pretraining | None = None  # how `pretrain_encoder` fits it; None: not pretrained there


REFERENCE = "none"  # the baseline every other initialisation is compared with (report, linear probe)

REGISTRY: dict[str, Initialisation] = {
    "none": Initialisation("none", "init_encoder"),  # seeded random weights: the baseline
    "labels": Initialisation("labels", "pretrain_encoder", ClassLabels("Pneumothorax")),
    "pseudo_labels": Initialisation("pseudo_labels", "pretrain_encoder", Clusters("pseudo_labels")),
    # controls of the pseudo-label claim (an experiment, docs/experiments.md): the same cluster sizes with ids
    # shuffled across the films (no content), and clusters of raw pixels (content without a model)
    "permuted_clusters": Initialisation("permuted_clusters", "pretrain_encoder", Clusters("permuted_clusters")),
    "raw_clusters": Initialisation("raw_clusters", "pretrain_encoder", Clusters("raw_clusters")),
    "autoencoder": Initialisation("autoencoder", "train_autoencoder"),
    "ssl": Initialisation("ssl", "train_ssl"),  # VICReg on unlabeled CXR-14
    "imagenet": Initialisation("imagenet", "import_encoder"),  # torchvision's weights from a local file (an experiment)
}


def get(name: str) -> Initialisation:
    """The registered initialisation; the error lists the valid names."""
    return by_name(REGISTRY, name, "encoder initialisation")


def register(initialisation: Initialisation) -> None:
    """Add an initialisation (e.g. from a plugin or a test); its name must be new."""
    if initialisation.name in REGISTRY:
        raise ValueError(f"encoder initialisation {initialisation.name!r} is already registered")
    if initialisation.pretraining is not None and not isinstance(initialisation.pretraining, Pretraining):
        raise ValueError(f"pretraining {initialisation.pretraining!r}: a core.initialisations.Pretraining or None")
    REGISTRY[initialisation.name] = initialisation
