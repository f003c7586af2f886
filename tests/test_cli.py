"""`pneumo --version` and `pneumo score` on small SIIM CSVs written here (4 x 4 images) and on
the real train-rle.csv sample: `--version` and `--help` in a fresh process and through the
installed entry point, the scoring through `pneumo.cli.main` as the entry point calls it."""

import contextlib
import importlib.metadata
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import pneumo
from pneumo.cli import main
from pneumo.formats import rle

PNEUMO = [sys.executable, "-m", "pneumo.cli"]
ENTRY_POINT = Path(sys.executable).parent / "pneumo"  # [project.scripts] in the venv

# Labels, stage-1 style (header and values after a space). b has three region rows, two of
# them overlapping: OR-ed it is flat pixels {0, 1, 2, 4, 5}, 5 pixels, not 6.
LABELS = [
    ("a", "0 4"),  # column 0
    ("b", "0 2"),
    ("b", "1 2"),
    ("b", "4 2"),
    ("c", "-1"),
    ("d", "-1"),
    ("e", "5 3"),
]
UNION = {"a": "0 4", "b": "0 3 1 2", "c": "-1", "d": "-1", "e": "5 3"}


def write(path: Path, rows, header: str = "ImageId,EncodedPixels", sep: str = ",") -> Path:
    path.write_text("\n".join([header, *(f"{i}{sep}{text}" for i, text in rows)]) + "\n")
    return path


@pytest.fixture
def labels(tmp_path) -> Path:
    return write(tmp_path / "labels.csv", LABELS, header="ImageId, EncodedPixels", sep=", ")


