"""Pictures for people: mask outlines over a radiograph, heat maps, and image grids."""

from __future__ import annotations

import cv2
import numpy as np

TRUTH, PREDICTION = (0, 200, 0), (0, 0, 255)  # BGR: green = ground truth, red = prediction


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


def grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile equally sized BGR tiles into one image (rows of columns)."""
    h, w = rows[0][0].shape[:2]
    out = np.full((len(rows) * (h + pad) + pad, max(len(r) for r in rows) * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            out[pad + i * (h + pad) : pad + i * (h + pad) + h, pad + j * (w + pad) : pad + j * (w + pad) + w] = tile
    return out
