"""Fetch the real sample data that the tests need (the project's ../shared/realdata) onto a
clone that lacks it, byte for byte, from the public sources named in its PROVENANCE.csv.

Tests that need real SIIM DICOMs and CXR-14 PNGs skip without them, and `.ci/run` refuses to
run; this lays the same files out, under the same relative paths, in a target folder
(default data/realdata in the clone; $PNEUMO_REALDATA overrides, as it does for the tests).
The manifest data/realdata.csv lists every file with its size and SHA-256 and says where it
comes from (its `kind`):

    github  downloaded from <mirror>/<source>, source being <owner>/<repo>/<commit>/<path>;
            the mirror defaults to https://raw.githubusercontent.com ($PNEUMO_REALDATA_MIRROR
            or --mirror replaces it)
    rows    a DERIVED file: the header line and, in their original order and verbatim, the
            rows of the gzipped CSV `source` (a file of the layout) whose first field is the
            name, or the name without suffix, of a layout file matching the glob `select`
            (Data_Entry_2017.csv: the 40 PNGs; train-rle.csv: the SOPInstanceUIDs of the 10 DICOMs)
    copy    copied from the clone (`source`): the folder's own README.md and PROVENANCE.csv

Every file is checked against its SHA-256 before it is kept: a mismatch is refused by name
(expected and actual digest on one line), the bad file deleted, the good files kept, and the
exit status is 1. Files already in the target with the right digest are left alone. When
../shared/realdata (or --shared, $PNEUMO_REALDATA_SHARED) holds every file with the right
digest, the files are copied from there and nothing is downloaded. Standard library only.

The manifest was made by `--write-manifest`, from the files of ../shared/realdata (sizes
and SHA-256 computed there) and its PROVENANCE.csv (repository, path and commit of each
file); it also copies the folder's README.md and PROVENANCE.csv beside the manifest, and it
checks that both DERIVED files come out of their derivation byte for byte.

    python tools/realdata.py [--target DIR] [--shared DIR] [--mirror URL] [--timeout S]
    python tools/realdata.py --write-manifest [--shared DIR]
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import gzip
import hashlib
import http.client
import io
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "data" / "realdata.csv"
SHARED = ROOT.parent / "shared" / "realdata"
TARGET = ROOT / "data" / "realdata"
MIRROR = "https://raw.githubusercontent.com"
COLUMNS = ["path", "bytes", "sha256", "kind", "source", "select"]

# --write-manifest: what PROVENANCE.csv says in prose, made exact. Its DERIVED rows: (the
# gzipped CSV they were cut from, the glob of the layout files whose rows they hold).
DERIVED = {
    "cxr14/Data_Entry_2017.csv": ("cxr14/all-Data_Entry_2017_v2020.csv.gz", "cxr14/images/*.png"),
    "siim/train-rle.csv": ("siim/all-train-rle.csv.gz", "siim/dicom-images-train/*.dcm"),
}
# Files the clone already ships byte for byte: copied, not downloaded. The SIIM -> CXR-14 map
# is data/siim-to-nih.csv (data/PROVENANCE.md), so no unverified commit is needed for it.
SHIPPED = {"siim/siim-to-nih.csv": "data/siim-to-nih.csv"}
# The folder's own files, not in PROVENANCE.csv: kept in the clone beside the manifest.
KEPT = {"README.md": "data/realdata.README.md", "PROVENANCE.csv": "data/realdata.PROVENANCE.csv"}


@dataclass(frozen=True)
class Entry:
    """One file of the layout: where it goes, what it must hash to, where it comes from."""

    path: str
    bytes: int
    sha256: str
    kind: str
    source: str
    select: str = ""


@dataclass(frozen=True)
class Sources:
    """What the producers need besides the entry: the mirror, the timeout, the whole manifest."""

    mirror: str
    timeout: float
    entries: list[Entry]


class Refused(Exception):
    """This file cannot be had (HTTP error, missing source); the others may still be."""


class NetworkDown(Exception):
    """No answer at all from the mirror: stop instead of waiting out every file."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(path: Path) -> list[Entry]:
    """The manifest's rows (lines starting with # are comments)."""
    with open(path, newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return [Entry(**{**row, "bytes": int(row["bytes"])}) for row in rows]


def url_for(entry: Entry, mirror: str = MIRROR) -> str:
    """The download URL of a `github` entry: <mirror>/<owner>/<repo>/<commit>/<path>."""
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(entry.source)}"


