"""`pneumo predict` survives any file: a seeded mutator corrupts the real SIIM samples and every
DICOM pydicom ships, and each folder of mutants goes through `pneumo.cli.main` in this process.

A mutant is one source file with at most one structural change, made on the bytes where
pydicom located the element: an element's value replaced by a malformed value of its VR
('1A' for an IS, 'nan' for a DS, a US of 1 or 6 bytes, a path or formula for a UI, ...), an
element length that overruns the file, a hostile SOPInstanceUID, or the UID of another file of
the folder (duplicated UIDs: different images collide); then up to two kinds of byte damage: truncation at a
random offset, bytes flipped in the header, bytes flipped in the pixel data. Some mutants are
exact copies of another. Mutants of the real films get a fresh UID of the same length first,
so they cannot collide with the untouched films beside them.

Each folder holds 50 mutants beside the ten untouched real films. For every folder: the
exit code is documented (1; 0 when every mutant came through), stderr holds no traceback,
every file ends exactly once, as a row (OUT.files.csv), a copy of a row (OUT.duplicates.csv) or
a one-line refusal naming it (OUT.errors.csv); every untouched film has its row; every row's
ImageId is a valid UID or plain name; nothing is written outside the output folders.

The seed is printed (run pytest with -s to see it, with the refusal reasons and their counts)
and `PNEUMO_FUZZ_SEED=<seed>` replays a run; the slow run draws a fresh seed unless it is set,
and `PNEUMO_FUZZ_MUTANTS` sets its count. The model is loaded once per module: every call of
`main` would otherwise spend most of its time loading the same weights.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import re
import shutil
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import torch
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.uid import DeflatedExplicitVRLittleEndian
from tiny_model import train_tiny_model

from pneumo.cli import main
from pneumo.core import predict as engine
from pneumo.formats import dicom

SEED_VARIABLE = "PNEUMO_FUZZ_SEED"
# every line `pneumo predict` may print on stderr: a refusal or a duplicate naming its file, a
# native decoder's own message about a file (libjpeg's "Corrupt JPEG data", caught at the file
# descriptor and prefixed with the file's name), the device, the summary
STDERR_LINE = re.compile(
    r"(error|duplicate): /|/.*: decoder: |device: |\d+ image\(s\) predicted -> |\d+ file\(s\) are copies "
)
FAST_SEED, FAST_MUTANTS, SLOW_MUTANTS, PER_FOLDER = 20260101, 300, 3000, 50
PYDICOM_DATA = Path(pydicom.__file__).parent / "data"
SHIPPED = ("test_files", "charset_files", "palettes")  # pydicom's folders of DICOMs (and a few other files)

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
SOP_INSTANCE_UID, PIXEL_DATA = 0x00080018, 0x7FE00010
# the elements the reader depends on: a structural mutation picks one of these most of the time
IMAGE_TAGS = {
    0x00280002,  # SamplesPerPixel
    0x00280004,  # PhotometricInterpretation
    0x00280006,  # PlanarConfiguration
    0x00280008,  # NumberOfFrames
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # BitsAllocated
    0x00280101,  # BitsStored
    0x00280102,  # HighBit
    0x00280103,  # PixelRepresentation
    0x00281050,  # WindowCenter
    0x00281051,  # WindowWidth
    0x00281052,  # RescaleIntercept
    0x00281053,  # RescaleSlope
    0x00080016,  # SOPClassUID
    SOP_INSTANCE_UID,
    PIXEL_DATA,
}
HOSTILE_UIDS = [
    b"../../x",
    b"1.2.3/../../x",
    b"/tmp/pneumo-fuzz-escaped",
    b"1" * 65,
    b'=HYPERLINK("http://example.com","x")',
    b"1.2.3\x00/../x",
    b"1.2.3\n4",
    b"+1.2",
    b"@1.2",
    b"-1.2",
    b"1.02.3",
    b"1..2",
    b"1.2.3\\4.5",
    b"\xff\xfe1.2",
    b"",
]
MALFORMED = {
    "IS": [b"1A", b"", b" ", b"99999999999", b"-1", b"1.5", b"1\\2", b"0", b"+-1", b"\x00\x00", b"65536"],
    "DS": [b"1.2.3", b"nan", b"inf", b"-inf", b"1e999", b"", b"-", b"0", b"1\\2\\3", b"\xff\xfe"],
    "US": [b"", b"\x00", b"\xff\xff", b"\x00\x00\x00\x00\x00\x00", b"\x00\x00", b"\x01\x00\x02", b"\x0c\x00"],
    "UL": [b"", b"\xff\xff\xff\xff", b"\x00\x00", b"\x00" * 8],
    "UI": HOSTILE_UIDS,
    "CS": [b"MONOCHROME3", b"RGB", b"", b"\x00\n", b"MONOCHROME1\\MONOCHROME2", b"PALETTE COLOR", b"YBR_FULL"],
}
MALFORMED["SS"], MALFORMED["SL"] = MALFORMED["US"], MALFORMED["UL"]


@dataclass(frozen=True)
class Element:
    """Where one top-level element's length field and value lie in a file's bytes."""

    tag: int
    vr: str
    value_offset: int
    length: int
    length_offset: int
    length_size: int
    little: bool


@dataclass
class Source:
    path: Path
    data: bytes
    elements: list[Element]
    real: bool  # one of the real SIIM films

    def element(self, tag: int) -> Element | None:
        return next((e for e in self.elements if e.tag == tag), None)

    @property
    def pixel_offset(self) -> int:
        pixels = self.element(PIXEL_DATA)
        return pixels.value_offset if pixels else len(self.data)


def _elements(data: bytes) -> list[Element]:
    """The top-level elements pydicom finds in `data`, each checked against the bytes (a file
    it only half understands yields the ones that check out; a deflated one none)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            if ds.get("file_meta", {}).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                return []  # offsets are in the inflated stream, not in these bytes
            raws = [ds.get_item(tag) for tag in list(ds.keys())]
    except Exception:  # a shipped file pydicom cannot parse: only byte damage for it
        return []
    found = []
    for raw in raws:
        if not isinstance(raw, RawDataElement) or raw.value_tell is None:
            continue
        size = 4 if raw.is_implicit_VR or raw.VR in LONG_VRS else 2
        order = "little" if raw.is_little_endian else "big"
        start = raw.value_tell - size
        if start < 0 or int.from_bytes(data[start : raw.value_tell], order) != raw.length:
            continue
        try:
            vr = raw.VR or dictionary_VR(raw.tag)
        except KeyError:
            vr = "UN"
        found.append(Element(int(raw.tag), vr, raw.value_tell, raw.length, start, size, raw.is_little_endian))
    return found


