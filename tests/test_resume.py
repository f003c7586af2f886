"""Resumable training: a run killed with SIGKILL resumes from its last epoch checkpoint and
ends with the same weights as an uninterrupted run (CPU, fixed seed)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pneumo.core import checkpoints, loop, models

EPOCHS = 12
RUN = """
import json, logging, sys
from pathlib import Path
import torch
from pneumo.core import runtime
logging.basicConfig(level=logging.INFO)
from pneumo.tasks import train_unet
kwargs = json.loads(sys.argv[1])
kwargs["rt"] = runtime.start(kwargs.pop("device"))
torch.manual_seed(0)
train_unet.train_unet(**{k: Path(v) if k.endswith(("_path", "_dir")) else v for k, v in kwargs.items()})
"""


def kwargs(unet_run, tmp: Path, run: str) -> dict:
    """JSON-ready arguments of the run script (paths as strings, the device by name)."""
    # patience = EPOCHS: the plateau rule cannot stop the run before the kill lands (the lr still halves)
    args = unet_run(tmp, run, max_epochs=EPOCHS, patience=EPOCHS, device="cpu", params={"max_epochs": EPOCHS})
    return {k: str(v) if isinstance(v, Path) else v for k, v in args.items()}


def start(args: dict) -> subprocess.Popen:
    env = {**os.environ, "PNEUMO_CHECKPOINT_SECONDS": "0"}  # a checkpoint after every epoch, so the kill lands between
    return subprocess.Popen(
        [sys.executable, "-c", RUN, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def saved_epoch(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


@pytest.mark.slow
def test_killed_run_resumes_and_matches_an_uninterrupted_run(tiny_siim, unet_run):
    assert start(kwargs(unet_run, tiny_siim, "whole")).wait() == 0
    killed = kwargs(unet_run, tiny_siim, "killed")
    proc = start(killed)
    deadline = time.time() + 120
    while saved_epoch(Path(killed["checkpoint_path"])) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lost_at = saved_epoch(Path(killed["checkpoint_path"]))
    assert 2 <= lost_at < EPOCHS - 1, "the run was not interrupted mid-training"
    resumed = start(killed)
    out, _ = resumed.communicate()
    assert resumed.returncode == 0, out
    assert f"resuming after epoch {lost_at}" in out
    whole, _ = models.load_checkpoint(tiny_siim / "whole" / "model.safetensors")
    again, meta = models.load_checkpoint(tiny_siim / "killed" / "model.safetensors")
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    # the dvclive history is continued, not restarted: one row per epoch
    rows = (tiny_siim / "killed" / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(rows) == EPOCHS + 1


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    model = torch.nn.Linear(2, 2)
    checkpoints.Checkpoint(tmp_path / "c.pt", {"lr": 1}, True, every_seconds=0, model=model).save(3, note="x")
    assert checkpoints.Checkpoint(tmp_path / "c.pt", {"lr": 1}, True, model=model).restore() == (4, {"note": "x"})
    assert checkpoints.Checkpoint(tmp_path / "c.pt", {"lr": 2}, True, model=model).restore() == (0, {})
    assert checkpoints.Checkpoint(tmp_path / "c.pt", {"lr": 1}, False, model=model).restore() == (0, {})
    checkpoints.Checkpoint(tmp_path / "c.pt", {"lr": 1}, True, model=model).finish()
    assert checkpoints.Checkpoint(tmp_path / "c.pt", {"lr": 1}, True, model=model).restore() == (0, {})
    assert (tmp_path / "c.pt").stat().st_size < 2000


def test_resumed_history_drops_rows_after_the_checkpoint_and_torn_writes(tmp_path):
    """A kill can land after dvclive logged an epoch but before its checkpoint, or in the
    middle of dvclive writing: the resumed history has each epoch once, and no torn row."""
    tsv = tmp_path / "plots" / "metrics" / "train" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tloss\n0\t1.0\n1\t0.9\n2\t0.8\n3\t0.")  # epoch 2 logged, not checkpointed; 3 torn
    (tmp_path / "metrics.json").write_text('{"train": {"lo')  # torn summary
    with loop.live(tmp_path, start=2) as live:
        live.log_metric("train/loss", 0.7)
        live.next_step()
    assert tsv.read_text().splitlines() == ["step\tloss", "0\t1.0", "1\t0.9", "2\t0.7"]
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 2


def test_a_checkpoint_is_written_once_its_interval_has_passed(tmp_path, monkeypatch):
    """PNEUMO_CHECKPOINT_SECONDS: 0 writes after every epoch; a longer interval skips epochs
    until it has passed (the kill then costs at most that long)."""
    model = torch.nn.Linear(2, 2)
    every = checkpoints.Checkpoint(tmp_path / "every.pt", {}, True, every_seconds=0, model=model)
    every.save(0)
    assert saved_epoch(tmp_path / "every.pt") == 0
    every.save(1)
    assert saved_epoch(tmp_path / "every.pt") == 1
    monkeypatch.setenv("PNEUMO_CHECKPOINT_SECONDS", "3600")
    sparse = checkpoints.Checkpoint(tmp_path / "sparse.pt", {}, True, model=model)  # from the environment
    sparse.save(0)
    assert saved_epoch(tmp_path / "sparse.pt") == -1  # an hour has not passed since the run started
    sparse.last -= 3600
    sparse.save(1)
    assert saved_epoch(tmp_path / "sparse.pt") == 1
    sparse.save(2)
    assert saved_epoch(tmp_path / "sparse.pt") == 1