def pneumo_score(*args) -> subprocess.CompletedProcess:
    """`pneumo score ARGS` through `pneumo.cli.main`, the function the entry point calls (in this
    process: a fresh one per call would spend a second importing)."""
    argv = ["score", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own exits
            code = e.code
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def scored(*args) -> dict:
    proc = pneumo_score(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_version_is_the_installed_distributions():
    for command in (PNEUMO, [str(ENTRY_POINT)]):
        proc = subprocess.run([*command, "--version"], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout == f"pneumo {pneumo.__version__}\n"
    assert pneumo.__version__ == importlib.metadata.version("pneumo")


def test_help_says_the_image_size():
    proc = subprocess.run([*PNEUMO, "score", "--help"], capture_output=True, text=True)
    text = " ".join(proc.stdout.split())  # argparse wraps to the terminal's width
    assert proc.returncode == 0
    for words in ("--size N", "(default 1024: SIIM films are 1024 x 1024)", "--height H", "--width W", "--json"):
        assert words in text


def test_a_perfect_submission_scores_one(labels, tmp_path):
    r = scored(write(tmp_path / "sub.csv", UNION.items()), labels, "--size", 4)
    assert (r["siim_dice"], r["dice_positive"], r["dice_pooled"]) == (1.0, 1.0, 1.0)
    assert (r["images"], r["positive_images"], r["predicted_positive_images"]) == (5, 3, 3)
    assert (r["false_positives"], r["false_negatives"]) == (0, 0)


def test_an_empty_submission_scores_the_share_of_empty_images(labels, tmp_path):
    r = scored(write(tmp_path / "sub.csv", [(i, "-1") for i in UNION]), labels, "--size", 4)
    assert r["siim_dice"] == pytest.approx(2 / 5)  # c and d are empty
    assert (r["dice_positive"], r["dice_pooled"], r["predicted_positive_images"]) == (0.0, 0.0, 0)
    assert (r["true_negatives"], r["false_negatives"]) == (2, 3)


PARTIAL = [
    ("a", "2 2 1 1"),  # flat {2, 3, 5} against {0, 1, 2, 3}: Dice 2*2/(3+4) = 4/7
    ("b", " -1"),  # a missed pneumothorax: 0
    ("c", "15 1"),  # the last pixel on an empty image: 0
    ("d", "-1"),  # empty on empty: 1
    ("e", "5 2"),  # {5, 6} against {5, 6, 7}: 2*2/(2+3) = 0.8
]


def test_a_partial_overlap_scores_the_hand_computed_numbers(labels, tmp_path):
    r = scored(write(tmp_path / "sub.csv", PARTIAL), labels, "--size", 4)
    assert r["siim_dice"] == pytest.approx((4 / 7 + 0 + 0 + 1 + 0.8) / 5)
    assert r["dice_positive"] == pytest.approx((4 / 7 + 0 + 0.8) / 3)
    # pooled: intersection 2 + 2, predicted 3 + 1 + 2, true 4 + 5 + 3 pixels
    assert r["dice_pooled"] == pytest.approx(2 * 4 / (6 + 12))
    counts = [r[k] for k in ("true_positives", "false_positives", "true_negatives", "false_negatives")]
    assert (r["images"], r["positive_images"], r["predicted_positive_images"], counts) == (5, 3, 3, [2, 1, 1, 1])
    assert (r["height"], r["width"], r["not_in_labels"], r["not_in_submission"]) == (4, 4, 0, 0)

    table = pneumo_score(tmp_path / "sub.csv", labels, "--height", 4, "--width", 4)
    assert table.returncode == 0 and not table.stderr
    assert f"{(4 / 7 + 1.8) / 5:.4f}" in table.stdout and f"{8 / 18:.4f}" in table.stdout
    assert "SIIM metric" in table.stdout and "2 / 1" in table.stdout


def test_every_malformed_row_is_listed_and_nothing_is_scored(labels, tmp_path):
    rows = [
        ("a", "0 4"),
        ("b", "1 2 3"),  # row 3
        ("c", "1 x"),  # row 4
        ("d", "15 2"),  # row 5: past pixel 16
        ("e", "5 3,7"),  # row 6: three fields
    ]
    sub = write(tmp_path / "sub.csv", rows)
    bad_labels = write(tmp_path / "bad-labels.csv", [*LABELS[:-1], ("e", "5 0")])  # row 8: a run of length 0
    proc = pneumo_score(sub, bad_labels, "--size", 4, "--allow-missing")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    expected = [
        (f"{sub}:3: b: ", "odd count"),
        (f"{sub}:4: c: ", "non-numeric"),
        (f"{sub}:5: d: ", "past the image end"),
        (f"{sub}:6: ", "'e'"),
        (f"{bad_labels}:8: e: ", "length 0"),
    ]
    for start, reason in expected:
        assert sum(line.startswith(start) and reason in line for line in lines) == 1, (start, proc.stderr)
    assert len(lines) == len(expected) + 1 and "not scored" in lines[-1]


@pytest.mark.parametrize("allow", [False, True])
def test_imageids_in_one_file_only(labels, tmp_path, allow):
    extra = [(f"x{n}", "-1") for n in range(7)]
    sub = write(tmp_path / "sub.csv", [(i, UNION[i]) for i in "abcd"] + extra)  # e missing
    proc = pneumo_score(sub, labels, "--size", 4, *(["--allow-missing"] if allow else []))
    if not allow:
        assert proc.returncode == 2 and proc.stdout == ""
        unknown, missing, last = proc.stderr.splitlines()
        assert unknown.startswith(f"{sub}: 7 ImageId(s) not in {labels}: x0, x1, x2, x3, x4, ...")
        assert missing.startswith(f"{labels}: 1 ImageId(s) not in {sub}: e")
        assert "--allow-missing" in unknown and "not scored" in last
        return
    assert proc.returncode == 0, proc.stderr
    assert "left out: not in labels / not in submission" in proc.stdout and "7 / 1" in proc.stdout
    r = scored(sub, labels, "--size", 4, "--allow-missing")
    assert (r["images"], r["siim_dice"], r["not_in_labels"], r["not_in_submission"]) == (4, 1.0, 7, 1)


def test_a_duplicated_submission_imageid_is_refused(labels, tmp_path):
    sub = write(tmp_path / "sub.csv", [*UNION.items(), ("c", "-1")])
    proc = pneumo_score(sub, labels, "--size", 4)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[0] == f"{sub}: ImageId c on rows 4, 7: a submission holds one row per image"


def test_real_labels_score_one_against_themselves(realdata, tmp_path):
    """A submission has one row per image: the regions of each image OR-ed into one RLE."""
    labels = realdata / "siim" / "train-rle.csv"
    table = rle.read_csv(labels)
    assert not table.errors
    assert any(len(texts) > 1 for texts in table.rles.values())  # some image has several regions
    merged = [(i, rle.encode(rle.render(texts, 1024, 1024))) for i, texts in table.rles.items()]
    r = scored(write(tmp_path / "sub.csv", merged), labels)
    assert (r["siim_dice"], r["dice_pooled"], r["images"]) == (1.0, 1.0, len(table.rles))
    assert r["dice_positive"] == 1.0 and r["positive_images"] == sum(t != ["-1"] for t in table.rles.values())
    # the labels themselves are no submission: several rows for one image
    refused = pneumo_score(labels, labels)
    assert refused.returncode == 2 and "a submission holds one row per image" in refused.stderr


def test_hostile_numbers_are_malformed_rows_not_a_crash(labels, tmp_path):
    """Numbers that int() would take (a Devanagari digit, '1_0') or numpy could not hold
    (20 digits), and a run that would wrap an int64 sum: each row listed, nothing scored."""
    rows = [
        ("a", "1 99999999999999999999"),  # row 2: 20 digits
        ("b", "1 \u0967"),  # row 3: a Devanagari one
        ("c", "1_0 2"),  # row 4
        ("d", "9223372036854775807 9223372036854775807"),  # row 5
        ("e", "5 3"),
    ]
    sub = write(tmp_path / "sub.csv", rows)
    proc = pneumo_score(sub, labels, "--size", 4)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    for start, reason in [
        (f"{sub}:2: a: ", "larger than any image"),
        (f"{sub}:3: b: ", "non-numeric token '\u0967'"),
        (f"{sub}:4: c: ", "non-numeric token '1_0'"),
        (f"{sub}:5: d: ", "larger than any image"),
    ]:
        assert sum(line.startswith(start) and reason in line for line in lines) == 1, (start, proc.stderr)


def test_an_unexpected_error_while_scoring_is_one_line_and_exit_code_3(labels, tmp_path, monkeypatch):
    from pneumo.core import score

    def broken(*_, **__):
        raise KeyError("nobody foresaw this")

    monkeypatch.setattr(score, "score", broken)
    sub = write(tmp_path / "sub.csv", UNION.items())
    proc = pneumo_score(sub, labels, "--size", 4)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith("pneumo score: unexpected error: KeyError: 'nobody foresaw this'")
    assert proc.stderr.count("\n") == 1 and "--debug" in proc.stderr
    debug = pneumo_score(sub, labels, "--size", 4, "--debug")
    assert debug.returncode == 3 and "Traceback (most recent call last)" in debug.stderr