def _sources(real_dicoms: list[Path]) -> list[Source]:
    shipped = sorted(p for folder in SHIPPED for p in (PYDICOM_DATA / folder).rglob("*") if p.is_file())
    dicoms = [p for p in shipped if p.suffix.lower() == ".dcm" or p.read_bytes()[128:132] == b"DICM"]
    out = []
    for path in [*real_dicoms, *dicoms]:
        data = path.read_bytes()
        out.append(Source(path, data, _elements(data), path in real_dicoms))
    return out


def _set_value(data: bytes, element: Element, value: bytes) -> bytes:
    """`data` with `element`'s value replaced and its length field set to match."""
    if element.length == 0xFFFFFFFF:  # undefined length: the value's end is not where length says
        return data
    value = value[: 2 ** (8 * element.length_size) - 2]
    length = len(value).to_bytes(element.length_size, "little" if element.little else "big")
    return data[: element.length_offset] + length + value + data[element.value_offset + element.length :]


def _fresh_uid(rng: random.Random, length: int) -> bytes:
    """A valid UID of exactly `length` bytes (offsets of everything after it stay put)."""
    digits = max(1, min(length, 64) - 5)
    uid = b"2.25." + str(rng.randint(1, 9)).encode() + bytes(rng.choice(b"0123456789") for _ in range(digits - 1))
    return uid[:length].ljust(length, b"\x00")


