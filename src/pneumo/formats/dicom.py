"""Chest radiograph DICOMs (SIIM-ACR and other scanners) -> 8-bit grayscale arrays; and the
writer of the synthetic generator's SIIM-like files, so that one reader serves real and
synthetic files. (The tests' writers of other transfer syntaxes are in tests/dicom_writers.py.)

JPEG Baseline 8-bit (the SIIM transfer syntax) is decoded by cv2 straight from the
encapsulated frame (~1.5x faster than pydicom+Pillow here, bit-identical on the real files).
Every other transfer syntax goes through pydicom with the plugin named in `DECODERS`
(measured in benchmarks/README.md), so the result does not depend on which other plugins
happen to be installed. Stored values then go through the modality LUT (rescale) and the
VOI LUT or window, as pydicom applies them, and are scaled to 8 bits over the VOI output
range (the image's own range when the file has no VOI); MONOCHROME1 is inverted.

Colour, multi-frame and pixel-less files (RT, SR, ...) and transfer syntaxes no installed
plugin decodes are refused with a one-line `DicomError` naming the file and the reason.
Files without the 128-byte preamble and file meta header, as older systems write them, are
read with pydicom's `force=True` when they hold an image dataset.

A DICOM is untrusted input: whoever made it chose every byte. Header values are read
defensively (a malformed IS/DS/US value, a missing or contradictory image tag, a size no
radiograph has is a refusal, checked before anything is allocated), the SOPInstanceUID must
be a valid DICOM UID before it names anything (it becomes the ImageId, a CSV cell and an
overlay's file name), and `read_dicom` turns whatever else a file makes pydicom, numpy or a
decoder raise into a `DicomError`: one bad file costs only itself. pydicom's warnings and log
records about a file are logged at DEBUG with the file's name instead of printed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

log = logging.getLogger(__name__)

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
SYNTHETIC_UID_ROOT = "1.2.826.0.1.3680043.10.1234"  # the embedded phantoms' private root: never a real study
# Limits no chest film comes near (SIIM's are 1024 px a side; CR and DR detectors hold at most
# about 4,300), checked before anything is allocated, so a header claiming 65535 x 65535 is a
# refusal, not a MemoryError or the OOM killer. predict pads a film to a square of its longer
# side: at 8192 px that square is 64 M pixels.
MAX_SIDE = 8192
BITS_ALLOCATED = (8, 16, 32)  # what a grayscale radiograph is stored in (12-bit films are stored in 16)
MAX_FILE_BYTES = 2**29  # 512 MiB: more than one 8192 x 8192 frame at 32 bits plus any header
# A DICOM UID (PS3.5 9.1): components of digits without leading zeros (a lone 0 is one), joined
# by dots, at most 64 characters. Nothing else may name an output or fill a CSV cell.
UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
UID_MAX = 64
# A file without any SOPInstanceUID is named by its file name, if that is a plain name too.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# What ends a run, not one file's work. Anything else one file's work raises is that file's
# problem, BaseException included: a Rust decoder's panic (pyo3's PanicException; the fuzzer
# found pylibjpeg-rle panicking on damaged RLE data) derives from BaseException, not Exception.
STOPS = (KeyboardInterrupt, SystemExit, GeneratorExit)

# The pydicom plugin that decodes each compressed transfer syntax, first installed one wins.
# pydicom alone would take gdcm > pylibjpeg > pillow, whatever is installed; naming them
# keeps results independent of that. Choice and timings: benchmarks/README.md (DICOM decoding).
DECODERS: dict[str, tuple[str, ...]] = {
    JPEGBaseline8Bit: ("pillow", "pylibjpeg"),  # 12/16-bit or odd files only; 8-bit goes through cv2
    JPEGExtended12Bit: ("pylibjpeg", "pillow"),  # 12-bit: only libjpeg decodes it (gdcm and Pillow refuse)
    JPEGLossless: ("pylibjpeg",),
    JPEGLosslessSV1: ("pylibjpeg",),
    JPEGLSLossless: ("pyjpegls", "pylibjpeg"),
    JPEGLSNearLossless: ("pyjpegls", "pylibjpeg"),
    JPEG2000Lossless: ("pylibjpeg", "pillow"),
    JPEG2000: ("pylibjpeg", "pillow"),
    RLELossless: ("pylibjpeg", "pydicom"),
}


class DicomError(ValueError):
    """A file that does not hold a readable grayscale radiograph. Its message is one line
    whatever went into it: a file name or a header value holding a newline or NUL is escaped,
    so it cannot break a log line or a CSV row."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]} | {10: "\\n", 13: "\\r", 9: "\\t"}
