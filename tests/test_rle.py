"""pneumo.rle: table tests of the SIIM relative column-major RLE, and a round trip over
every published row."""

import numpy as np
import pytest

from pneumo.formats import rle


def mask_from_flat(flat_on: list[int], h: int, w: int) -> np.ndarray:
    """Build a mask from column-major flat indices, independently of pneumo.rle."""
    flat = np.zeros(h * w, bool)
    flat[flat_on] = True
    return flat.reshape(w, h).T


@pytest.mark.parametrize(
    "text, h, w, flat_on",
    [
        ("-1", 3, 4, []),
        (" -1", 3, 4, []),
        ("", 3, 4, []),
        ("0 1", 3, 4, [0]),  # a run at the first pixel
        ("11 1", 3, 4, [11]),  # a run at the last pixel
        ("0 12", 3, 4, list(range(12))),  # the whole image
        ("1 2 3 1", 3, 4, [1, 2, 6]),  # relative: second start counts from the end of the first run
        ("2 2", 3, 4, [2, 3]),  # column-major: flat 2 is (row 2, col 0), flat 3 is (row 0, col 1)
    ],
)
def test_decode_table(text, h, w, flat_on):
    assert np.array_equal(rle.decode(text, h, w), mask_from_flat(flat_on, h, w))


def test_column_major_orientation():
    mask = rle.decode("2 2", 3, 4)
    assert mask[2, 0] and mask[0, 1] and mask.sum() == 2


@pytest.mark.parametrize(
    "flat_on, expected",
    [
        ([], "-1"),
        ([0], "0 1"),
        ([11], "11 1"),
        (list(range(12)), "0 12"),
        ([1, 2, 6], "1 2 3 1"),
        ([0, 11], "0 1 10 1"),
    ],
)
def test_encode_table(flat_on, expected):
    assert rle.encode(mask_from_flat(flat_on, 3, 4)) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 3", "odd count"),
        ("1 -2", "negative"),
        ("10 5", "past the image end"),
        ("11 2", "past the image end"),  # one pixel past the end ("11 1", ending at it, decodes)
        ("1 x", "non-numeric"),
        ("1 0", "length 0"),
    ],
)
def test_decode_rejects(text, message):
    with pytest.raises(rle.RLEError, match=message):
        rle.decode(text, 3, 4)


def test_duplicate_identical_rows_change_nothing():
    assert np.array_equal(rle.render(["1 2", "1 2"], 3, 4), rle.decode("1 2", 3, 4))


def test_render_ors_overlapping_rows():
    mask = rle.render(["0 3", "1 3", "-1"], 3, 4)
    assert mask.dtype == bool and np.array_equal(mask, mask_from_flat([0, 1, 2, 3], 3, 4))


def test_read_csv_bom_crlf_spaces_and_bad_rows(tmp_path):
    path = tmp_path / "rle.csv"
    path.write_bytes("\ufeffImageId, EncodedPixels\r\nA, -1\r\nB, 1 2\r\nB,5 1\r\nC,1 2 3\r\nD,1 x\r\nE\r\n".encode())
    table = rle.read_csv(path)
    assert table.rles == {"A": ["-1"], "B": ["1 2", "5 1"]}
    assert len(table.errors) == 3
    assert all(str(path) in e for e in table.errors)
    assert (
        ":5: C: odd count" in table.errors[0] and ":6: D: non-numeric" in table.errors[1] and ":7:" in table.errors[2]
    )


def test_read_csv_missing_header(tmp_path):
    path = tmp_path / "rle.csv"
    path.write_text("A,-1\n")
    with pytest.raises(rle.RLEError, match="header"):
        rle.read_csv(path)


def test_round_trip_every_published_row(all_train_rle):
    table = rle.read_csv(all_train_rle)
    assert not table.errors
    rows = [r for rows in table.rles.values() for r in rows]
    assert len(rows) == 12954
    positive = [r for r in rows if r != "-1"]
    assert len(positive) == 3576
    for text in positive:
        assert rle.encode(rle.decode(text, 1024, 1024)) == text
