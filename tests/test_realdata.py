"""tools/realdata.py (`make realdata`), run as a user runs it, against a local HTTP server that
serves a copy of the real samples by URL path (<owner>/<repo>/<commit>/<path>, as
raw.githubusercontent.com does): every file arrives byte for byte, the DERIVED ones included;
a corrupted or missing file is refused by name while the others stay; a complete existing copy
is used without a request; the manifest is what --write-manifest makes of the samples. The
real download from GitHub is not run here (no network)."""

import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "realdata.py"
spec = importlib.util.spec_from_file_location("realdata_tool", TOOL)
tool = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = tool  # its dataclasses look their module up there
spec.loader.exec_module(tool)

ENTRIES = tool.read_manifest(tool.MANIFEST)
RLE_GZ = "siim/all-train-rle.csv.gz"
DICOM = next(e.path for e in ENTRIES if e.path.endswith(".dcm") and "dicom-images-train" in e.path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """The tool in a fresh process, with none of the caller's PNEUMO_REALDATA* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_REALDATA")}
    command = list(args) if args and args[0] == "make" else [sys.executable, str(TOOL), *args]
    return subprocess.run(command, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.fixture
def server(realdata, tmp_path):
    """(base URL, served folder, paths requested): the github files of the manifest, copied from
    the real samples to <served>/<source>, served on 127.0.0.1."""
    served = tmp_path / "served"
    for entry in ENTRIES:
        if entry.kind == "github":
            (served / entry.source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(realdata / entry.path, served / entry.source)
    requested = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep pytest's output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", served, requested
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def assert_laid_out(out: Path, realdata: Path, absent: tuple[str, ...] = ()) -> None:
    """Every manifest file but `absent` is in `out`, identical to the real one; nothing else is."""
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        e.path for e in ENTRIES if e.path not in absent
    )
    for entry in ENTRIES:
        if entry.path not in absent:
            data = (out / entry.path).read_bytes()
            assert sha256(data) == entry.sha256 and data == (realdata / entry.path).read_bytes(), entry.path


def test_every_file_arrives_byte_identical(realdata, server, tmp_path):
    url, _, requested = server
    proc = run("--target", str(tmp_path / "out"), "--shared", str(tmp_path / "no-shared"), "--mirror", url)
    assert proc.returncode == 0, proc.stderr
    assert_laid_out(tmp_path / "out", realdata)
    github = sorted("/" + e.source for e in ENTRIES if e.kind == "github")
    assert sorted(requested) == github  # each once; the DERIVED and the kept files are not downloaded
    assert "rows   siim/train-rle.csv" in proc.stdout and "rows   cxr14/Data_Entry_2017.csv" in proc.stdout
    rerun = run("--target", str(tmp_path / "out"), "--shared", str(tmp_path / "no-shared"), "--mirror", url)
    assert rerun.returncode == 0 and "already in" in rerun.stdout and len(requested) == len(github)


@pytest.mark.parametrize(
    "damage, path, refused",
    [
        ("flip", DICOM, [DICOM]),
        ("flip", RLE_GZ, [RLE_GZ, "siim/train-rle.csv"]),  # the DERIVED file cannot be cut from it
        ("delete", "cxr14/images/00000100_000.png", ["cxr14/images/00000100_000.png"]),
    ],
    ids=["flipped-dicom", "flipped-source-of-derived", "missing-png"],
)
def test_a_bad_file_is_refused_by_name_and_the_others_stay(realdata, server, tmp_path, damage, path, refused):
    url, served, _ = server
    entry = next(e for e in ENTRIES if e.path == path)
    bad = served / entry.source
    if damage == "flip":
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(data))
    else:
        bad.unlink()
    proc = run("--target", str(tmp_path / "out"), "--shared", str(tmp_path / "no-shared"), "--mirror", url)
    assert proc.returncode != 0
    errors = proc.stderr.splitlines()
    assert len(errors) == len(refused), proc.stderr
    for name, line in zip(refused, errors, strict=True):
        assert line.startswith(f"realdata: refused {name}: "), line
    if damage == "flip":
        assert f"expected {entry.sha256}, got {sha256(bad.read_bytes())}" in errors[0]
    else:
        assert f"{url}/{entry.source}: HTTP 404" in errors[0]
    assert_laid_out(tmp_path / "out", realdata, absent=tuple(refused))
    assert not list((tmp_path / "out").rglob("*.part"))


def test_an_existing_complete_copy_is_used_without_a_request(realdata, server, tmp_path):
    url, _, requested = server
    proc = run("--target", str(tmp_path / "out"), "--shared", str(realdata), "--mirror", url)
    assert proc.returncode == 0, proc.stderr
    assert "nothing downloaded" in proc.stdout and requested == []
    assert_laid_out(tmp_path / "out", realdata)


def test_network_failure_names_the_url_and_fails(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run(
        "--target", str(tmp_path / "out"), "--shared", str(tmp_path / "none"), "--mirror", f"http://127.0.0.1:{port}"
    )
    first = next(e for e in ENTRIES if e.kind == "github")
    assert proc.returncode == 1
    assert f"network failure: cannot download http://127.0.0.1:{port}/{first.source}" in proc.stderr
    assert f"{len(ENTRIES)} of {len(ENTRIES)} files missing" in proc.stderr


def test_make_realdata_fills_the_clone_and_ci_fails_when_nothing_can_be_had(realdata, server, root, tmp_path):
    """In a bare copy of the clone with no ../shared beside it: `make realdata` fills
    data/realdata from the mirror; .ci/run, with no samples and no mirror, exits 1 before testing."""
    clone = tmp_path / "clone"
    for name in [
        "Makefile",
        ".ci/run",
        "tools/realdata.py",
        "data/realdata.csv",
        *tool.KEPT.values(),
        *tool.SHIPPED.values(),
    ]:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, clone / name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    ci = subprocess.run(
        ["bash", str(clone / ".ci" / "run")],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_REALDATA")},
            "PNEUMO_REALDATA_MIRROR": dead,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ci.returncode == 1 and "could not fetch" in ci.stderr and "network failure" in ci.stderr, ci.stderr
    url, _, _ = server
    proc = run("make", "-s", "realdata", cwd=clone, PNEUMO_REALDATA_MIRROR=url)
    assert proc.returncode == 0, proc.stderr
    assert_laid_out(clone / "data" / "realdata", realdata)


@pytest.mark.parametrize(
    "mirror, expected",
    [
        (None, "https://raw.githubusercontent.com/mlmed/torchxrayvision/{commit}/tests/Fake_MONOHR1.dcm"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/mlmed/torchxrayvision/{commit}/tests/Fake_MONOHR1.dcm"),
        ("https://example.org/gh", "https://example.org/gh/mlmed/torchxrayvision/{commit}/tests/Fake_MONOHR1.dcm"),
    ],
)
def test_url_is_mirror_repo_commit_path(mirror, expected):
    commit = "f4087a0b0d0cdc6a5877fb5456965b6d29adb1e5"
    entry = next(e for e in ENTRIES if e.path == "siim/variants/monochrome1-variant.dcm")
    url = tool.url_for(entry) if mirror is None else tool.url_for(entry, mirror)
    assert url == expected.format(commit=commit)


def test_manifest_is_what_the_samples_and_their_provenance_give(realdata):
    assert tool.build_manifest(realdata) == ENTRIES
    assert {e.kind for e in ENTRIES} == set(tool.KINDS)
    assert all(len(e.source.split("/")[2]) == 40 for e in ENTRIES if e.kind == "github")  # pinned to a commit


@pytest.mark.parametrize(
    "table, keys, expected",
    [
        (b"h1, h2\na,-1\nb,1 2\na,3 4\n", {b"a"}, b"h1, h2\na,-1\na,3 4\n"),  # all rows of a key, in order
        (b"h\nab,1\na,2\n", {b"a"}, b"h\na,2\n"),  # whole field, not a prefix
        (b"h\r\na,1\r\nb,2\r\n", {b"b"}, b"h\r\nb,2\r\n"),  # line endings kept verbatim
        (b"h\na,1\n", set(), b"h\n"),  # header alone
        (b"h\na,1", {b"a"}, b"h\na,1"),  # no final newline
    ],
)
def test_select_rows(table, keys, expected):
    assert tool.select_rows(table, keys) == expected


def test_rows_keys_are_names_and_stems():
    keys = tool.rows_keys(ENTRIES, "siim/dicom-images-train/*.dcm")
    assert b"1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819" in keys and len(keys) == 20
