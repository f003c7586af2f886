"""The contract names of the README's data contract: `pneumo.rle.decode(rle, height, width)`,
`pneumo.rle.encode(mask)` and `pneumo.dicom.read_image(path)`, re-exported from
`pneumo.formats`."""

import numpy as np
import pytest

import pneumo.dicom
import pneumo.formats.dicom
import pneumo.formats.rle
import pneumo.rle


@pytest.mark.parametrize(
    "module, source, contract",
    [(pneumo.rle, pneumo.formats.rle, {"decode", "encode"}), (pneumo.dicom, pneumo.formats.dicom, {"read_image"})],
)
def test_every_public_name_is_the_formats_object(module, source, contract):
    assert contract <= set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is getattr(source, name), name


def test_rle_round_trips_a_siim_column_major_mask():
    """3 rows x 4 columns: pixels are counted down each column; `1 2` covers rows 1-2 of
    column 0, then a gap of 3 from that run's end starts at flat pixel 6 (row 0, column 2)."""
    mask = np.zeros((3, 4), bool)
    mask[1:3, 0] = mask[0, 2] = True
    assert pneumo.rle.encode(mask) == "1 2 3 1"
    decoded = pneumo.rle.decode("1 2 3 1", 3, 4)
    assert decoded.shape == (3, 4) and np.array_equal(decoded, mask)
    assert pneumo.rle.encode(np.zeros((3, 4), bool)) == "-1" and not pneumo.rle.decode(" -1", 3, 4).any()


def test_dicom_read_image_reads_a_real_siim_file(real_dicoms):
    pixels = pneumo.dicom.read_image(real_dicoms[0])
    assert pixels.shape == (1024, 1024) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, pneumo.formats.dicom.read_image(real_dicoms[0]))
