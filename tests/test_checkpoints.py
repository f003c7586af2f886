"""Epoch checkpoints (core/checkpoints.py): the input fingerprint that decides whether a
checkpoint may be resumed, and a checkpoint's state read back exactly: every object passed in,
the torch RNG, the epoch and the loop's extra values (killed and resumed runs:
tests/test_resume.py)."""

import hashlib
import os

import pytest
import torch
from torch import nn

from pneumo.core import checkpoints


def test_fingerstampshashes_small_files_and_stamps_arrays(tmp_path):
    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "index.csv").write_text("image_id\n1\n")
    (folder / "images.npy").write_bytes(b"\x93NUMPY" + bytes(100))
    (folder / "sub").mkdir()  # folders themselves are not listed, their files are
    (folder / "sub" / "report.json").write_text("{}")
    single = tmp_path / "labels.csv"
    single.write_text("a,b\n")
    stamps = checkpoints.fingerprint(folder, single)
    stat = (folder / "images.npy").stat()
    assert stamps == {
        str(folder / "images.npy"): f"{stat.st_size}:{stat.st_mtime_ns}",
        str(folder / "index.csv"): hashlib.md5(b"image_id\n1\n").hexdigest(),
        str(folder / "sub" / "report.json"): hashlib.md5(b"{}").hexdigest(),
        str(single): hashlib.md5(b"a,b\n").hexdigest(),
    }


@pytest.mark.parametrize(
    ("change", "same"),
    [
        (lambda f: (f / "index.csv").write_text("image_id\n2\n"), False),  # a small file's content
        (lambda f: os.utime(f / "images.npy", ns=(1, 1)), False),  # an array re-checked-out
        (lambda f: (f / "images.npy").write_bytes(b"\x93NUMPY" + bytes(101)), False),  # an array's size
        (lambda f: os.utime(f / "index.csv", ns=(1, 1)), True),  # a small file touched, content kept
        (lambda f: None, True),
    ],
)
def test_fingerstampschanges_with_what_a_resumed_run_must_share(tmp_path, change, same):
    (tmp_path / "index.csv").write_text("image_id\n1\n")
    (tmp_path / "images.npy").write_bytes(b"\x93NUMPY" + bytes(100))
    os.utime(tmp_path / "images.npy", ns=(2, 2))
    before = checkpoints.fingerprint(tmp_path)
    change(tmp_path)
    assert (checkpoints.fingerprint(tmp_path) == before) is same


def stateful(seed: int) -> dict:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return {"model": model, "optimizer": optimizer, "sampler": torch.Generator().manual_seed(seed)}


def test_a_checkpoint_restores_every_object_the_rng_and_the_extra_values(tmp_path):
    path = tmp_path / "run" / "c.pt"  # the folder is made
    saved = stateful(1)
    torch.rand(5, generator=saved["sampler"])  # a generator partway through its draws
    checkpoints.Checkpoint(path, {"lr": 0.1}, True, every_seconds=0, **saved).save(5, best=0.25)
    expected_draw, expected_rng = torch.rand(1, generator=saved["sampler"]), torch.rand(1)
    assert path.exists() and not path.with_name("c.pt.partial").exists()

    fresh = stateful(2)
    torch.manual_seed(99)
    assert checkpoints.Checkpoint(path, {"lr": 0.1}, True, **fresh).restore() == (6, {"best": 0.25})
    for name in ("weight", "bias"):
        assert torch.equal(getattr(fresh["model"], name), getattr(saved["model"], name))
    momentum = [fresh["optimizer"].state[p]["momentum_buffer"] for p in fresh["model"].parameters()]
    assert all(torch.equal(a, saved["optimizer"].state[p]["momentum_buffer"]) for a, p in
               zip(momentum, saved["model"].parameters(), strict=True))  # fmt: skip
    assert torch.equal(torch.rand(1, generator=fresh["sampler"]), expected_draw)
    assert torch.equal(torch.rand(1), expected_rng)  # the global torch RNG continues where it was saved


@pytest.mark.parametrize(
    ("params", "resume", "finished", "start"),
    [
        ({"lr": 0.1}, True, False, 3),
        ({"lr": 0.2}, True, False, 0),  # made with other params
        ({"lr": 0.1}, False, False, 0),  # resuming turned off
        ({"lr": 0.1}, True, True, 0),  # a finished run trains again
    ],
)
def test_a_checkpoint_is_resumed_only_with_the_same_params_and_unfinished(tmp_path, params, resume, finished, start):
    path = tmp_path / "c.pt"
    checkpoints.Checkpoint(path, {"lr": 0.1}, True, every_seconds=0, **stateful(0)).save(2)
    if finished:
        checkpoints.Checkpoint(path, {"lr": 0.1}, True, **stateful(0)).finish()
        assert set(torch.load(path, weights_only=True)) == {"params", "complete"}  # a small marker
    assert checkpoints.Checkpoint(path, params, resume, **stateful(0)).restore()[0] == start


def test_nothing_to_resume_and_no_write_within_every_seconds(tmp_path):
    path = tmp_path / "c.pt"
    assert checkpoints.Checkpoint(path, {}, True, **stateful(0)).restore() == (0, {})
    checkpoints.Checkpoint(path, {}, True, every_seconds=3600, **stateful(0)).save(0)
    assert not path.exists()  # less than every_seconds since the run started
