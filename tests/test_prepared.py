"""The prepared arrays (formats/prepared.py): resizing films and masks to the working size
(area averaging; no finding vanishes), the patient split, the split and share indices, the
decode worker count and finding the published files."""

import cv2
import numpy as np
import pytest

from pneumo.formats import prepared, rle

SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}


def box(size: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[rows, cols] = True
    return mask


@pytest.mark.parametrize(
    "mask, size, expected_pixels",
    [
        (box(1024, slice(0, 1), slice(0, 1)), 64, 1),  # one full-size pixel: 1/256 of a small pixel, kept
        (box(1024, slice(100, 104), slice(500, 540)), 64, 1),  # a thin strip under half of every small pixel
        (box(1024, slice(0, 7), slice(0, 64)), 64, 2),  # 7x64 px = 1.75 small pixels of area, none half covered
        (box(1024, slice(0, 32), slice(0, 32)), 64, 4),  # 2x2 small pixels fully covered: the usual rule
        (box(1024, slice(1016, 1024), slice(1016, 1024)), 64, 1),  # at the last pixel
        (box(64, slice(10, 20), slice(10, 20)), 64, 100),  # same size: unchanged
        (np.zeros((1024, 1024), bool), 64, 0),  # empty stays empty
    ],
)
def test_resize_mask_keeps_every_finding_and_its_area(mask, size, expected_pixels):
    small = prepared.resize_mask(mask, size)
    assert small.shape == (size, size) and small.dtype == np.uint8
    assert int(small.sum()) == expected_pixels
    assert small.any() == mask.any()


def area_weights(m: int, n: int) -> np.ndarray:
    """(n, m) share of input pixel i inside output pixel j, for the reference below."""
    edges = np.arange(n + 1) * m / n
    return np.clip(np.minimum(edges[1:, None], np.arange(1, m + 1)) - np.maximum(edges[:-1, None], np.arange(m)), 0, 1)


@pytest.mark.parametrize("shape, size", [((1024, 1024), 64), ((1024, 1024), 100), ((37, 53), 16), ((700, 512), 512)])
def test_resize_is_area_averaging_rounded_to_the_nearest_level(shape, size):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    h, w = area_weights(shape[0], size), area_weights(shape[1], size)
    mean = h @ pixels.astype(np.float64) @ w.T / (h.sum(1)[:, None] * w.sum(1))
    small = prepared.resize(pixels, size)
    assert small.shape == (size, size) and small.dtype == np.uint8
    assert np.abs(small - mean).max() <= 0.5 + 1e-9
    opencv = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - opencv).max() <= 1


def test_resize_mask_rescues_only_regions_that_would_vanish():
    """A large region follows the half-coverage rule; a tiny second region elsewhere keeps
    its most-covered pixel instead of vanishing, and nothing outside the regions is set."""
    mask = box(1024, slice(0, 512), slice(0, 512)) | box(1024, slice(900, 903), slice(900, 903))
    small = prepared.resize_mask(mask, 64)
    assert small[:32, :32].all() and small.sum() == 32 * 32 + 1 and small[900 // 16, 900 // 16]


def test_no_real_positive_vanishes_at_the_working_size(all_train_rle):
    """Every positive row of the public SIIM labels still has a mask at 64 and 128 px, with
    about its area (the old half-coverage rule erased a quarter of them at 64 px)."""
    table = rle.read_csv(all_train_rle)
    positives = {k: v for k, v in table.rles.items() if v != [rle.EMPTY]}
    assert len(positives) == 2669
    rng = np.random.default_rng(0)
    sample = [positives[k] for k in rng.choice(sorted(positives), 400, replace=False)]
    for size in (64, 128):
        ratios = []
        for rows in sample:
            full = rle.render(rows, 1024, 1024)
            small = prepared.resize_mask(full, size)
            assert small.any()
            ratios.append(small.sum() / (full.sum() * (size / 1024) ** 2))
        assert 0.9 < np.median(ratios) < 1.1


def test_patient_split_keeps_patients_together():
    patients = [f"p{i // 3}" for i in range(300)]
    split = prepared.patient_split(patients, SPLIT, seed=1)
    assert set(split.values()) == set(SPLIT)
    assert split == prepared.patient_split(patients, SPLIT, seed=1)
    shares = {s: sum(v == s for v in split.values()) / len(split) for s in SPLIT}
    assert abs(shares["train"] - 0.6) < 0.02


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3), (" 12 ", 12), ("1", 1), ("", None), ("   ", None), (None, None)],
)
def test_decode_workers_reads_the_environment_else_one_per_core(value, expected, monkeypatch):
    monkeypatch.setattr(prepared.os, "cpu_count", lambda: 7)
    env = {} if value is None else {"PNEUMO_DECODE_WORKERS": value}
    assert prepared.decode_workers(env) == (7 if expected is None else expected)


