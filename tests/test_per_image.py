"""The per-image result table (formats/per_image.py): rows written from pixel counts read back
as the same numbers, Dice per image (1 when truth and prediction are both empty), the gate-free
columns, and a table that is missing something is an error naming it."""

import csv

import numpy as np
import pytest

from pneumo.formats import per_image


def counts(mask, pred, inter) -> dict[str, np.ndarray]:
    return {"mask_pixels": np.array(mask), "pred_pixels": np.array(pred), "intersection": np.array(inter)}


@pytest.mark.parametrize(
    ("mask", "pred", "inter", "dice"),
    [
        (0, 0, 0, 1.0),  # an empty image predicted empty
        (0, 5, 0, 0.0),  # a false positive
        (8, 0, 0, 0.0),  # a missed finding
        (10, 10, 10, 1.0),
        (6, 4, 2, 0.4),  # 2 * 2 / (6 + 4)
        (3, 0, 0, 0.0),
        (1, 2, 1, 2 / 3),  # written to six decimals
    ],
)
def test_one_row_per_image_reads_back_with_its_dice(tmp_path, mask, pred, inter, dice):
    path = tmp_path / "deeper" / "per_image.csv"  # the folder is made
    per_image.write_counts(path, ["a"], counts([mask], [pred], [inter]), np.array([0.25]))
    table = per_image.read(path)
    assert table["image_id"].tolist() == ["a"] and table["has_pneumothorax"].tolist() == [mask > 0]
    assert (table["mask_pixels"][0], table["pred_pixels"][0], table["intersection"][0]) == (mask, pred, inter)
    assert table["dice"][0] == pytest.approx(dice, abs=5e-7) and table["max_prob"][0] == 0.25
    # without a gate-free prediction the gate-free columns repeat the post-processed one
    assert (table["pred_pixels_ungated"][0], table["intersection_ungated"][0]) == (pred, inter)


def test_the_columns_in_order_and_the_gate_free_prediction(tmp_path):
    path = tmp_path / "per_image.csv"
    post, ungated = counts([4, 0], [0, 0], [0, 0]), counts([4, 0], [6, 1], [3, 0])
    per_image.write_counts(path, ["1.2.3", "1.2.4"], post, np.array([0.9, 1 / 3]), ungated)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == per_image.COLUMNS
    assert rows[1:] == [
        ["1.2.3", "1", "4", "0", "0", "0.000000", "0.900000", "6", "3"],
        ["1.2.4", "0", "0", "0", "0", "1.000000", "0.333333", "1", "0"],
    ]
    table = per_image.read(path)
    assert table["has_pneumothorax"].dtype == bool and table["mask_pixels"].dtype == float
    assert table["pred_pixels_ungated"].tolist() == [6, 1] and table["intersection_ungated"].tolist() == [3, 0]


def test_a_table_without_a_column_or_without_rows_is_an_error_naming_it(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text(",".join(c for c in per_image.COLUMNS if c not in ("dice", "max_prob")) + "\n")
    with pytest.raises(ValueError, match=r"short.csv: missing columns \['dice', 'max_prob'\]"):
        per_image.read(short)
    empty = tmp_path / "empty.csv"
    per_image.write_counts(empty, [], counts([], [], []), np.zeros(0))
    with pytest.raises(ValueError, match="empty.csv: no images"):
        per_image.read(empty)
    (tmp_path / "nothing.csv").write_text("")
    with pytest.raises(ValueError, match="missing columns"):
        per_image.read(tmp_path / "nothing.csv")