_CONTROL |= {0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\x85"}  # what str.splitlines also breaks at


def one_line(text: str) -> str:
    """`text` with every character that could end a line (or hide in one) escaped."""
    return text.translate(_CONTROL)


def unexpected(path, error: BaseException) -> str:
    """The one-line refusal of a file whose reading failed in a way no check foresaw (a
    decoder's own exception or panic): the file, the exception's type and its message."""
    return one_line(f"{path}: unexpected {type(error).__name__}: {' '.join(str(error).split())}")


def shown(value: object, limit: int = 80) -> str:
    """A header value as a refusal quotes it: repr-like, so a newline, NUL or quote is visible and
    harmless, and cut to `limit` characters (a value can be megabytes long)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return f"{text[:limit]!r}... ({len(text)} characters)"
    return repr(text)


def is_uid(value: object) -> bool:
    """Whether `value` is a valid DICOM UID: digits and dots, no empty component, no leading zero
    in a component (a lone 0 is allowed), at most 64 characters."""
    return isinstance(value, str) and len(value) <= UID_MAX and UID_PATTERN.fullmatch(value) is not None


@dataclass
class Radiograph:
    pixels: np.ndarray  # uint8 (H, W), MONOCHROME2 sense: bright = dense
    image_id: str  # SOPInstanceUID (the SIIM ImageId; SIIM names each file by it), else the file stem
    patient_id: str
    path: Path | None = None  # the file it was read from


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


class _Records(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _quiet(path: Path) -> Iterator[None]:
    """pydicom's (and numpy's) warnings about one file's values, and pydicom's log records about
    it, logged here at DEBUG, one line each with the file's name. Left alone they flood stderr
    without saying which file, and pydicom logs a decoder's failure with its whole traceback,
    where the file's refusal already says it in one line."""
    records: list[logging.LogRecord] = []
    caught: list[warnings.WarningMessage] = []
    handler, pydicom_log = _Records(records), logging.getLogger("pydicom")
    propagate, pydicom_log.propagate = pydicom_log.propagate, False
    pydicom_log.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        pydicom_log.removeHandler(handler)
        pydicom_log.propagate = propagate
        for message in dict.fromkeys([str(w.message) for w in caught] + [r.getMessage() for r in records]):
            log.debug(one_line(f"{path}: {message}"))