def download(url: str, timeout: float) -> bytes:
    """The body at `url`, trying twice; Refused on an HTTP error, NetworkDown on no answer."""
    for attempt in (1, 2):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            error: Exception = Refused(f"cannot download {url}: HTTP {e.code} {e.reason}")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # DNS, refused, timeout, cut
            reason = getattr(e, "reason", e)
            error = NetworkDown(f"network failure: cannot download {url}: {reason} (after 2 attempts)")
        if attempt == 1:
            time.sleep(1)
    raise error


def from_github(entry: Entry, target: Path, sources: Sources) -> bytes:
    return download(url_for(entry, sources.mirror), sources.timeout)


def select_rows(table: bytes, keys: set[bytes]) -> bytes:
    """The header line and the lines whose first comma-separated field is in `keys`, verbatim."""
    lines = table.splitlines(keepends=True)
    return lines[0] + b"".join(line for line in lines[1:] if line.split(b",", 1)[0] in keys)


def rows_keys(entries: list[Entry], pattern: str) -> set[bytes]:
    """Names and suffix-less names of the layout files matching `pattern` (fnmatch: * spans /)."""
    names = [Path(e.path) for e in entries if fnmatch.fnmatchcase(e.path, pattern)]
    return {n.name.encode() for n in names} | {n.stem.encode() for n in names}


def from_rows(entry: Entry, target: Path, sources: Sources) -> bytes:
    source = target / entry.source
    if not source.is_file():  # refused earlier (deleted) or never fetched
        raise Refused(f"cannot derive it: its source {entry.source} is missing")
    with gzip.open(source, "rb") as f:
        return select_rows(f.read(), rows_keys(sources.entries, entry.select))


def from_clone(entry: Entry, target: Path, sources: Sources) -> bytes:
    if not (ROOT / entry.source).is_file():
        raise Refused(f"{entry.source} is missing from the clone")
    return (ROOT / entry.source).read_bytes()


# kind -> the function that produces the file's bytes; `rows` entries run last, after their source
KINDS: dict[str, Callable[[Entry, Path, Sources], bytes]] = {
    "github": from_github,
    "copy": from_clone,
    "rows": from_rows,
}


def is_good(path: Path, entry: Entry) -> bool:
    return path.is_file() and path.stat().st_size == entry.bytes and sha256(path.read_bytes()) == entry.sha256


def store(data: bytes, entry: Entry, target: Path) -> str | None:
    """Write `data` to the target if it hashes right; else delete any file there and say why."""
    dest = target / entry.path
    actual = sha256(data)
    if actual != entry.sha256:
        dest.unlink(missing_ok=True)
        return f"refused {entry.path}: sha256 expected {entry.sha256}, got {actual} ({len(data)} bytes)"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(data)
    part.replace(dest)
    return None


def fetch(entries: list[Entry], target: Path, shared: Path | None, mirror: str, timeout: float) -> int:
    """Lay out `entries` in `target`; the number of files refused (0: all there, verified)."""
    for entry in entries:
        if entry.kind not in KINDS:
            raise SystemExit(f"realdata: {entry.path}: unknown kind {entry.kind!r} (valid: {', '.join(KINDS)})")
    pending = [e for e in entries if not is_good(target / e.path, e)]
    if not pending:
        print(f"realdata: all {len(entries)} files already in {target} with correct digests")
        return 0
    if shared is not None and shared.is_dir() and shared.resolve() != target.resolve():
        bad = [e for e in entries if not is_good(shared / e.path, e)]
        if not bad:
            for entry in pending:
                store((shared / entry.path).read_bytes(), entry, target)
            print(
                f"realdata: {shared} holds all {len(entries)} files with correct digests: using it, nothing downloaded"
            )
            return 0
        print(f"realdata: {shared} lacks {len(bad)} of the files or holds them with other digests: not used")
    sources = Sources(mirror=mirror, timeout=timeout, entries=entries)
    refused = []
    for done, entry in enumerate(sorted(pending, key=lambda e: e.kind == "rows")):
        try:
            error = store(KINDS[entry.kind](entry, target, sources), entry, target)
        except Refused as e:
            error = f"refused {entry.path}: {e}"
        except NetworkDown as e:
            missing = len(refused) + len(pending) - done
            print(f"realdata: {e}; stopped: {missing} of {len(entries)} files missing in {target}", file=sys.stderr)
            return missing
        if error:
            print(f"realdata: {error}", file=sys.stderr)
            refused.append(entry.path)
        else:
            print(f"realdata: {entry.kind:6} {entry.path}")
    kept = len(entries) - len(refused)
    print(f"realdata: {kept} of {len(entries)} files in {target}" + (f", {len(refused)} refused" if refused else ""))
    return len(refused)


