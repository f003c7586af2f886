"""The ablation table: mean ± std over seeds and the all-empty row."""

import pytest

from pneumo import report


def result(variant, dice):
    row = {"siim_dice": dice, "dice_positive": dice / 2, "dice_pooled": 0.1, "iou": 0.5, "auc": 0.6}
    empty = {"siim_dice": 0.78, "dice_positive": 0.0, "dice_pooled": 0.0, "iou": 0.78, "auc": 0.5}
    return {"variant": variant, "test": row, "all_empty": empty}


def test_ablation_mean_and_std_over_seeds():
    table = report.ablation([result("none", 0.8), result("none", 0.9), result("labels", 0.85)])
    assert table["none"]["seeds"] == 2
    assert table["none"]["siim_dice"] == pytest.approx({"mean": 0.85, "std": 0.05})
    assert table["all_empty"]["siim_dice"]["mean"] == 0.78
    md = report.markdown(table)
    assert "| none | 2 | 0.850 ± 0.050 |" in md and "| all_empty | 1 | 0.780 ± 0.000 |" in md
    single = report.markdown(report.ablation([result("none", 0.8)]))
    assert "| none | 1 | 0.800 |" in single and "75.3" in single
