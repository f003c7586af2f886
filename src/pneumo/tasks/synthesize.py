"""`synthesize`: the embedded default dataset, synthetic chest radiographs (the phantoms of
`pneumo.core.phantoms`) written in the real SIIM-ACR and ChestX-ray14 on-disk formats, so that
the same readers serve both: JPEG DICOMs in the SIIM trees with train-rle.csv, PNGs with
Data_Entry_2017.csv, and the leakage map siim-to-nih.csv for the films both publish.

The pneumothorax is drawn the same way in SIIM and CXR-14 films. Its area and regions per
image follow distributions calibrated on the public SIIM labels; the default shifts the areas
up so that 64 px can show them (see params.yaml, `synthesize`). Each region's place is drawn
from the location map of the real SIIM regions (`data/siim_location_map.csv`).

The same seed writes the same bytes on any x86 or ARM CPU: the phantoms are drawn with
CPU-independent float operations (`pneumo.core.phantoms` says how), OpenCV only encodes PNG
and libjpeg-turbo JPEG (its integer DCT is exact at any SIMD level). `tests/test_simd.py`
checks it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pneumo.core.phantoms import FINDINGS, LocationMap, phantom
from pneumo.formats import dicom, rle

CXR14_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
UID_ROOT = dicom.SYNTHETIC_UID_ROOT


def _uid(*parts: int) -> str:
    return ".".join([UID_ROOT, *map(str, parts)])


@dataclass(frozen=True)
class Lesions:
    """How many pneumothorax regions a film has and how large they are (shares of the film):
    SIIM positives at `positive_rate`, 1, 2, 3 or 4 regions in the shares `regions_per_image`,
    a log-normal total area split among them; placed by `places` (`phantom`)."""

    positive_rate: float
    log_area_mean: float
    log_area_std: float
    regions_per_image: list[float]
    one_sided: float
    places: LocationMap

    def siim_areas(self, rng: np.random.Generator, size: int) -> list[float]:
        n_regions = 0
        if rng.random() < self.positive_rate:
            shares = self.regions_per_image
            n_regions = 1 + int(rng.choice(len(shares), p=np.asarray(shares) / sum(shares)))
        total = min(max(math.exp(rng.normal(self.log_area_mean, self.log_area_std)), 8 / size**2), 0.08)
        return list(total * rng.dirichlet(np.ones(n_regions))) if n_regions else []

    def cxr14_areas(self, rng: np.random.Generator, labels: set[str]) -> list[float]:
        """CXR-14's text-mined Pneumothorax labels lean to visible ones: one region, no area below 1%."""
        if "Pneumothorax" not in labels:
            return []
        return [min(max(math.exp(rng.normal(self.log_area_mean, self.log_area_std)), 0.01), 0.08)]


@dataclass
class Cxr14Writer:
    """Writes CXR-14 PNGs (a share `rgba_fraction` RGBA, as a few real ones are) and collects
    their Data_Entry_2017.csv rows; draws from the dataset's generator in the order of the films."""

    rng: np.random.Generator
    cxr14_dir: Path
    size: int
    spacing: float
    rgba_fraction: float
    rows: list[list] = field(default_factory=list)

    def add(self, image_name: str, patient: int, follow_up: int, labels: set[str], pixels: np.ndarray) -> None:
        rng = self.rng
        if rng.random() < self.rgba_fraction:  # a few real CXR-14 PNGs are RGBA with R=G=B
            pixels = np.dstack([pixels] * 3 + [np.full_like(pixels, 255)])
        cv2.imwrite(str(self.cxr14_dir / "images" / image_name), pixels)
        finding_text = "|".join(sorted(labels)) or "No Finding"
        view = "PA" if rng.random() < 0.6 else "AP"
        self.rows.append(
            [
                image_name,
                finding_text,
                follow_up,
                patient,
                int(rng.integers(20, 85)),
                "MF"[int(rng.integers(2))],
                view,
                self.size,
                self.size,
                f"{self.spacing:.3f}",
                f"{self.spacing:.3f}",
            ]
        )


