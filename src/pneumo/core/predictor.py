"""A trained model as a Python object: `pneumo.load_model(path)` gives a `Model` whose
`predict` takes a film (a 2-D array or a DICOM file) and returns its mask and probability map
at the film's own rows and columns, with the model's post-processing. `pneumo predict` runs
the same object, batch by batch, so a mask from Python and a row of the CSV agree pixel for
pixel.

Geometry (letterboxing the film into the model's square and back) and the model folder's
checks are `pneumo.core.predict`'s; this module adds what a caller holding one film needs,
the model's identity for the files that record it (`algorithm`: a SEG's Algorithm
Identification), and one warning: a model trained on the embedded phantoms (its card says
so) tells once, when it first meets a film whose UID is not a phantom's, that its results on
patients' films mean nothing. It refuses nothing.

torch is imported inside the functions that run the model, as in `core.predict`, so importing
this module (and `pneumo`) stays light.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo import __version__
from pneumo.core import metrics, model_card
from pneumo.core.predict import MODEL_FILES, device_of, film_area, letterbox, unletterbox
from pneumo.core.predict import load_model as load_network
from pneumo.formats import dicom
from pneumo.formats.seg import Algorithm

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One film's result at its own geometry."""

    mask: np.ndarray  # bool (rows, columns): the post-processed finding, what the CSV's RLE encodes
    probabilities: np.ndarray  # float32 (rows, columns) in [0, 1]: each pixel's sigmoid, before post-processing
    image_id: str | None = None  # the SOPInstanceUID (ImageId) when read from a DICOM


@dataclass
class Film:
    """A film ready for the model: its 8-bit pixels, its letterboxed square at the model's
    size and the model pixels that hold it."""

    pixels: np.ndarray
    small: np.ndarray
    inside: np.ndarray


