"""Pictures for people: mask outlines over a radiograph, heat maps, and image grids."""

from __future__ import annotations

import cv2
import numpy as np

TRUTH, PREDICTION = (0, 200, 0), (0, 0, 255)  # BGR: green = ground truth, red = prediction
OUTLINES = [("ground truth", TRUTH), ("prediction", PREDICTION)]  # the legend of `outline` pictures
HEAT = [("Grad-CAM: low", "jet"), ("high", None)]  # the legend of `heatmap` pictures (a colour bar)


def outline(image: np.ndarray, masks: list[tuple[np.ndarray, tuple[int, int, int]]], scale: int = 1) -> np.ndarray:
    """Grayscale uint8 image -> BGR with each mask's contour drawn in its colour."""
    size = (image.shape[1] * scale, image.shape[0] * scale)
    canvas = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
    thickness = max(1, round(max(size) / 256))
    for mask, colour in masks:
        big = cv2.resize(np.asarray(mask, np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, thickness)
    return canvas


def heatmap(image: np.ndarray, heat: np.ndarray, scale: int = 1, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heat map (any size) over a grayscale image, as BGR."""
    size = (image.shape[1] * scale, image.shape[0] * scale)
    base = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
    heat = cv2.resize(np.clip(heat, 0, 1).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(base, 1 - alpha, colour, alpha, 0)


FONT = cv2.FONT_HERSHEY_SIMPLEX


def blank() -> np.ndarray:
    """A small white picture, written when there is nothing to show (so the output exists)."""
    return np.full((8, 8, 3), 255, np.uint8)


def _text_width(text: str, scale: float, thickness: int) -> int:
    return cv2.getTextSize(text, FONT, scale, thickness)[0][0]


def _wrap(text: str, width: int, scale: float, thickness: int) -> list[str]:
    """Greedy word wrap of `text` into lines at most `width` px wide (a longer word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and _text_width(joined, scale, thickness) <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines or [""]


def _text_band(labels: list[str], widths: list[int], starts: list[int], total: int, scale: float) -> np.ndarray:
    """White band (H, total, 3) with each label wrapped to, and centred in, its span [start, start + width)."""
    thickness = max(1, round(scale * 2))
    line_h = cv2.getTextSize("Ag", FONT, scale, thickness)[0][1] * 2
    wrapped = []
    for label, width in zip(labels, widths, strict=True):
        lines = _wrap(label, width - 4, scale, thickness)
        # a single word wider than the span is shrunk to fit rather than cut
        fits = [min(scale, scale * (width - 4) / max(_text_width(x, scale, thickness), 1)) for x in lines]
        wrapped.append(list(zip(lines, fits, strict=True)))
    band = np.full((line_h * max(len(w) for w in wrapped) + line_h // 2, total, 3), 255, np.uint8)
    for lines, start, width in zip(wrapped, starts, widths, strict=True):
        for k, (line, fit) in enumerate(lines):
            (tw, th), _ = cv2.getTextSize(line, FONT, fit, thickness)
            origin = (start + (width - tw) // 2, line_h * k + (line_h + th) // 2 + line_h // 4)
            cv2.putText(band, line, origin, FONT, fit, (0, 0, 0), thickness, cv2.LINE_AA)
    return band


def _legend_band(items: list[tuple[str, object]], total: int, scale: float) -> np.ndarray:
    """White band with `label swatch` pairs left to right: a swatch is a BGR colour (a short
    thick line, as the outlines are drawn), "jet" (the heat maps' colour bar, low to high) or
    None (text only)."""
    thickness = max(1, round(scale * 2))
    line_h = cv2.getTextSize("Ag", FONT, scale, thickness)[0][1] * 2
    band = np.full((line_h * 3 // 2, total, 3), 255, np.uint8)
    x, y = 8, line_h
    for label, swatch in items:
        if isinstance(swatch, tuple):
            cv2.line(band, (x, y - line_h // 4), (x + line_h, y - line_h // 4), swatch, max(2, thickness * 2))
            x += line_h + 6
        elif swatch == "jet":
            cv2.putText(band, label, (x, y), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
            x += _text_width(label, scale, thickness) + 6
            ramp = cv2.applyColorMap(np.linspace(0, 255, 4 * line_h).astype(np.uint8)[None, :], cv2.COLORMAP_JET)
            band[y - line_h * 3 // 4 : y, x : x + 4 * line_h] = np.repeat(ramp, line_h * 3 // 4, axis=0)
            x += 4 * line_h + 6
            continue
        cv2.putText(band, label, (x, y), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
        x += _text_width(label, scale, thickness) + 3 * line_h
    return band


def grid(
    rows: list[list[np.ndarray]],
    pad: int = 2,
    headers: list[str] | None = None,
    title: str | None = None,
    legend: list[tuple[str, object]] | None = None,
) -> np.ndarray:
    """Tile equally sized BGR tiles into one image (rows of columns).

    `headers` (one per column) label the columns in a white band above the first row,
    `title` is a line above that, and `legend` (label, swatch) pairs (`OUTLINES`, `HEAT`) a
    line below the title; all in black text scaled to the tile width and wrapped."""
    h, w = rows[0][0].shape[:2]
    columns = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            out[pad + i * (h + pad) : pad + i * (h + pad) + h, pad + j * (w + pad) : pad + j * (w + pad) + w] = tile
    scale = float(np.clip(w / 400, 0.3, 1.0))  # ~0.5 at 192 px tiles: about 20 characters per line
    bands = []
    if title:
        bands.append(_text_band([title], [out.shape[1] - 2 * pad], [pad], out.shape[1], scale * 1.2))
    if legend:
        bands.append(_legend_band(legend, out.shape[1], scale))
    if headers is not None:
        if len(headers) != columns:
            raise ValueError(f"{len(headers)} headers for {columns} columns")
        starts = [pad + j * (w + pad) for j in range(columns)]
        bands.append(_text_band(list(headers), [w] * columns, starts, out.shape[1], scale))
    return np.concatenate([*bands, out]) if bands else out


def pick_films(positive: np.ndarray, negative: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` film indices in index order for a picture, half of them from `positive` (as many as
    there are) and the rest from `negative`, chosen by `seed`: the same films for every variant."""
    rng = np.random.default_rng(seed)
    half = min(n // 2, len(positive))
    return np.sort(np.concatenate([rng.permutation(positive)[:half], rng.permutation(negative)[: n - half]]))
