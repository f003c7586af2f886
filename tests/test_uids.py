"""A DICOM's own values never choose where `pneumo predict` writes: a SOPInstanceUID that is no
valid DICOM UID (a path, a formula, a NUL or newline, 65 digits, ...) is refused by name, its
value quoted and escaped, and nothing is written outside the folders the user named; the real
films beside it keep their rows."""

import csv
import shutil
import warnings
from pathlib import Path

import pydicom
import pytest
from tiny_model import train_tiny_model

from pneumo.cli import main
from pneumo.formats import dicom

# file name -> SOPInstanceUID ("{tmp}" is the test's temporary folder: an absolute path)
HOSTILE = {
    "parent.dcm": "../../x",
    "inside-then-up.dcm": "1.2.3/../../x",
    "absolute.dcm": "{tmp}/escaped",
    "65-digits.dcm": "1" * 65,
    "formula.dcm": '=HYPERLINK("http://example.com","x")',
    "nul.dcm": "1.2.3\x00/../../x",
    "newline.dcm": "1.2.3\n4.5",
    "leading-zero.dcm": "1.2.03",
    "empty-component.dcm": "1..2",
    "two-values.dcm": "1.2.3\\4.5.6",
}


@pytest.fixture(scope="module")
def model_dir(tiny_siim, unet_run) -> Path:
    return train_tiny_model(tiny_siim, unet_run)


def _with_uid(source: Path, uid: str, path: Path) -> None:
    """`source` saved again with its SOPInstanceUID set to `uid` (pydicom only warns)."""
    ds = pydicom.dcmread(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.SOPInstanceUID = uid
        ds.save_as(path)


def _tree(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file under `root` with its size and modification time: what changed shows."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize(
    "uid",
    ["1.2.3", "0", "1.0.2", "2.25.329800735698586629295641978511506172918", "1." + "2" * 62],
)
def test_valid_uids(uid):
    assert dicom.is_uid(uid)


@pytest.mark.parametrize(
    "uid",
    [*HOSTILE.values(), "", "1.2.", ".1.2", "1.2.3 ", "01.2", "1.2." + "3" * 61, "1.2.3a", "1,2,3", None, 123]
    + ["1.2.\u0663"],  # an Arabic-Indic three: a digit to str.isdigit and to regex \d, not to DICOM
)
def test_invalid_uids(uid):
    assert not dicom.is_uid(uid)


def test_hostile_uids_are_refused_by_name_and_nothing_escapes(real_dicoms, model_dir, tmp_path):
    """Each hostile file is refused, naming the file and its UID escaped on one line; the tree
    outside the output folders is untouched, file for file; the ten real films keep their rows,
    their overlays and their tiles in the contact sheet."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in real_dicoms:
        shutil.copy(f, inputs)
    for name, uid in HOSTILE.items():
        _with_uid(real_dicoms[0], uid.format(tmp=tmp_path), inputs / name)
    (tmp_path / "work").mkdir()
    out, overlays = tmp_path / "work" / "p.csv", tmp_path / "work" / "overlays" / "o"
    before = _tree(tmp_path)
    argv = ["predict", str(inputs), "--model", str(model_dir), "--out", str(out), "--overlays", str(overlays)]
    assert main([*argv, "--device", "cpu"]) == 1

    after = _tree(tmp_path)
    assert {p: v for p, v in after.items() if p in before} == before  # nothing outside changed
    written = sorted(p.relative_to(tmp_path).as_posix() for p in set(after) - set(before))
    ids = sorted(p.stem for p in real_dicoms)
    assert written == sorted(
        [f"work/p.csv{side}" for side in ("", ".errors.csv", ".files.csv", ".duplicates.csv")]
        + [f"work/overlays/o/{i}.png" for i in ids]
        + ["work/overlays/o/index.html"]
    )
    assert [line.split(",")[0] for line in out.read_text().splitlines()[1:]] == ids
    assert (overlays / "index.html").read_text().count("<img ") == 10

    raw = (tmp_path / "work" / "p.csv.errors.csv").read_text()
    assert len(raw.splitlines()) == 1 + len(HOSTILE)  # one line per refusal: no value broke a row
    with open(tmp_path / "work" / "p.csv.errors.csv", newline="") as f:
        errors = {Path(file).name: reason for file, reason in list(csv.reader(f))[1:]}
    assert sorted(errors) == sorted(HOSTILE)
    for name, uid in HOSTILE.items():
        reason = errors[name]
        assert reason.startswith(f"{inputs / name}: SOPInstanceUID ") and "no ImageId" in reason, reason
        if name == "two-values.dcm":
            assert "holds 2 values" in reason
        else:
            assert "is not a valid DICOM UID" in reason
            assert dicom.one_line(repr(uid.format(tmp=tmp_path))) in reason  # quoted, escaped
        assert "\n" not in reason and "\x00" not in reason


@pytest.mark.parametrize("alone", [False, True], ids=["beside-real-films", "alone"])
def test_the_escaped_overlay_reproduction(real_dicoms, model_dir, tmp_path, alone):
    """The report's reproduction: a real film saved with SOPInstanceUID `../../escaped-overlay`,
    overlays asked for in work/overlays/o. evil.dcm is refused by name and nothing is written
    outside the overlays folder: exit 1 beside other films; alone, nothing is predicted, so
    exit 2 and nothing written at all."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    if not alone:
        for f in real_dicoms[:3]:
            shutil.copy(f, inputs)
    _with_uid(real_dicoms[5], "../../escaped-overlay", inputs / "evil.dcm")
    out, overlays = tmp_path / "work" / "p.csv", tmp_path / "work" / "overlays" / "o"
    argv = ["predict", str(inputs), "--model", str(model_dir), "--out", str(out), "--overlays", str(overlays)]
    assert main([*argv, "--device", "cpu"]) == (2 if alone else 1)
    assert not list(tmp_path.rglob("escaped-overlay*"))
    if alone:
        assert not (tmp_path / "work").exists()
        return
    written = {p.parent for p in (tmp_path / "work").rglob("*") if p.is_file()}
    assert written == {tmp_path / "work", overlays}
    with open(out.with_name("p.csv.errors.csv"), newline="") as f:
        (header, (file, reason)) = list(csv.reader(f))
    assert file == str(inputs / "evil.dcm") and "'../../escaped-overlay' is not a valid DICOM UID" in reason


def test_a_file_without_uid_is_named_by_its_file_name_only_when_that_is_a_plain_name(real_dicoms, model_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("IM0001.dcm", "=cmd.dcm", "a b.dcm"):
        ds = pydicom.dcmread(real_dicoms[0])
        del ds.SOPInstanceUID
        ds.save_as(inputs / name)
    out = tmp_path / "p.csv"
    assert main(["predict", str(inputs), "--model", str(model_dir), "--out", str(out), "--device", "cpu"]) == 1
    assert [line.split(",")[0] for line in out.read_text().splitlines()[1:]] == ["IM0001"]
    with open(out.with_name("p.csv.errors.csv"), newline="") as f:
        errors = {Path(file).name: reason for file, reason in list(csv.reader(f))[1:]}
    assert sorted(errors) == ["=cmd.dcm", "a b.dcm"]
    assert "no SOPInstanceUID, and the file name '=cmd' is no plain name" in errors["=cmd.dcm"]