class Model:
    """A U-Net with its post-processing thresholds, on one device. Build it with `load_model`."""

    def __init__(self, folder: Path, network: torch.nn.Module, meta: dict, thresholds: dict, device: torch.device):
        self.folder, self.network, self.meta, self.thresholds, self.device = folder, network, meta, thresholds, device
        self.image_size = int(meta["image_size"])
        card = folder / model_card.FILE
        self.card = card.read_text(encoding="utf-8") if card.is_file() else ""
        if not self.card:
            log.debug(f"{folder}: no {model_card.FILE}: training data unknown")
        self.trained_on_phantoms = model_card.trained_on_phantoms(self.card)
        self._warned = False

    def __repr__(self) -> str:
        return f"<pneumo Model {self.folder} ({self.variant}, {self.image_size} px, {self.device})>"

    @property
    def variant(self) -> str:
        """The encoder initialisation the U-Net was trained from (`none`, `labels`, ...)."""
        return str(self.meta.get("variant", "?"))

    @cached_property
    def algorithm(self) -> Algorithm:
        """The model's identity, as a SEG records it: its name (the variant, from the card and
        checkpoint), a version that changes with the weights or the thresholds (pneumo's
        version + a digest of model.safetensors and postprocess.json), and its parameters."""
        digest = hashlib.blake2b(digest_size=6)
        for name in MODEL_FILES:
            with open(self.folder / name, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
        share = self.meta.get("params", {}).get("share")
        parameters = {
            "variant": self.variant,
            **({"share": f"{share}%"} if share is not None else {}),
            "image_size": str(self.image_size),
            **{k: str(self.thresholds[k]) for k in ("top", "min_area", "bottom")},
            "training_data": "synthetic phantoms" if self.trained_on_phantoms else "SIIM-ACR",
        }
        return Algorithm(
            name=f"pneumo U-Net, encoder initialisation {self.variant}"[:64],
            version=f"{__version__}+{digest.hexdigest()}",
            parameters=parameters,
        )

    def predict(self, image: np.ndarray | str | os.PathLike) -> Prediction:
        """The mask and probability map of one film: a 2-D array (uint8 as 8-bit display
        values, bright = dense, as `pneumo.dicom.read_image` gives; any other integer or float
        array is scaled over its own range to 0-255) or a DICOM file's path (read like
        `pneumo predict` reads it; a `pneumo.dicom.DicomError` says why it cannot be)."""
        image_id = None
        if isinstance(image, str | os.PathLike):
            radiograph = dicom.read_dicom(image)
            self.met(radiograph.image_id)
            pixels, image_id = radiograph.pixels, radiograph.image_id
        else:
            pixels = as_display(image)
        film = self.prepare(pixels)
        ((mask, probabilities),) = self.forward([film])
        return self.at_film(film, mask, probabilities, image_id)

    def met(self, image_id: str) -> None:
        """Note a DICOM's ImageId: a model trained on the phantoms warns, once, at the first one
        that is not a phantom's (its UID outside formats.dicom.SYNTHETIC_UID_ROOT)."""
        if self.trained_on_phantoms and not self._warned and not image_id.startswith(dicom.SYNTHETIC_UID_ROOT):
            self._warned = True
            log.warning(
                f"warning: {self.folder} was trained on synthetic phantoms (its {model_card.FILE} says so), and "
                f"{dicom.shown(image_id)} is a real film: its predictions on real films mean nothing "
                "(predicted all the same; this warning is given once)"
            )

    def prepare(self, pixels: np.ndarray) -> Film:
        """A uint8 film letterboxed into the model's square (`core.predict.letterbox`)."""
        return Film(pixels, letterbox(pixels, self.image_size), film_area(pixels.shape, self.image_size))

    def forward(self, films: Sequence[Film]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(post-processed mask, probabilities) on the model's grid for each film, in one pass.
        The padding holds no finding: its probabilities are 0, so it counts nothing towards
        `min_area`. Post-processing runs on the model grid, where its thresholds were tuned."""
        import torch

        from pneumo.core import data

        if not films:
            return []
        small = torch.from_numpy(np.stack([film.small for film in films]))
        with torch.no_grad():
            probs = torch.sigmoid(self.network(data.to_input(small).to(self.device))).float().cpu().numpy()[:, 0]
        for film, p in zip(films, probs, strict=True):
            p[~film.inside] = 0
        t = self.thresholds
        masks = metrics.postprocess(probs, t["top"], t["min_area"], t["bottom"])
        return list(zip(masks, probs, strict=True))

    @staticmethod
    def at_film(film: Film, mask: np.ndarray, probabilities: np.ndarray, image_id: str | None = None) -> Prediction:
        """A model-grid result back at the film's geometry (`core.predict.unletterbox`): the mask
        resized bilinearly and kept where >= 0.5, the probabilities resized bilinearly."""
        shape = film.pixels.shape
        full = unletterbox(np.asarray(mask, np.float32), shape) >= 0.5
        probs = np.clip(unletterbox(np.asarray(probabilities, np.float32), shape), 0, 1)
        return Prediction(full, probs, image_id)


def as_display(image: np.ndarray) -> np.ndarray:
    """A 2-D array as the 8-bit display values the model reads: uint8 as it is; any other
    integer or float array scaled over its own range (a constant one to 0), as formats.dicom
    scales a film without a VOI window. A ValueError for anything that is no grayscale film."""
    image = np.asarray(image)
    if image.ndim != 2 or 0 in image.shape or max(image.shape) > dicom.MAX_SIDE:
        raise ValueError(
            f"expected a 2-D grayscale film of 1 to {dicom.MAX_SIDE} pixels a side, got an array of shape {image.shape}"
        )
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool or image.dtype.kind not in "iuf":
        raise ValueError(f"expected integer or float pixel values, got {image.dtype}")
    values = image.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("the array holds values that are not finite (NaN or infinity)")
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) * 255 / (hi - lo) if hi > lo else np.zeros_like(values)
    return np.rint(scaled).astype(np.uint8)


def load_model(path: str | os.PathLike, device: str = "auto") -> Model:
    """The model in a folder the pipeline wrote (`models/unet/<share>/<variant>-<run>`:
    model.safetensors, postprocess.json, MODEL_CARD.md) on `device` (auto, cpu, cuda or
    cuda:N). A `pneumo.core.predict.PredictError` (a ValueError) says what is missing or wrong."""
    folder = Path(path)
    dev = device_of(device)
    network, meta, thresholds = load_network(folder, dev)
    return Model(folder, network, meta, thresholds, dev)
