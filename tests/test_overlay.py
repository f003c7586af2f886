"""Pictures for people (core/overlay.py): mask outlines in their colours, heat maps, grids
with their title, headers and legend, and the films a picture shows."""

import cv2
import numpy as np
import pytest

from pneumo.core import overlay


def test_the_films_are_half_positive_and_fixed_by_the_seed():
    """`overlay.pick_films`, the choice of films of this grid and of the activation maps."""
    positive, negative = np.array([3, 5, 7, 9]), np.setdiff1d(np.arange(2, 20), [3, 5, 7, 9])
    shown = overlay.pick_films(positive, negative, 6, seed=3)
    assert list(shown) == sorted(shown) and len(shown) == 6
    assert len(set(shown) & set(positive)) == 3 and set(shown) <= set(range(2, 20))
    assert list(overlay.pick_films(positive, negative, 6, seed=3)) == list(shown)
    many = overlay.pick_films(positive, negative, 12, seed=3)  # 4 positives exist: the rest negative
    assert len(many) == 12 and set(positive) <= set(many)


def test_grid_headers_and_title_add_a_labelled_band_above_the_tiles():
    tiles = [[np.full((192, 192, 3), 128, np.uint8)] * 3] * 2
    plain = overlay.grid(tiles)
    labelled = overlay.grid(tiles, headers=["radiograph", "truth (green)", "head Grad-CAM (Pneumothorax)"])
    titled = overlay.grid(tiles, headers=["a", "b", "c"], title="activation maps: none, layer layer3")
    band = labelled.shape[0] - plain.shape[0]
    assert labelled.shape[1] == plain.shape[1] and band > 10
    assert (labelled[band:] == plain).all()
    assert (labelled[:band] < 100).all(axis=2).sum() > 50  # dark text pixels on the white band
    assert titled.shape[0] > labelled.shape[0] - band + 10 and (titled[:band] < 100).any()
    with pytest.raises(ValueError, match="3 columns"):
        overlay.grid(tiles, headers=["only one"])


def test_legend_band_shows_each_outline_colour_and_the_heat_scale():
    tiles = [[np.full((192, 192, 3), 128, np.uint8)] * 4]
    titled = overlay.grid(tiles, title="overlays")
    legend = overlay.grid(tiles, title="overlays", legend=overlay.OUTLINES + overlay.HEAT)
    assert legend.shape[0] - titled.shape[0] > 10
    band = legend[: legend.shape[0] - (192 + 2 * 2)]  # title and legend, above the row of tiles
    colours = {tuple(int(c) for c in px) for px in band.reshape(-1, 3)}
    assert overlay.TRUTH in colours and overlay.PREDICTION in colours
    jet = cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_JET)[0]
    assert {tuple(int(c) for c in px) for px in jet} <= colours  # both ends of the colour bar


def test_outline_draws_each_mask_border_in_its_colour_and_leaves_the_rest_gray():
    image = np.full((16, 16), 90, np.uint8)
    truth, pred = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    truth[2:6, 2:6], pred[9:14, 8:15] = True, True
    drawn = overlay.outline(image, [(truth, overlay.TRUTH), (pred, overlay.PREDICTION)], scale=2)
    assert drawn.shape == (32, 32, 3) and drawn.dtype == np.uint8
    colours = {tuple(int(c) for c in px) for px in drawn.reshape(-1, 3)}
    assert colours == {(90, 90, 90), overlay.TRUTH, overlay.PREDICTION}
    is_truth = (drawn == overlay.TRUTH).all(axis=2)
    rows, cols = np.nonzero(is_truth)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 11, 4, 11)  # the border of 2..5 at scale 2
    assert not is_truth[6:10, 6:10].any()  # the inside stays the radiograph
    assert np.array_equal(overlay.outline(image, []), np.stack([image] * 3, axis=2))


@pytest.mark.parametrize(
    ("heat", "alpha", "expected"),
    [
        (0.0, 0.0, (100, 100, 100)),  # no blending: the radiograph
        (0.0, 1.0, (128, 0, 0)),  # jet's low end (BGR dark blue)
        (1.0, 1.0, (0, 0, 128)),  # jet's high end (BGR dark red)
        (7.0, 1.0, (0, 0, 128)),  # clipped to 1
    ],
)
def test_heatmap_blends_the_jet_colour_of_each_value(heat, alpha, expected):
    image = np.full((4, 6), 100, np.uint8)
    blended = overlay.heatmap(image, np.full((2, 3), heat), scale=3, alpha=alpha)
    assert blended.shape == (12, 18, 3)
    assert {tuple(int(c) for c in px) for px in blended.reshape(-1, 3)} == {expected}


def test_grid_tiles_rows_of_columns_with_white_padding():
    a, b, c = (np.full((3, 4, 3), v, np.uint8) for v in (10, 20, 30))
    out = overlay.grid([[a, b], [c]], pad=1)
    assert out.shape == (2 * (3 + 1) + 1, 2 * (4 + 1) + 1, 3)
    assert (out[1:4, 1:5] == 10).all() and (out[1:4, 6:10] == 20).all() and (out[5:8, 1:5] == 30).all()
    assert (out[5:8, 6:10] == 255).all() and (out[0] == 255).all() and (out[:, 5] == 255).all()
    assert overlay.blank().shape == (8, 8, 3) and (overlay.blank() == 255).all()


@pytest.mark.parametrize(
    ("n_positive", "n_negative", "n", "shown_positive"), [(4, 0, 6, 3), (2, 9, 8, 2), (0, 5, 4, 0), (9, 9, 5, 2)]
)
def test_pick_films_takes_half_from_the_positives_and_the_rest_from_the_negatives(
    n_positive, n_negative, n, shown_positive
):
    """Half of `n` (rounded down) or every positive if fewer; the negatives fill up to `n` where
    there are enough (with no negatives a picture has fewer films)."""
    positive, negative = np.arange(n_positive), 100 + np.arange(n_negative)
    shown = overlay.pick_films(positive, negative, n, seed=0)
    assert len(shown) == shown_positive + min(n - shown_positive, n_negative) and (np.diff(shown) > 0).all()
    assert int((shown < 100).sum()) == shown_positive