def _siim_films(
    rng: np.random.Generator,
    siim_dir: Path,
    cxr14: Cxr14Writer,
    lesions: Lesions,
    n_siim: int,
    n_test: int,
    n_shared: int,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The SIIM DICOMs, training then test films; the first `n_shared` training films are also
    published in CXR-14 (as in the real datasets). Returns the train-rle.csv rows (one per
    region, or one empty row) and the siim-to-nih.csv rows."""
    rle_rows, mapping = [], []
    for i in range(n_siim + n_test):
        test = i >= n_siim
        areas = lesions.siim_areas(rng, cxr14.size)
        pixels, masks = phantom(rng, cxr14.size, set(), areas, lesions.places, lesions.one_sided)
        study, series, sop = _uid(1, i), _uid(2, i), _uid(3, i)
        patient = 10_000 + i
        dicom.write_jpeg_dicom(
            siim_dir / ("dicom-images-test" if test else "dicom-images-train") / study / series / f"{sop}.dcm",
            pixels,
            study_uid=study,
            series_uid=series,
            sop_uid=sop,
            patient_id=f"synthetic-{patient:08d}",
            view_position="PA" if rng.random() < 0.6 else "AP",
            pixel_spacing_mm=cxr14.spacing,
        )
        if test:  # test labels are not published
            continue
        rle_rows += [(sop, rle.encode(m)) for m in masks] or [(sop, rle.EMPTY)]
        if i < n_shared:
            name = f"{patient:08d}_000.png"
            cxr14.add(name, patient, 0, {"Pneumothorax"} if masks else set(), pixels)
            mapping.append((sop, name))
    return rle_rows, mapping


def _cxr14_films(rng: np.random.Generator, cxr14: Cxr14Writer, lesions: Lesions, n: int, finding_rate: float) -> None:
    """CXR-14-only films: a finding at `finding_rate` (a tenth of them a second one), two films per patient."""
    for i in range(n):
        labels: set[str] = set()
        if rng.random() < finding_rate:
            labels = {FINDINGS[int(rng.integers(len(FINDINGS)))]}
            if rng.random() < 0.1:
                labels.add(FINDINGS[int(rng.integers(len(FINDINGS)))])
        pixels, _ = phantom(rng, cxr14.size, labels, lesions.cxr14_areas(rng, labels), lesions.places)
        patient = 50_000 + i // 2  # two films per patient: the patient-level split matters
        cxr14.add(f"{patient:08d}_{i % 2:03d}.png", patient, i % 2, labels, pixels)


def _write_csv(path: Path, header: str, rows) -> None:
    with open(path, "w", newline="") as f:
        f.write(header + "\n")
        csv.writer(f).writerows(rows)


def synthesize(
    *,
    siim_dir: Path,
    cxr14_dir: Path,
    n_siim: int,
    n_test: int,
    n_cxr14: int,
    size: int,
    positive_rate: float,
    log_area_mean: float,
    log_area_std: float,
    regions_per_image: list[float],
    one_sided: float,
    shared_fraction: float,
    rgba_fraction: float,
    finding_rate: float,
    seed: int,
    location_map: Path | None = None,
) -> dict:
    """Write the SIIM trees (dicom-images-train/ with train-rle.csv, dicom-images-test/ without
    labels, as Kaggle published them) + siim-to-nih.csv and the CXR-14 images +
    Data_Entry_2017.csv; return summary counts. Pneumothorax regions, SIIM and CXR-14 alike,
    lie where `location_map` (a `tools/location_map.py` CSV) puts real ones; without it,
    anywhere on the film (the pipeline always passes the map derived from the SIIM labels)."""
    places = LocationMap.read(location_map) if location_map else LocationMap.uniform()
    lesions = Lesions(positive_rate, log_area_mean, log_area_std, regions_per_image, one_sided, places)
    rng = np.random.default_rng(seed)
    spacing = 0.143 * 1024 / size  # keep the physical field of view of a real 1024 px film
    n_shared = round(shared_fraction * n_siim)
    cxr14_dir.joinpath("images").mkdir(parents=True, exist_ok=True)
    cxr14 = Cxr14Writer(rng, cxr14_dir, size, spacing, rgba_fraction)
    rle_rows, mapping = _siim_films(rng, siim_dir, cxr14, lesions, n_siim, n_test, n_shared)
    _cxr14_films(rng, cxr14, lesions, n_cxr14 - n_shared, finding_rate)

    _write_csv(siim_dir / "train-rle.csv", "ImageId, EncodedPixels", rle_rows)
    _write_csv(siim_dir / "siim-to-nih.csv", "Kaggle_ID,NIH_ID", mapping)
    _write_csv(cxr14_dir / "Data_Entry_2017.csv", CXR14_HEADER, sorted(cxr14.rows))
    return {
        "siim_images": n_siim,
        "siim_test_images": n_test,
        "siim_positive": len({r[0] for r in rle_rows if r[1] != rle.EMPTY}),
        "siim_mask_rows": len(rle_rows),
        "cxr14_images": len(cxr14.rows),
        "shared_images": len(mapping),
    }