@pytest.mark.parametrize("value", ["0", "-2", "2.5", "two", "1e3"])
def test_decode_workers_refuses_what_is_no_whole_number_naming_the_variable(value):
    with pytest.raises(ValueError, match=f"PNEUMO_DECODE_WORKERS='{value}': expected a whole number >= 1"):
        prepared.decode_workers({"PNEUMO_DECODE_WORKERS": value})


@pytest.mark.parametrize(
    ("splits", "split", "expected"),
    [
        (["train", "val", "test", "train", "test"], "test", [2, 4]),
        (["train", "val", "test", "train", "test"], "train", [0, 3]),
        (["train", "train"], "val", []),
        ([], "train", []),
    ],
)
def test_split_indices_are_the_rows_of_the_split_in_order(splits, split, expected):
    got = prepared.split_indices([{"split": s} for s in splits], split)
    assert got.dtype == np.int64 and got.tolist() == expected


def test_share_indices_refuses_a_share_outside_0_to_100():
    for share in (0, -5, 101):
        with pytest.raises(ValueError, match=f"share {share}: expected a percentage"):
            prepared.share_indices([{"split": "train"}], share)


@pytest.mark.parametrize(
    ("present", "name", "found"),
    [
        (["train-rle.csv", "stage_2_train.csv"], "train-rle.csv", "train-rle.csv"),  # the param's name first
        (["stage_2_train.csv"], "train-rle.csv", "stage_2_train.csv"),  # else a published one
        (["Data_Entry_2017_v2020.csv"], "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"),
    ],
)
def test_find_csv_takes_the_named_file_else_a_published_name(tmp_path, present, name, found):
    for f in present:
        (tmp_path / f).write_text("x\n")
    published = ("stage_2_train.csv", "Data_Entry_2017_v2020.csv")
    assert prepared.find_csv(tmp_path, name, published) == tmp_path / found


def test_find_csv_names_every_candidate_when_none_is_there(tmp_path):
    (tmp_path / "train-rle.csv").mkdir()  # a folder is no file
    with pytest.raises(prepared.PrepareError, match=r"neither 'train-rle.csv' nor any of \['a.csv'\]"):
        prepared.find_csv(tmp_path, "train-rle.csv", ("a.csv",))


def test_find_files_matches_the_suffix_in_any_case_sorted_through_linked_folders(tmp_path):
    data = tmp_path / "root"
    for name in ("b/2.DCM", "a/1.dcm", "a/notes.txt", "c.dcm.bak", "a/deeper/3.Dcm"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "4.dcm").write_bytes(b"x")
    (data / "linked").symlink_to(tmp_path / "elsewhere")
    (data / "a" / "loop").symlink_to(data)  # a link back up the tree is walked once, not forever
    found = [p.relative_to(data).as_posix() for p in prepared.find_files(data, ".dcm")]
    assert found == ["a/1.dcm", "a/deeper/3.Dcm", "b/2.DCM", "linked/4.dcm"]


def test_a_share_is_whole_patients_nested_and_keeps_its_positive_rate():
    """share_indices: the same films for any caller, whole patients, a smaller share inside a
    larger one, positives and negatives each cut to the share (rounded up)."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(300):
        positive = p % 4 == 0
        for _ in range(1 + p % 3):  # 1-3 films a patient
            rows.append({"patient_id": f"p{p}", "split": "train" if p < 240 else "val",
                         "mask_pixels": str(int(positive) * int(rng.integers(1, 50)))})  # fmt: skip
    films = {s: prepared.share_indices(rows, s) for s in (5, 10, 25, 50, 100)}
    assert np.array_equal(films[100], prepared.split_indices(rows, "train"))
    for small, large in ((5, 10), (10, 25), (25, 50), (50, 100)):
        assert set(films[small]) < set(films[large])
    for s, kept in films.items():
        patients = {rows[i]["patient_id"] for i in kept}
        assert {i for i, r in enumerate(rows) if r["patient_id"] in patients} == set(kept.tolist())  # whole patients
        positive = np.array([int(rows[i]["mask_pixels"]) > 0 for i in kept])
        train_positive = np.array([int(rows[i]["mask_pixels"]) > 0 for i in films[100]])
        assert positive.sum() >= np.ceil(s * train_positive.sum() / 100)
        assert positive.sum() <= np.ceil(s * train_positive.sum() / 100) + 2  # at most one patient over
    reversed_rows = prepared.share_indices(list(reversed(rows)), 25)
    assert np.array_equal(reversed_rows, len(rows) - 1 - prepared.share_indices(rows, 25)[::-1])
    with pytest.raises(ValueError, match="percentage"):
        prepared.share_indices(rows, 0)