def github_source(path: str, provenance: str) -> str:
    """<owner>/<repo>/<commit>/<path> from a PROVENANCE row: 'repo (notes) | path | commit (notes) | licence'."""
    fields = [f.strip() for f in provenance.split("|")]
    repo, repo_path = fields[0].split()[0], fields[1]
    commit = fields[2].split()[0] if len(fields) > 2 else ""
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise SystemExit(f"realdata: {path}: PROVENANCE names no commit (add it to SHIPPED if the clone has it)")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise SystemExit(f"realdata: {path}: not a GitHub repository: {repo!r}")
    return f"{repo}/{commit}/{repo_path}"


def build_manifest(shared: Path) -> list[Entry]:
    """The manifest of the folder `shared`, from its files and its PROVENANCE.csv."""
    with open(shared / "PROVENANCE.csv", newline="") as f:
        provenance = list(csv.reader(f))[1:]  # path, bytes, md5, source
    entries = []
    for path, size, md5, text in provenance:
        data = (shared / path).read_bytes()
        if len(data) != int(size) or hashlib.md5(data).hexdigest() != md5:
            raise SystemExit(f"realdata: {shared / path} does not match its PROVENANCE row (size {size}, md5 {md5})")
        if text.startswith("DERIVED") != (path in DERIVED):
            raise SystemExit(f"realdata: {path}: DERIVED in PROVENANCE.csv and in DERIVED must agree: {text}")
        if path in DERIVED:
            entries.append(Entry(path, len(data), sha256(data), "rows", *DERIVED[path]))
        elif path in SHIPPED:
            entries.append(Entry(path, len(data), sha256(data), "copy", SHIPPED[path]))
        else:
            entries.append(Entry(path, len(data), sha256(data), "github", github_source(path, text)))
    for name, kept in KEPT.items():
        data = (shared / name).read_bytes()
        entries.append(Entry(name, len(data), sha256(data), "copy", kept))
    listed = {e.path for e in entries}
    files = sorted(p.relative_to(shared).as_posix() for p in shared.rglob("*") if p.is_file())
    unlisted = [p for p in files if p not in listed]
    if unlisted:
        raise SystemExit(f"realdata: files in {shared} with no source in PROVENANCE.csv or KEPT: {unlisted}")
    for entry in entries:  # the derivation must give back the shared file, byte for byte
        if entry.kind == "rows" and sha256(from_rows(entry, shared, Sources(MIRROR, 0, entries))) != entry.sha256:
            raise SystemExit(f"realdata: deriving {entry.path} from {entry.source} does not give the shared file")
    return entries


def write_manifest(entries: list[Entry], shared: Path, out: Path) -> None:
    """Write the manifest and the copies of the folder's own files (KEPT) into the clone."""
    text = io.StringIO()
    text.write(
        "# The real samples of ../shared/realdata, one row per file, written by `python tools/realdata.py\n"
        "# --write-manifest` from that folder and its PROVENANCE.csv; `python tools/realdata.py` lays them out.\n"
        "# kind: github = <mirror>/<source>; rows = header + rows of <source> for the files matching <select>;\n"
        "# copy = the file <source> of this clone. See tools/realdata.py.\n"
    )
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow(entry.__dict__)
    out.write_text(text.getvalue())
    for name, kept in KEPT.items():
        (ROOT / kept).write_bytes((shared / name).read_bytes())
    print(f"realdata: wrote {out} ({len(entries)} files) and {', '.join(KEPT.values())}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--target",
        type=Path,
        default=Path(os.environ.get("PNEUMO_REALDATA") or TARGET),
        help="folder to lay the samples out in (default $PNEUMO_REALDATA, else data/realdata)",
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path(os.environ.get("PNEUMO_REALDATA_SHARED") or SHARED),
        help="an existing copy to take the files from when it is complete "
        "(default $PNEUMO_REALDATA_SHARED, else ../shared/realdata beside the clone)",
    )
    parser.add_argument(
        "--mirror",
        default=os.environ.get("PNEUMO_REALDATA_MIRROR") or MIRROR,
        help=f"base URL replacing {MIRROR} (default $PNEUMO_REALDATA_MIRROR)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per download attempt (default 60)")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="default data/realdata.csv")
    parser.add_argument(
        "--write-manifest", action="store_true", help="regenerate the manifest from the files in --shared and exit"
    )
    args = parser.parse_args(argv)
    if args.write_manifest:
        write_manifest(build_manifest(args.shared), args.shared, args.manifest)
        return 0
    refused = fetch(read_manifest(args.manifest), args.target, args.shared, args.mirror, args.timeout)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