@contextlib.contextmanager
def _native_stderr(path: Path) -> Iterator[None]:
    """What a native decoder prints on the process's stderr while it decodes one file (libjpeg's
    "Corrupt JPEG data: ..." warnings, a Rust panic's message and backtrace), caught at the file
    descriptor and logged one line each with the file's name: at WARNING when the decoder still
    returned an image (it may be damaged: the user should know which film), at DEBUG when the
    file is refused anyway (its refusal says why)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to catch
        yield
        return
    level = logging.DEBUG
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield
            level = logging.WARNING
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in dict.fromkeys(sink.read().decode(errors="replace").splitlines()):
                if line.strip():
                    log.log(level, one_line(f"{path}: decoder: {line.strip()}"))


def read_dataset(path: str | Path, *, header_only: bool = False) -> pydicom.Dataset:
    """The dataset of a DICOM file, with a transfer syntax in its file meta. A file without
    the preamble and meta header (older systems write bare datasets) is read with
    `force=True` and kept only if it holds an image; its transfer syntax is the encoding
    pydicom found (uncompressed)."""
    path = Path(path)
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise DicomError(f"{path}: cannot be read ({_one_line(e)})") from None
    if size > MAX_FILE_BYTES:
        raise DicomError(
            f"{path}: {size / 2**20:.0f} MiB: larger than any single radiograph this reads "
            f"({MAX_FILE_BYTES // 2**20} MiB), not read"
        )
    try:
        with warnings.catch_warnings():
            # pydicom only warns when a file ends inside an element, and then returns a dataset
            # without any element: a partial download would read as a file without pixel data
            warnings.filterwarnings("error", "End of file reached", UserWarning)
            ds = pydicom.dcmread(path, stop_before_pixels=header_only)
    except UserWarning as e:
        part = "pixel data" if not header_only and _header_complete(path) else "header"
        raise DicomError(f"{path}: truncated file: its {part} is cut off ({str(e).split(' in file ')[0]})") from None
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=header_only)
            image = all(k in ds for k in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"))
        except Exception:  # pydicom raises many types for broken files
            image = False
        if not image:
            # pydicom's own message ends "Use force=True to force reading": a flag no command here has
            raise DicomError(
                f"{path}: not a readable DICOM file (no 'DICM' prefix or file meta header, "
                "and no image dataset without them)"
            ) from None
    except Exception as e:
        raise DicomError(f"{path}: not a readable DICOM file ({_one_line(e)})") from None
    meta = ds.get("file_meta") or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        if implicit is None:
            raise DicomError(f"{path}: no transfer syntax in the file and none could be inferred")
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
        ds.file_meta = meta
    return ds


def _header_complete(path: Path) -> bool:
    """Whether the file reads in full up to its pixel data."""
    try:
        read_dataset(path, header_only=True)
    except DicomError:
        return False
    return True


def image_id_of(ds: pydicom.Dataset, path: Path) -> str:
    """ImageId: the SOPInstanceUID (SIIM names each file `<SOPInstanceUID>.dcm`, so both
    agree there; elsewhere the UID is what identifies the image across copies and renames),
    the file stem only when the dataset has none. Either must be a safe name, since it names
    an output file and fills a CSV cell: a UID that is no valid DICOM UID (`../../x`, a NUL, a
    leading `=`, 65 digits) or a stem that is no plain name is a DicomError quoting it."""
    value = _value(ds, "SOPInstanceUID", path)
    if isinstance(value, MultiValue):
        raise DicomError(f"{path}: SOPInstanceUID holds {len(value)} values {shown(str(list(value)))}: no ImageId")
    if value is None or str(value).rstrip("\0 ") == "":
        if not PLAIN_NAME.fullmatch(path.stem):
            raise DicomError(
                f"{path}: no SOPInstanceUID, and the file name {shown(path.stem)} is no plain name "
                "(letters, digits, '.', '_', '-', at most 64 characters) to use instead: no ImageId"
            )
        return path.stem
    uid = str(value).rstrip("\0 ")  # UIDs are padded to an even length with a NUL (some writers: a space)
    if not is_uid(uid):
        raise DicomError(
            f"{path}: SOPInstanceUID {shown(uid)} is not a valid DICOM UID (digits and dots, no leading zero "
            f"in a component, at most {UID_MAX} characters): no ImageId"
        )
    return uid


def read_image_id(path: str | Path) -> str:
    """The ImageId of a file from its header alone (no pixel decoding); a DicomError naming the
    file for anything else."""
    path = Path(path)
    with _quiet(path):
        try:
            return image_id_of(read_dataset(path, header_only=True), path)
        except (DicomError, *STOPS):
            raise
        except BaseException as e:  # whatever a damaged header makes pydicom raise
            raise DicomError(f"{path}: unreadable header ({_one_line(e)})") from None


def _value(ds: pydicom.Dataset, keyword: str, path: Path) -> object:
    """An element's value (None when absent), or a DicomError naming it: pydicom converts a
    value when it is first read, and a damaged element (an unknown VR, a length its VR cannot
    have) raises then, with any of several types."""
    try:
        return ds.get(keyword)
    except Exception as e:
        raise DicomError(f"{path}: unreadable {keyword} ({_one_line(e)})") from None


def _count(ds: pydicom.Dataset, keyword: str, path: Path, default: int | None = None) -> int:
    """A header count (Rows, BitsAllocated, NumberOfFrames, ...) as an int, or a DicomError
    quoting the value: an IS or US value can be anything in a damaged file ('1A', '', 1.5,
    several values, a byte string of the wrong length)."""
    value = _value(ds, keyword, path)
    if value is None or value == "":
        if default is None:
            raise DicomError(f"{path}: no {keyword} in its header: not an image it can read")
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r" *[+-]?[0-9]{1,9} *", value):
        return int(value)
    raise DicomError(f"{path}: malformed {keyword} value {shown(value)}: not a whole number")


def _check_image(ds: pydicom.Dataset, path: Path) -> None:
    """Refuse, naming the reason, anything but one grayscale frame of integer pixels whose
    header values are well formed, agree with each other and give a size a radiograph can have
    (before any decoder allocates it)."""
    if "PixelData" not in ds:
        kind = str(_value(ds, "SOPClassUID", path) or "")
        name = UID(kind).name if is_uid(kind) else f"SOP class {shown(kind)}" if kind else "no SOP class"
        what = f"{name}, modality {shown(_value(ds, 'Modality', path) or '?')}" if kind else name
        other = " (float pixel data)" if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds else ""
        raise DicomError(f"{path}: no pixel data{other}: not an image ({what})")
    photometric = _value(ds, "PhotometricInterpretation", path)
    if photometric is None or photometric == "":
        raise DicomError(f"{path}: no PhotometricInterpretation in its header: not an image it can read")
    samples = _count(ds, "SamplesPerPixel", path, default=1)
    if samples != 1 or photometric not in GRAYSCALE:
        raise DicomError(
            f"{path}: colour image (PhotometricInterpretation {shown(photometric)}, {samples} sample(s) per pixel): "
            "only grayscale (MONOCHROME1/2) radiographs are read"
        )
    frames = _count(ds, "NumberOfFrames", path, default=1)
    if frames != 1:
        raise DicomError(f"{path}: multi-frame image ({frames} frames): only single-frame radiographs are read")
    rows, columns = _count(ds, "Rows", path), _count(ds, "Columns", path)
    if not (0 < rows <= MAX_SIDE and 0 < columns <= MAX_SIDE):
        raise DicomError(
            f"{path}: image size {rows} x {columns} (Rows x Columns): not 1 to {MAX_SIDE} pixels a side, "
            "no radiograph this reads"
        )
    allocated = _count(ds, "BitsAllocated", path)
    stored = _count(ds, "BitsStored", path, default=allocated)
    if allocated not in BITS_ALLOCATED or not 0 < stored <= allocated:
        raise DicomError(
            f"{path}: BitsAllocated {allocated}, BitsStored {stored}: a grayscale radiograph allocates "
            f"{', '.join(map(str, BITS_ALLOCATED))} bits a pixel and stores at most as many"
        )
    if _count(ds, "PixelRepresentation", path, default=0) not in (0, 1):
        raise DicomError(f"{path}: PixelRepresentation {ds.PixelRepresentation!r}: neither 0 (unsigned) nor 1 (signed)")


def _decode(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    syntax = ds.file_meta.TransferSyntaxUID
    if not isinstance(syntax, str) or not is_uid(str(syntax)):
        raise DicomError(f"{path}: malformed transfer syntax UID {shown(syntax)}")
    syntax = UID(str(syntax))
    if syntax == JPEGBaseline8Bit and ds.BitsAllocated == 8:
        try:
            return _decode_jpeg_baseline(ds, path)
        except DicomError:
            raise
        except Exception as e:  # a damaged encapsulation
            raise DicomError(f"{path}: cannot decode JPEG Baseline pixel data ({_one_line(e)})") from None
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomError(f"{path}: unsupported transfer syntax {syntax.name!r} ({syntax}): no decoder exists") from None
    if not decoder.is_available:
        missing = "; ".join(f"{k}: {', '.join(v)}" for k, v in decoder.missing_dependencies.items())
        raise DicomError(f"{path}: no decoder installed for transfer syntax {syntax.name!r} (plugins need {missing})")
    plugin = next((p for p in DECODERS.get(syntax, ()) if p in decoder.available_plugins), "")
    try:
        with _native_stderr(path):
            pixels, _ = decoder.as_array(ds, index=0, decoding_plugin=plugin)
    except STOPS:
        raise
    except BaseException as e:  # plugins raise many types, and a Rust one panics (see STOPS)
        raise DicomError(f"{path}: cannot decode {syntax.name} pixel data ({_one_line(e)})") from None
    if pixels.ndim != 2:
        raise DicomError(f"{path}: expected one 2-D frame, got pixel array of shape {pixels.shape}")
    return pixels


def to_uint8(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    """Stored values -> 8-bit display values, MONOCHROME2 sense: modality LUT (rescale),
    then the VOI LUT or else the first window, as pydicom applies them, scaled to 8 bits over
    the range the VOI maps into; without VOI, over the image's own range. 8-bit images
    without any LUT are returned as stored. Integer images go through a table of their
    value range (the same numbers, ~10x faster than the per-pixel float chain)."""
    has_voi = bool(ds.get("VOILUTSequence")) or "WindowCenter" in ds
    rescale = (float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0))
    if not all(map(math.isfinite, rescale)):  # a DS value 'nan' or '1e999' would make every pixel NaN
        raise ValueError(f"rescale slope and intercept {rescale} are not finite numbers")
    has_modality = bool(ds.get("ModalityLUTSequence")) or rescale != (1.0, 0.0)  # GDCM writes an identity rescale
    if pixels.dtype == np.uint8 and not has_voi and not has_modality:
        out = pixels
    elif pixels.dtype.kind in "iu" and pixels.size > 2**16 and int(pixels.max()) - int(pixels.min()) < 2**20:
        first = int(pixels.min())
        offsets = pixels.astype(np.int64) - first if pixels.dtype.itemsize >= 2 else pixels - np.uint8(first)
        present = np.bincount(offsets.ravel()) > 0
        table = _display(ds, np.arange(first, first + present.size), present)
        out = table[offsets]
    else:
        out = _display(ds, pixels, None)
    return 255 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


def _display(ds: pydicom.Dataset, stored: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    """The LUT chain of `to_uint8` on stored values; the image's own range is taken over the
    values `present` (all when None)."""
    values = apply_modality_lut(stored, ds)
    if ds.get("VOILUTSequence"):
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        outputs = apply_voi(np.arange(descriptor[1], descriptor[1] + (descriptor[0] or 2**16)), ds)
        values, lo, hi = apply_voi(values, ds), float(outputs.min()), float(outputs.max())
    elif "WindowCenter" in ds:
        lo, hi = (float(v) for v in apply_windowing(np.array([-np.inf, np.inf]), ds))
        values = apply_windowing(values, ds)
    else:
        seen = values if present is None else values[present]
        lo, hi = float(seen.min()), float(seen.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):  # a window of width 'nan' or 'inf' maps nowhere
        raise ValueError(f"its LUTs map into a range that is not finite ({lo} to {hi})")
    values = values.astype(np.float64)
    scaled = (values - lo) * 255 / (hi - lo) if hi != lo else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _check_jpeg_stream(frame: bytes, path: Path) -> None:
    """Refuse a truncated frame, or one whose entropy-coded scan holds a byte sequence no
    encoder writes (0xFF must be followed by 0x00 or a restart marker): libjpeg (cv2 and
    Pillow alike) only warns on those and returns a silently damaged image."""
    end = len(frame.rstrip(b"\x00")) - 2
    if frame[end : end + 2] != b"\xff\xd9":
        raise DicomError(f"{path}: JPEG frame is truncated (no end-of-image marker)")
    sos = frame.find(b"\xff\xda")
    if sos < 0:
        raise DicomError(f"{path}: JPEG frame has no start-of-scan marker")
    scan = np.frombuffer(frame, np.uint8)[sos + 2 + int.from_bytes(frame[sos + 2 : sos + 4], "big") : end]
    after_ff = scan[1:][scan[:-1] == 0xFF]
    bad = np.flatnonzero((after_ff != 0) & ((after_ff < 0xD0) | (after_ff > 0xD7)))
    if bad.size or (scan.size and scan[-1] == 0xFF):
        raise DicomError(f"{path}: JPEG frame is corrupted ({bad.size} invalid marker(s) inside the compressed scan)")


SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start of frame; not DHT, JPG, DAC


def _jpeg_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) in a JPEG stream's start-of-frame header, found by walking the marker
    segments before the scan (a byte search could hit a thumbnail's); None without one."""
    i = 2  # after SOI
    while i + 4 <= len(frame) and frame[i] == 0xFF:
        marker = frame[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in SOF_MARKERS:
            return (int.from_bytes(frame[i + 5 : i + 7], "big"), int.from_bytes(frame[i + 7 : i + 9], "big"))
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        i += 2 + int.from_bytes(frame[i + 2 : i + 4], "big")
    return None


def _decode_jpeg_baseline(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    _check_jpeg_stream(frame, path)
    # the stream's own size, not the header's, is what libjpeg allocates: compare them first
    size = _jpeg_size(frame) if frame[:2] == b"\xff\xd8" else None
    if size != (ds.Rows, ds.Columns):
        found = "no frame header" if size is None else f"{size[0]}x{size[1]}"
        raise DicomError(f"{path}: JPEG frame is {found}, its header says {ds.Rows}x{ds.Columns}")
    with _native_stderr(path):
        pixels = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.shape != (ds.Rows, ds.Columns):
        raise DicomError(f"{path}: JPEG frame does not decode to {ds.Rows}x{ds.Columns} grayscale")
    return pixels


def read_dicom(path: str | Path) -> Radiograph:
    """Read one radiograph; raise DicomError with a one-line reason naming the file, for
    whatever the file makes pydicom, numpy or a decoder raise (MemoryError included)."""
    path = Path(path)
    with _quiet(path):
        try:
            return _read(path)
        except (DicomError, *STOPS):
            raise
        except BaseException as e:  # a check this module lacks: still this file's problem, not the run's
            raise DicomError(f"{path}: unreadable ({_one_line(e)})") from None


def _read(path: Path) -> Radiograph:
    ds = read_dataset(path)
    _check_image(ds, path)
    image_id = image_id_of(ds, path)  # before decoding: a file that can name nothing costs no decode
    pixels = _decode(ds, path)
    try:
        pixels = to_uint8(ds, pixels)
    except Exception as e:  # malformed LUT or window tags
        raise DicomError(f"{path}: cannot apply its modality/VOI LUT ({_one_line(e)})") from None
    return Radiograph(pixels, image_id, str(_value(ds, "PatientID", path) or ""), path)


def read_image(path: str | Path) -> np.ndarray:
    """The radiograph in a DICOM file as uint8 (H, W), MONOCHROME2 sense."""
    return read_dicom(path).pixels


def write_jpeg_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    patient_id: str,
    view_position: str,
    pixel_spacing_mm: float,
    quality: int = 95,
) -> None:
    """Write an 8-bit MONOCHROME2 radiograph as a JPEG Baseline DICOM laid out like SIIM's."""
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DicomError(f"{path}: JPEG encoding failed")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.SeriesDescription = f"view: {view_position}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [f"{pixel_spacing_mm:.3f}", f"{pixel_spacing_mm:.3f}"]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg.tobytes()])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