class Mutator:
    """Seeded mutants of the sources, folder by folder."""

    def __init__(self, sources: list[Source], seed: int):
        self.rng = random.Random(seed)
        self.real = [s for s in sources if s.real]
        self.shipped = [s for s in sources if not s.real]
        self.images = [s for s in self.shipped if s.element(PIXEL_DATA)]  # most mutants should reach a decoder

    def folder(self, count: int) -> list[tuple[bytes, str]]:
        """`count` mutants (bytes, what was done) for one folder."""
        made: list[tuple[bytes, str, bytes | None]] = []  # (bytes, description, its UID when known)
        for _ in range(count):
            if made and self.rng.random() < 0.05:
                data, what, uid = self.rng.choice(made)
                made.append((data, f"an exact copy of [{what}]", uid))
                continue
            pool = self.rng.choices([self.real, self.images, self.shipped], weights=[25, 60, 15])[0]
            source = self.rng.choice(pool)
            made.append(self._mutant(source, [u for _, _, u in made if u]))
        return [(data, what) for data, what, _ in made]

    def _mutant(self, source: Source, uids: list[bytes]) -> tuple[bytes, str, bytes | None]:
        rng, data, steps = self.rng, source.data, []
        pixel_offset = source.pixel_offset
        sop = source.element(SOP_INSTANCE_UID)
        uid = data[sop.value_offset : sop.value_offset + sop.length].rstrip(b"\x00 ") if sop else None
        if source.real and sop:  # never the UID of the untouched films beside it
            fresh = _fresh_uid(rng, sop.length)
            data = _set_value(data, sop, fresh)
            uid = fresh.rstrip(b"\x00")
        structural = source.elements and rng.random() < 0.7
        if structural:
            kind = rng.choice(["value", "value", "value", "overrun", "hostile-uid", "uid-of-another"])
            if kind in ("hostile-uid", "uid-of-another") and sop:
                uid = rng.choice(HOSTILE_UIDS) if kind == "hostile-uid" or not uids else rng.choice(uids)
                element, value = sop, uid
            else:
                kind = "value" if kind != "overrun" else kind
                candidates = [e for e in source.elements if e.tag in IMAGE_TAGS]
                element = rng.choice(candidates if candidates and rng.random() < 0.7 else source.elements)
                value = self._malformed(element)
                uid = None if element.tag == SOP_INSTANCE_UID else uid
            if kind == "overrun":
                data = self._overrun(data, element)
            else:
                before = len(data)
                data = _set_value(data, element, value)
                if element.value_offset < pixel_offset:
                    pixel_offset += len(data) - before
            steps.append(f"{kind} ({element.tag >> 16:04X},{element.tag & 0xFFFF:04X}) {element.vr}")
        for damage in rng.sample(["truncate", "flip-header", "flip-pixels"], rng.choice([0, 1, 1, 2])):
            if damage == "truncate" and len(data) > 1:
                cut = rng.randrange(len(data))
                data = data[:cut]
                steps.append(f"truncated at {cut}")
            elif damage.startswith("flip"):
                lo, hi = (0, min(pixel_offset, len(data))) if damage == "flip-header" else (pixel_offset, len(data))
                if hi > lo:
                    flipped = bytearray(data)
                    for _ in range(rng.randint(1, 8)):
                        flipped[rng.randrange(lo, hi)] ^= rng.randint(1, 255)
                    data = bytes(flipped)
                    steps.append(damage)
        if not steps:  # at least one change: flip one byte anywhere
            flipped = bytearray(data)
            flipped[rng.randrange(len(flipped))] ^= rng.randint(1, 255)
            data = bytes(flipped)
            steps.append("flip-any")
        valid = uid is not None and dicom.is_uid(uid.decode("latin-1"))
        return data, f"{source.path.name}: {'; '.join(steps)}", uid if valid else None

    def _malformed(self, element: Element) -> bytes:
        choices = MALFORMED.get(element.vr)
        if choices and self.rng.random() < 0.9:
            return self.rng.choice(choices)
        return bytes(self.rng.randrange(256) for _ in range(self.rng.choice([0, 1, 2, 3, 7, 64])))

    def _overrun(self, data: bytes, element: Element) -> bytes:
        most = 2 ** (8 * element.length_size) - 1
        past = len(data) - element.value_offset + self.rng.randint(1, 4096)
        length = min(most, self.rng.choice([past, most - 1, most, self.rng.randint(min(past, most), most)]))
        order = "little" if element.little else "big"
        return (
            data[: element.length_offset] + length.to_bytes(element.length_size, order) + data[element.value_offset :]
        )


@pytest.fixture(scope="module")
def model_dir(tiny_siim, unet_run) -> Path:
    return train_tiny_model(tiny_siim, unet_run)


@pytest.fixture(scope="module")
def loaded(model_dir) -> tuple:
    return engine.load_model(model_dir, torch.device("cpu"))


