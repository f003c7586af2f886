"""Predicted masks and probability maps as files other tools read, each at the film's own rows
and columns and named by its ImageId (`<ImageId><suffix>`):

| kind        | suffix            | what                                                         |
|-------------|-------------------|--------------------------------------------------------------|
| `png`       | `.png`            | 8-bit grayscale, 0 background, 255 pneumothorax              |
| `nifti`     | `.nii.gz`         | uint8 label map, 0 / 1, shape (columns, rows, 1)             |
| `dicom-seg` | `.seg.dcm`        | DICOM Segmentation referencing the film (`formats.seg`)      |
| (maps)      | `.probability.png`| 8-bit grayscale, round(255 x probability)                    |

NIfTI indexes x (columns) first: the mask's rows x columns array is stored transposed, one
slice, with the affine ITK (and so SimpleITK, MONAI's ITK reader, dcm2niix) gives the film
itself: pixel spacing from PixelSpacing (else ImagerPixelSpacing, else 1 mm), DICOM's LPS axes
turned into NIfTI's RAS ones, so a viewer lays the mask over the film the right way round.

Each writer returns bytes; the caller checks the path before writing anything. The extra
packages (highdicom, nibabel) are imported only inside the writers that need them, and
`problems` says which requested kind cannot be written here and how to install it.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import pydicom

from pneumo.formats import seg

log = logging.getLogger(__name__)

PROBABILITY_SUFFIX = ".probability.png"

# (mask (bool rows x columns), the film's DICOM header) -> the file's bytes
Writer = Callable[[np.ndarray, pydicom.Dataset], bytes]


@dataclass(frozen=True)
class MaskFormat:
    """One kind of mask file: its name suffix, the writer for a run (made from the model's
    `seg.Algorithm`, which only a SEG records), and the modules it needs beyond the base package."""

    suffix: str
    writer: Callable[[seg.Algorithm], Writer]
    needs: tuple[str, ...] = ()


def png_mask(mask: np.ndarray, source: pydicom.Dataset | None = None) -> bytes:
    """An 8-bit grayscale PNG: 255 where `mask` is set, 0 elsewhere."""
    return _png(np.where(mask, np.uint8(255), np.uint8(0)))


def png_probabilities(probabilities: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a probability map: round(255 x p), so p = value / 255 to
    within 1/510."""
    return _png(np.rint(np.clip(probabilities, 0, 1) * 255).astype(np.uint8))


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot encode a {image.shape[0]} x {image.shape[1]} image as PNG")
    return data.tobytes()


def nifti_mask(mask: np.ndarray, source: pydicom.Dataset | None = None) -> bytes:
    """A gzipped NIfTI-1 label map (uint8, 1 = pneumothorax) of shape (columns, rows, 1), with
    the film's pixel spacing (from `source`) in mm; byte-identical for the same mask."""
    import nibabel

    column_spacing, row_spacing = spacing(source)
    affine = np.diag([-column_spacing, -row_spacing, 1.0, 1.0])  # LPS (DICOM, ITK) -> RAS (NIfTI)
    image = nibabel.Nifti1Image(np.ascontiguousarray(mask.T[:, :, None], dtype=np.uint8), affine)
    image.header.set_xyzt_units("mm")
    image.header.set_intent("label")
    return gzip.compress(image.to_bytes(), mtime=0)


def spacing(source: pydicom.Dataset | None) -> tuple[float, float]:
    """(between columns, between rows) in mm: PixelSpacing, else ImagerPixelSpacing (both list
    the row spacing first), else 1 mm; a value that is no positive finite number counts as absent."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing") if source is not None else ():
        try:
            rows, columns = (float(v) for v in source.get(keyword))
        except Exception:  # absent, not two values, not numbers: try the next
            continue
        if all(math.isfinite(v) and v > 0 for v in (rows, columns)):
            return columns, rows
    return 1.0, 1.0


def _plain(writer: Writer) -> Callable[[seg.Algorithm], Writer]:
    return lambda algorithm: writer


FORMATS: dict[str, MaskFormat] = {
    "dicom-seg": MaskFormat(".seg.dcm", seg.SegWriter, ("highdicom",)),
    "nifti": MaskFormat(".nii.gz", _plain(nifti_mask), ("nibabel",)),
    "png": MaskFormat(".png", _plain(png_mask)),
}


def by_name(name: str) -> MaskFormat:
    """The format called `name`; the error lists the valid names."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown mask format {name!r}; valid: {', '.join(sorted(FORMATS))}") from None


def problems(kinds: Iterable[str]) -> list[str]:
    """One line for each requested kind this environment cannot write (a module missing),
    with the command that installs it. Checks installation only: nothing is imported."""
    out = []
    for kind in dict.fromkeys(kinds):
        missing = [m for m in by_name(kind).needs if not _installed(m)]
        if missing:
            out.append(f"--masks {kind} needs {' and '.join(missing)}, which is not installed: {seg.INSTALL}")
    return out


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a broken install
        return False


def writers(kinds: Iterable[str], algorithm: seg.Algorithm) -> dict[str, Writer]:
    """{suffix: writer} of the requested kinds for one run."""
    return {by_name(k).suffix: by_name(k).writer(algorithm) for k in dict.fromkeys(kinds)}
