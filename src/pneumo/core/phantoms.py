"""The phantom generator: synthetic chest radiographs with real anatomy signal and known
findings, for the embedded default dataset (`tasks/synthesize.py` writes them in the SIIM
and CXR-14 formats) and for tests that need a film.

A phantom has body, two lungs with fine markings, mediastinum and heart, ribs and clavicles,
a burned-in side marker; the thorax's size and place on the film vary as on real films.
Findings differ visibly: a pneumothorax is a band of pleural air without lung markings along
the chest wall, bounded by one visceral pleural line at its inner edge (the mask is the band,
the line lies just inside the lung, as on a real film); an effusion a basal fluid level; a
nodule a small round opacity; an infiltration patchy opacity; atelectasis a collapsed band.
Each pneumothorax region's place (side, and where along the lung border) is drawn from a
location map of the real SIIM regions (`tools/location_map.py`, `data/siim_location_map.csv`),
so that position alone tells nearly as little about where a finding is as on real films.

The same seed draws the same bytes on any x86 or ARM CPU, whatever its vector units: every
float operation here is one whose IEEE result cannot depend on the kernel that computes it.
Pixels are float64 and combined only by elementwise +, -, *, / and sqrt (correctly rounded
at any SIMD width, never fused), reductions are numpy's fixed-order pairwise sums, and
blurs are a separable Gaussian written as shifted adds (`_blur`), not OpenCV's float
filters, whose rounding depends on the SIMD path taken (on one CPU, switching OpenCV's
optimisations off changed 164 of 1,923 files). Transcendentals go through Python's scalar
`math` (libm), never numpy's SIMD loops (its AVX-512 exp/pow/atan2 differ from libm in the
last bit): on a few scalars (blur taps, rounded to a 2^-20 grid, each lesion's drawn
direction), per pixel only for the lesion's angle, and for the tone curve through a lookup
table on a 1/4096 grid. The location map is drawn with integers (`LocationMap.draw`). OpenCV
only draws (integer rasterisation) and dilates uint8 masks. `tests/test_simd.py` checks it:
OpenCV's, numpy's and libjpeg-turbo's SIMD switched off give the same bytes.

Every step draws from the one generator in a fixed order: a film is a function of the
generator's state, so the order of the steps and of the draws inside them is part of the data.
"""

from __future__ import annotations

import bisect
import csv
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FINDINGS = ("Nodule", "Infiltration", "Effusion", "Atelectasis", "Pneumothorax")
REDRAWS = 5  # places tried per pneumothorax region before it is left out
TONE_LEVELS = 4096  # grid of the tone curve's lookup table (16x finer than the 8-bit output)


@dataclass
class Lung:
    cx: float
    cy: float
    ax: float
    ay: float
    medial: int  # +1 if the mediastinum is to the right (image coordinates), else -1


@dataclass(frozen=True)
class LocationMap:
    """Where pneumothorax regions lie on real films: cells of normalised film coordinates
    (x0, x1, y0, y1; x to the image's right, y down) and how many real regions have their
    centroid in each (`tools/location_map.py` derives it from the SIIM labels). A cell is drawn
    with an integer, in proportion to its count, then a point uniformly inside it."""

    cells: tuple[tuple[float, float, float, float], ...]
    cumulative: tuple[int, ...]  # running region counts: no float weights, the same draw on any CPU

    @classmethod
    def read(cls, path: Path) -> LocationMap:
        """A map written by `tools/location_map.py` (`x0,x1,y0,y1,regions`)."""
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["regions"]) > 0]
        if not rows:
            raise ValueError(f"{path}: no cell holds a region")
        cells = tuple(tuple(float(r[k]) for k in ("x0", "x1", "y0", "y1")) for r in rows)
        return cls(cells, tuple(itertools.accumulate(int(r["regions"]) for r in rows)))

    @classmethod
    def uniform(cls) -> LocationMap:
        """Every point of the film equally likely: for callers that do not care where lesions lie."""
        return cls(((0.0, 0.5, 0.0, 1.0), (0.5, 1.0, 0.0, 1.0)), (1, 2))

    def draw(self, rng: np.random.Generator, side: int | None = None) -> tuple[float, float]:
        """One point (x, y) in film coordinates; `side` 0 or 1 keeps to the film's left or
        right half (the cells of that half, in proportion to their counts)."""
        cells, cumulative = self.cells, self.cumulative
        if side is not None:
            counts = [b - a for a, b in zip((0, *cumulative[:-1]), cumulative, strict=True)]
            kept = [i for i, c in enumerate(cells) if (c[0] >= 0.5 if side else c[1] <= 0.5)]
            cells, cumulative = [cells[i] for i in kept], list(itertools.accumulate(counts[i] for i in kept))
        cell = bisect.bisect_right(cumulative, int(rng.integers(cumulative[-1])))
        x0, x1, y0, y1 = cells[cell]
        return x0 + rng.uniform() * (x1 - x0), y0 + rng.uniform() * (y1 - y0)