@pytest.fixture
def loaded_once(model_dir, loaded, monkeypatch) -> Iterator[Path]:
    """`model_dir`, with `load_model` answering from the weights loaded once for the module:
    hundreds of `main` calls need the same weights, and loading them is most of a call's time.
    Torch runs one thread meanwhile: a 32 px model gains nothing from more, and on a machine
    whose cores are busy OpenMP's waiting threads made the fast run 7x slower (20 s, not 3)."""
    load = engine.load_model
    monkeypatch.setattr(engine, "load_model", lambda folder, dev: loaded if folder == model_dir else load(folder, dev))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model_dir
    torch.set_num_threads(threads)


def _seed(default: int | None) -> int:
    text = os.environ.get(SEED_VARIABLE, "").strip()
    if text:
        return int(text)
    return default if default is not None else random.SystemRandom().randrange(2**32)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def _tree(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if not p.is_dir()}


def reason_kind(file: str, message: str) -> str:
    """A refusal without its file and values: what kind of refusal it is, for the counts."""
    text = message[len(file) + 2 :] if message.startswith(f"{file}: ") else message
    text = re.sub(r"ImageId \S+ \(SOPInstanceUID\) is also that of .*", "ImageId shared with another image", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)  # a quoted value
    text = re.sub(r"\(.*", "", text)  # the detail in brackets: pydicom's and the decoders' own words
    text = text.replace("'…'...", "'…'")  # a long value, cut
    text = re.sub(r"\b\d+\b", "N", text)
    return text.strip(" :;")


