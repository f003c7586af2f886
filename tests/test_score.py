"""Scoring a submission CSV against labels (core/score.py) as a library call: the scores and
counts of small 2 x 2 images worked out by hand, and every reason a file cannot be scored listed
at once in a ScoreError (`pneumo score` on the command line: tests/test_cli.py)."""

from pathlib import Path

import pytest

from pneumo.core import score

LABELS = [("a", "0 2"), ("b", "-1"), ("c", "1 3")]  # a: column 0; b: empty; c: pixels 1, 2, 3
PAST_THE_END = "run ends at pixel 5, past the image end (4 pixels)"  # "3 2" on a 2 x 2 image


def write(path: Path, rows) -> Path:
    path.write_text("\n".join(["ImageId,EncodedPixels", *(f"{i},{text}" for i, text in rows)]) + "\n")
    return path


def scores(tmp_path, submission, labels=LABELS, **kwargs) -> dict:
    sub, lab = write(tmp_path / "sub.csv", submission), write(tmp_path / "labels.csv", labels)
    return score.score(sub, lab, 2, 2, **kwargs)


@pytest.mark.parametrize(
    ("submission", "expected"),
    [
        (LABELS, {"siim_dice": 1.0, "dice_positive": 1.0, "dice_pooled": 1.0, "true_positives": 2}),
        (  # a: 1 of 2 pixels (2/3); b: a false positive (0); c: all 3 pixels plus one more (6/7)
            [("a", "0 1"), ("b", "3 1"), ("c", "0 4")],
            {"siim_dice": (2 / 3 + 0 + 6 / 7) / 3, "dice_positive": (2 / 3 + 6 / 7) / 2, "dice_pooled": 8 / 11},
        ),
        (  # nothing predicted: only the empty image scores
            [("a", "-1"), ("b", "-1"), ("c", "-1")],
            {"siim_dice": 1 / 3, "dice_positive": 0.0, "dice_pooled": 0.0, "false_negatives": 2},
        ),
        (  # one region row of c and an empty row: a submission row per image, "-1" and " -1" alike
            [("a", " -1"), ("b", "-1"), ("c", "1 3")],
            {"siim_dice": 2 / 3, "true_negatives": 1, "true_positives": 1, "false_negatives": 1},
        ),
    ],
)
def test_scores_and_counts_by_hand(tmp_path, submission, expected):
    result = scores(tmp_path, submission)
    assert {k: result[k] for k in expected} == pytest.approx(expected)
    assert (result["images"], result["positive_images"], result["height"], result["width"]) == (3, 2, 2, 2)
    confusion = ("true_positives", "false_positives", "true_negatives", "false_negatives")
    assert sum(result[k] for k in confusion) == 3
    assert result["predicted_positive_images"] == result["true_positives"] + result["false_positives"]


def test_several_label_rows_of_one_image_are_or_ed(tmp_path):
    labels = [("a", "0 2"), ("a", "1 2"), ("b", "-1")]  # a: {0, 1} | {1, 2} = pixels 0, 1, 2
    result = scores(tmp_path, [("a", "0 3"), ("b", "-1")], labels)
    assert result["siim_dice"] == 1.0 and result["positive_images"] == 1


def test_no_positive_label_leaves_dice_on_positives_undefined(tmp_path):
    result = scores(tmp_path, [("b", "-1")], [("b", "-1")])
    assert result["dice_positive"] is None and result["siim_dice"] == 1.0


def test_allow_missing_scores_the_shared_images_and_counts_the_others(tmp_path):
    result = scores(tmp_path, [("a", "0 2"), ("x", "-1")], allow_missing=True)
    assert result["images"] == 1 and result["siim_dice"] == 1.0
    assert (result["not_in_labels"], result["not_in_submission"]) == (1, 2)


@pytest.mark.parametrize(
    ("submission", "problems"),
    [
        ([("a", "0 2"), ("b", "-1")], ["labels.csv: 1 ImageId(s) not in {sub}: c (--allow-missing"]),
        ([*LABELS, ("z", "-1")], ["sub.csv: 1 ImageId(s) not in {lab}: z"]),
        ([*LABELS, ("a", "0 1")], ["sub.csv: ImageId a on rows 2, 5: a submission holds one row per image"]),
        ([("a", "0 2"), ("b", "3 2"), ("c", "1 3")], [f"sub.csv:3: b: {PAST_THE_END}"]),
        # every one: the rows read_csv refuses, then those that fit no 2 x 2 image
        (
            [("a", "0 2"), ("b", "3 2"), ("c", "x")],
            ["sub.csv:4: c: non-numeric token 'x'", f"sub.csv:3: b: {PAST_THE_END}"],
        ),
    ],
)
def test_every_problem_is_listed_and_nothing_is_scored(tmp_path, submission, problems):
    with pytest.raises(score.ScoreError) as raised:
        scores(tmp_path, submission)
    found = raised.value.problems
    expected = [p.format(sub=tmp_path / "sub.csv", lab=tmp_path / "labels.csv") for p in problems]
    assert len(found) == len(expected) and all(str(tmp_path) in f for f in found)
    assert all(e in f for e, f in zip(expected, found, strict=True)), found
    assert str(raised.value) == "\n".join(found)


def test_only_in_one_file_quotes_at_most_five_ids(tmp_path):
    labels = [(f"id{k}", "-1") for k in range(8)]
    with pytest.raises(score.ScoreError, match=r"8 ImageId\(s\) not in .*: id0, id1, id2, id3, id4, \.\.\."):
        scores(tmp_path, [("other", "-1")], labels)


def test_files_that_are_no_csv_are_named(tmp_path):
    write(tmp_path / "labels.csv", LABELS)
    (tmp_path / "binary.csv").write_bytes(b"ImageId,EncodedPixels\n\xff\xfe,1 2\n")
    with pytest.raises(score.ScoreError, match=r"binary.csv: not UTF-8 text \(byte"):
        score.score(tmp_path / "binary.csv", tmp_path / "labels.csv", 2, 2)
    with pytest.raises(score.ScoreError, match="missing.csv: cannot read"):
        score.score(tmp_path / "missing.csv", tmp_path / "labels.csv", 2, 2)
    with pytest.raises(score.ScoreError, match="share no ImageId"):
        scores(tmp_path, [("q", "-1")], [("r", "-1")], allow_missing=True)