@dataclass(frozen=True)
class Placement:
    """Where one patient's thorax lies on the film: the mean thorax scaled by (`sx`, `sy`) and
    centred at (`ox`, `oy`); `x` and `y` map a point of the mean thorax to the film."""

    ox: float
    oy: float
    sx: float
    sy: float

    def x(self, x):
        return self.ox + self.sx * (x - 0.5)

    def y(self, y):
        return self.oy + self.sy * (y - 0.5)


@dataclass
class Thorax:
    """The film so far (`img`, float64, drawn into in place) and the anatomy later steps need."""

    size: int
    place: Placement
    img: np.ndarray
    body: np.ndarray
    lungs: list[Lung]
    lung_masks: list[np.ndarray]
    texture: np.ndarray  # the lung markings
    mediastinum: np.ndarray
    heart: np.ndarray


def _jitter(rng: np.random.Generator, s: float) -> float:
    """Anatomical jitter: uniform in (-s, s)."""
    return rng.uniform(-s, s)


def _ellipse(size: int, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    out = np.zeros((size, size), np.uint8)
    cv2.ellipse(
        out,
        (round(cx * size), round(cy * size)),
        (max(1, round(ax * size)), max(1, round(ay * size))),
        0,
        0,
        360,
        1,
        -1,
    )
    return out.astype(bool)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (float64, radius 4 sigma, borders reflected as OpenCV's default
    BORDER_REFLECT_101), separable and written as shifted multiply-adds in a fixed order, so
    that its rounding is the same on every CPU. Taps come from scalar libm and are rounded to
    a 2^-20 grid before normalising."""
    radius = max(1, math.ceil(4 * sigma))
    taps = [round(2**20 * math.exp(-0.5 * (i / sigma) * (i / sigma))) for i in range(-radius, radius + 1)]
    weights = [t / sum(taps) for t in taps]
    out = np.asarray(img, np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="reflect")
        acc = np.zeros_like(out)
        for i, w in enumerate(weights):
            acc += w * (padded[i : i + n] if axis == 0 else padded[:, i : i + n])
        out = acc
    return out


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    blurred = _blur(rng.standard_normal((size, size)), max(0.5, sigma * size))
    return blurred / (blurred.std() + 1e-6)


def _thorax(rng: np.random.Generator, size: int) -> Thorax:
    """Body, lungs with their markings, mediastinum and heart of one patient, placed on the film."""
    j = functools.partial(_jitter, rng)
    # Where the thorax lies on the film and how large it is varies between patients (build,
    # inspiration, centring, collimation): the mean thorax below is scaled and shifted as a whole.
    # The ranges are calibrated on the public SIIM labels, so that pneumothorax regions reach as
    # high and as far out as real ones: the top edge of regions centred in the upper 30% of the film
    # lies at 0.13 of its height (median; sd 0.05; real 0.12, sd 0.05), the outer edge of a region
    # at 0.10-0.36 of the width from the film's side (5th-95th percentile; real 0.10-0.36). A thorax
    # that barely moves lets a prediction that sees no image (the location prior) overlap much more.
    sy = rng.uniform(0.9, 1.3)
    sx = sy * rng.uniform(1.0, 1.15)  # real lung fields are wider than the mean phantom's
    ox, oy = 0.5 + j(0.03), 0.475 + j(0.06)
    place = Placement(ox, oy, sx, sy)
    X, Y = place.x, place.y
    img = np.full((size, size), 0.06, np.float64)
    body = _ellipse(size, X(0.5 + j(0.02)), Y(0.56), sx * (0.46 + j(0.03)), sy * 0.52)
    img[body] = 0.42 + j(0.05)
    lungs = [
        Lung(X(0.31 + j(0.02)), Y(0.46 + j(0.02)), sx * (0.14 + j(0.015)), sy * (0.29 + j(0.02)), +1),
        Lung(X(0.69 + j(0.02)), Y(0.46 + j(0.02)), sx * (0.13 + j(0.015)), sy * (0.28 + j(0.02)), -1),
    ]
    lung_masks = [_ellipse(size, lg.cx, lg.cy, lg.ax, lg.ay) for lg in lungs]
    # Fine lung markings only (grain 0.6% of the film). A coarser mottle (2% grain, sd 0.03) used to
    # sit on top: it drew patches of normal lung as lucent as pleural air, which a U-Net at 64 px
    # flagged in one normal film in ten (measured; docs/phantoms.md, and the trials in the history of
    # src/pneumo/tasks/synthesize.py, where the generator lived before).
    texture = 0.05 * _smooth_noise(rng, size, 0.006)
    for m in lung_masks:
        img[m] = 0.17 + texture[m]
    mediastinum = np.zeros((size, size), bool)
    left, right = (max(0, int(X(c + j(0.01)) * size)) for c in (0.445, 0.555))
    mediastinum[max(0, int(Y(0.12) * size)) : int(Y(0.78) * size), left:right] = True
    heart = _ellipse(size, X(0.56 + j(0.02)), Y(0.63 + j(0.02)), sx * (0.13 + j(0.02)), sy * (0.11 + j(0.015)))
    img[mediastinum | heart] = 0.6 + j(0.04)
    return Thorax(size, place, img, body, lungs, lung_masks, texture, mediastinum, heart)


def _pneumothorax(
    size: int, lung: Lung, lung_mask: np.ndarray, allowed: np.ndarray, area: float, point: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A pneumothorax as an erect film shows it: a band of pleural air along the chest wall,
    without lung markings, whose inner edge is the visceral pleural line (the edge of the
    partly collapsed lung). The band is a lens along the lung border, centred where the ray
    from the lung's centre through `point` (film coordinates, drawn from the location map)
    meets the border, thickest there and tapering to the chest wall at both ends; its arc
    grows with `area` (fraction of the image) and its depth is solved so that the part inside
    `allowed` (the lung less the heart, mediastinum and earlier regions) matches it. Returns
    (region, pleural line); the line lies just inside the lung, outside the region, as in a
    mask drawn on a real film."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    u, v = (xx - lung.cx) / lung.ax, (yy - lung.cy) / lung.ay
    radius = np.sqrt(u * u + v * v)
    angle = np.zeros_like(radius)  # scalar libm atan2 (numpy's SIMD one differs by CPU), inside the lung only
    angle[lung_mask] = np.frompyfunc(math.atan2, 2, 1)(v[lung_mask], u[lung_mask]).astype(np.float64)
    # the border point in the direction of `point`, in the ellipse's own coordinates
    centre = math.atan2((point[1] - lung.cy) / lung.ay, (point[0] - lung.cx) / lung.ax)
    half_arc = 0.5 * min(max(1.3 * math.sqrt(area / 0.01), 0.6), 3.0)  # radians: larger = longer
    offset = (angle - centre + np.pi) % (2 * np.pi) - np.pi
    t2 = (offset / half_arc) * (offset / half_arc)
    taper = np.clip(1 - t2 * t2, 0, None)  # even depth along the arc, 0 at both ends

    def band(depth: float) -> np.ndarray:
        return allowed & (taper > 0) & (radius > 1 - depth * taper)

    lo, hi = 0.0, 0.95
    for _ in range(14):  # bisection on the depth (share of the lung radius) at the band's centre
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if band(mid).mean() < area else (lo, mid)
    region = band(hi)
    width = max(3, 2 * (size // 256) + 1)
    grown = cv2.dilate(region.astype(np.uint8), np.ones((width, width), np.uint8)).astype(bool)
    return region, grown & lung_mask & ~region


def _pneumothoraces(
    rng: np.random.Generator, t: Thorax, areas: list[float], location_map: LocationMap, one_sided: float
) -> list[np.ndarray]:
    """Draw one pneumothorax region per area into the film, each placed by a point from
    `location_map`; with several, all on the first one's side with probability `one_sided`,
    otherwise the second on the other side (the rest anywhere). Returns the regions' masks."""
    masks = []
    taken = t.mediastinum | t.heart  # pleural air lies over the lung, not the heart
    same_side = len(areas) > 1 and rng.uniform() < one_sided
    first = None
    for n, area in enumerate(areas):  # each region its own place, drawn as real regions lie
        wanted = None if n == 0 else first if same_side else 1 - first if n == 1 else None
        for _ in range(REDRAWS):  # a place an earlier region already fills is drawn again
            point = location_map.draw(rng, wanted)
            side = int(point[0] >= 0.5)  # the film's left half shows lungs[0], the patient's right lung
            first = side if first is None else first
            allowed = t.lung_masks[side] & ~taken
            region, pleura = _pneumothorax(t.size, t.lungs[side], t.lung_masks[side], allowed, area, point)
            if region.any():
                break
        # regions stay disjoint, as separate rows of train-rle.csv
        taken = taken | cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        if not region.any():
            continue
        t.img[region] = 0.09 + 0.008 * t.texture[region]  # pleural air: darker than lung, no markings
        t.img[pleura & ~np.logical_or.reduce([region, *masks])] = 0.36  # visceral pleural line
        masks.append(region)
    return masks


def _effusion(rng: np.random.Generator, t: Thorax, lg: Lung, m: np.ndarray) -> None:
    """A basal fluid level with a meniscus rising laterally."""
    yy, xx = np.mgrid[0 : t.size, 0 : t.size] / t.size
    level = lg.cy + lg.ay * rng.uniform(0.35, 0.6) - 0.08 * np.abs(xx - lg.cx + lg.medial * lg.ax) / lg.ax
    t.img[m & (yy > level)] = 0.55


def _nodule(rng: np.random.Generator, t: Thorax, lg: Lung, m: np.ndarray) -> None:
    """A small round opacity."""
    r = rng.uniform(0.03, 0.05)
    disc = _ellipse(t.size, lg.cx + _jitter(rng, lg.ax * 0.5), lg.cy + _jitter(rng, lg.ay * 0.5), r, r)
    t.img[disc & m] += 0.35


def _infiltration(rng: np.random.Generator, t: Thorax, lg: Lung, m: np.ndarray) -> None:
    """Patchy opacity over the middle of the lung."""
    patch = (_smooth_noise(rng, t.size, 0.025) > 0.3) & _ellipse(
        t.size, lg.cx, lg.cy + _jitter(rng, 0.1), lg.ax * 0.9, lg.ay * 0.6
    )
    t.img[patch & m] += 0.22


def _atelectasis(rng: np.random.Generator, t: Thorax, lg: Lung, m: np.ndarray) -> None:
    """A collapsed band across the lower lung."""
    size = t.size
    band = np.zeros((size, size), np.uint8)
    y0, y1 = lg.cy + lg.ay * 0.2, lg.cy + lg.ay * 0.45 + _jitter(rng, 0.05)
    cv2.line(
        band,
        (round((lg.cx - lg.ax) * size), round(y0 * size)),
        (round((lg.cx + lg.ax) * size), round(y1 * size)),
        1,
        max(2, round(0.05 * size)),
    )
    t.img[band.astype(bool) & m] += 0.3


# how each finding other than a pneumothorax is drawn into one lung (`_pneumothoraces` draws those)
FINDING_DRAWERS: dict[str, Callable[[np.random.Generator, Thorax, Lung, np.ndarray], None]] = {
    "Effusion": _effusion,
    "Nodule": _nodule,
    "Infiltration": _infiltration,
    "Atelectasis": _atelectasis,
}


def _findings(rng: np.random.Generator, t: Thorax, findings: set[str]) -> None:
    """Each finding but Pneumothorax drawn into a lung chosen at random."""
    for finding in sorted(findings - {"Pneumothorax"}):  # a fixed order: set order changes with PYTHONHASHSEED
        side = int(rng.integers(2))
        if finding in FINDING_DRAWERS:
            FINDING_DRAWERS[finding](rng, t, t.lungs[side], t.lung_masks[side])


def _bones_and_marker(rng: np.random.Generator, t: Thorax) -> None:
    """Posterior ribs and clavicles over body and lungs, and the burned-in side marker."""
    size, X, Y, sx = t.size, t.place.x, t.place.y, t.place.sx
    ribs = np.zeros((size, size), np.float64)
    for i in range(9):  # posterior ribs: arcs from the spine curving down laterally
        y0 = 0.17 + i * 0.068 + _jitter(rng, 0.008)
        for sign in (-1, 1):
            xs = np.linspace(0.48, 0.48 + sign * 0.36, 24)
            ys = y0 + 0.12 * ((xs - 0.48) / 0.36) * ((xs - 0.48) / 0.36)
            pts = np.round(np.stack([X(xs), Y(ys)], 1) * size).astype(np.int32)
            cv2.polylines(ribs, [pts], False, 0.1, max(1, round(0.014 * sx * size)))
    for sign in (-1, 1):  # clavicles
        cv2.line(
            ribs,
            (round(X(0.47) * size), round(Y(0.16) * size)),
            (round(X(0.5 + sign * 0.28) * size), round(Y(0.11) * size)),
            0.14,
            max(1, round(0.018 * sx * size)),
        )
    t.img += _blur(ribs, max(0.5, 0.004 * size)) * (t.body | t.lung_masks[0] | t.lung_masks[1])
    marker = np.zeros((size, size), np.uint8)
    cv2.putText(
        marker,
        "R",
        (round(0.06 * size), round(0.1 * size)),
        cv2.FONT_HERSHEY_SIMPLEX,
        size / 400,
        1,
        max(1, size // 200),
    )
    t.img[marker.astype(bool)] = 0.95


def _exposure(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """The film as the detector gives it: unsharpness, quantum noise and a tone curve, to uint8."""
    img = _blur(img, max(0.5, 0.0015 * len(img))) + rng.normal(0, 0.015, img.shape)
    gamma = rng.uniform(0.85, 1.15)
    # tone curve 255 * x^gamma through a table on a 1/4096 grid: scalar libm pow, never numpy's SIMD pow
    curve = np.array([int(255 * (i / TONE_LEVELS) ** gamma) for i in range(TONE_LEVELS + 1)], np.uint8)
    return curve[np.rint(np.clip(img, 0, 1) * TONE_LEVELS).astype(np.intp)]


def phantom(
    rng: np.random.Generator,
    size: int,
    findings: set[str],
    pneumothorax_areas: list[float],
    location_map: LocationMap | None = None,
    one_sided: float = 1.0,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One radiograph (uint8, size x size) and one mask per pneumothorax region, each region
    placed by a point drawn from `location_map` (default: anywhere on the film). With several
    regions, all lie on the first one's side with probability `one_sided`; otherwise the second
    lies on the other side (the rest anywhere). The other `findings` (FINDING_DRAWERS) are
    drawn into a lung each. The steps draw from `rng` in this order, which the data depends on."""
    location_map = LocationMap.uniform() if location_map is None else location_map
    t = _thorax(rng, size)
    masks = _pneumothoraces(rng, t, pneumothorax_areas, location_map, one_sided)
    _findings(rng, t, findings)
    _bones_and_marker(rng, t)
    return _exposure(rng, t.img), masks