def check_folder(
    model_dir: Path, folder: Path, out_dir: Path, untouched: list[Path], capfd, *, overlays: bool, batch_size: int
) -> tuple[int, list[tuple[str, str]]]:
    """Run `pneumo predict` on `folder` and check everything the module docstring promises;
    (exit code, refusals)."""
    root = folder.parent
    before = _tree(root)
    inputs = sorted(p for p in folder.rglob("*") if p.is_file())
    out = out_dir / "p.csv"
    argv = ["predict", str(folder), "--model", str(model_dir), "--out", str(out), "--pattern", "*"]
    argv += ["--batch-size", str(batch_size), "--device", "cpu"]
    if overlays:
        argv += ["--overlays", str(out_dir / "overlays")]
    capfd.readouterr()
    # what the CLI's logging.basicConfig gives a terminal (under pytest its handler is pytest's)
    root_log, terminal = logging.getLogger(), logging.StreamHandler(sys.stderr)
    level = root_log.level
    root_log.addHandler(terminal)
    root_log.setLevel(logging.INFO)
    try:
        code = main(argv)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # what got past the CLI's last guard (a Rust panic is a BaseException)
        raise AssertionError(f"pneumo predict raised {type(e).__name__}: {e}") from e
    finally:
        root_log.removeHandler(terminal)
        root_log.setLevel(level)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    unexpected = [line for line in err.splitlines() if "unexpected error" in line]
    assert code in (0, 1), f"exit {code}: {unexpected[0] if unexpected else err[-2000:]}"
    strays = [line for line in err.splitlines() if not STDERR_LINE.match(line)]
    assert not strays, f"stderr lines that are no one-line report: {strays[:5]}"

    rows, files = _rows(out), _rows(out.with_name("p.csv.files.csv"))
    errors, duplicates = _rows(out.with_name("p.csv.errors.csv")), _rows(out.with_name("p.csv.duplicates.csv"))
    assert code == (1 if errors else 0)
    ends = Counter([Path(f) for _, f in files] + [Path(f) for f, _ in errors] + [Path(f) for f, *_ in duplicates])
    assert sorted(ends) == inputs, f"lost: {set(inputs) - set(ends)}; unknown: {set(ends) - set(inputs)}"
    assert max(ends.values()) == 1, f"twice: {[p for p, n in ends.items() if n > 1]}"
    for file, message in errors:
        assert message.startswith(f"{file}: ") and "\n" not in message and "\r" not in message, message
    ids = [image_id for image_id, _ in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and [i for i, _ in files] == ids
    assert all(dicom.is_uid(i) or dicom.PLAIN_NAME.fullmatch(i) for i in ids), ids
    by_file = {Path(f): image_id for image_id, f in files}
    for film in untouched:
        assert by_file.get(film) == film.stem, f"{film} lost its row"

    after = _tree(root)
    assert {p: v for p, v in after.items() if p in before} == before
    written = {p.relative_to(out_dir).as_posix() for p in set(after) - set(before)}
    expected = {f"p.csv{side}" for side in ("", ".errors.csv", ".files.csv", ".duplicates.csv")}
    if overlays:
        expected |= {f"overlays/{i}.png" for i in ids} | {"overlays/index.html"}
    assert all(p.is_relative_to(out_dir) for p in set(after) - set(before)) and written == expected
    return code, [(f, m) for f, m in errors]


def fuzz(model_dir: Path, real_dicoms: list[Path], tmp_path: Path, capfd, *, seed: int, mutants: int) -> None:
    with capfd.disabled():  # shown at once with -s, whatever happens next
        print(f"\nfuzzing pneumo predict: seed {seed} ({SEED_VARIABLE}={seed} replays it), {mutants} mutants")
    mutator = Mutator(_sources(real_dicoms), seed)
    reasons: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    start = time.perf_counter()
    for k in range(-(-mutants // PER_FOLDER)):
        count = min(PER_FOLDER, mutants - k * PER_FOLDER)
        folder = tmp_path / f"run-{k}" / "in"
        (folder / "real").mkdir(parents=True)
        untouched = [folder / "real" / f.name for f in real_dicoms]
        for f, copy in zip(real_dicoms, untouched, strict=True):
            shutil.copy(f, copy)
        made = {}
        for i, (data, what) in enumerate(mutator.folder(count)):
            path = folder / "mutants" / f"m{i:03d}.dcm"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            made[path] = what
        where = f"seed {seed}, folder {k} ({SEED_VARIABLE}={seed} replays it); mutants: " + "; ".join(
            f"{p.name} = {w}" for p, w in made.items()
        )
        try:
            _, errors = check_folder(
                model_dir,
                folder,
                tmp_path / f"run-{k}" / "out",
                untouched,
                capfd,
                overlays=k % 3 == 0,
                batch_size=(1, 4, 16)[k % 3],
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{where}") from None
        refused = {Path(f) for f, _ in errors}
        assert not refused & set(untouched), where
        outcomes.update(["refused"] * len(refused) + ["row or copy"] * (len(made) - len(refused)))
        reasons.update(reason_kind(f, m) for f, m in errors)
        shutil.rmtree(tmp_path / f"run-{k}")  # thousands of mutants: keep the disk use flat
    seconds = time.perf_counter() - start
    print(f"{mutants} mutants in {seconds:.1f} s: {dict(outcomes)}; refusal reasons:")
    for reason, n in reasons.most_common():
        print(f"  {n:5d}  {reason}")


def test_fuzz_predict_fast(loaded_once, real_dicoms, tmp_path, capfd):
    """A few hundred mutants, seeded (the same every run unless PNEUMO_FUZZ_SEED says otherwise)."""
    fuzz(loaded_once, real_dicoms, tmp_path, capfd, seed=_seed(FAST_SEED), mutants=FAST_MUTANTS)


@pytest.mark.slow
def test_fuzz_predict_slow(loaded_once, real_dicoms, tmp_path, capfd):
    """Thousands of mutants from a fresh seed each run (printed; PNEUMO_FUZZ_SEED replays it)."""
    mutants = int(os.environ.get("PNEUMO_FUZZ_MUTANTS", SLOW_MUTANTS))
    fuzz(loaded_once, real_dicoms, tmp_path, capfd, seed=_seed(None), mutants=mutants)


def test_every_file_pydicom_ships_beside_the_real_films(loaded_once, real_dicoms, tmp_path, capfd):
    """Every file in pydicom's data folders (its test files, badVR.dcm among them, character set
    and palette files, and the few that are no DICOM) beside the ten real films: a documented
    exit code, no traceback, each file a row, a copy or a named refusal, each real film its row."""
    folder = tmp_path / "in"
    for name in SHIPPED:
        shutil.copytree(PYDICOM_DATA / name, folder / "pydicom" / name)
    (folder / "real").mkdir()
    for f in real_dicoms:
        shutil.copy(f, folder / "real")
    assert (folder / "pydicom" / "test_files" / "badVR.dcm").is_file()
    untouched = [folder / "real" / f.name for f in real_dicoms]
    code, errors = check_folder(loaded_once, folder, tmp_path / "out", untouched, capfd, overlays=True, batch_size=16)
    assert code == 1
    refused = {Path(f).name: m for f, m in errors}
    assert "malformed NumberOfFrames value '1A'" in refused["badVR.dcm"]
    print(f"\n{len(errors)} of the files pydicom ships refused:")
    for reason, n in Counter(reason_kind(f, m) for f, m in errors).most_common():
        print(f"  {n:5d}  {reason}")
