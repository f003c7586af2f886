"""pneumo.core.loop: the plateau rule, and the one epoch loop every training stage runs (`fit`,
`train_and_save`): which epoch it keeps (the lowest loss, never an unkept epoch, the last one
when asked and there is no validation split), what the rule and the summary see, a finished
run that was killed before its outputs, the main process alone saving; and no task module
keeps an epoch loop of its own."""

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from pneumo.core import checkpoints, loop

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "losses, patience, min_delta, stop, met",
    [
        ([1.0, 0.8, 0.6], 2, 0.02, False, False),  # still falling fast: too few epochs to judge
        ([1.0, 0.8, 0.79, 0.785], 2, 0.02, True, True),  # last two epochs: 1.9% below the best before
        ([1.0, 0.8, 0.7], 2, 0.02, False, False),  # 30% better than before the last two
        ([1.0, 0.8, 0.81, 0.82], 2, 0.02, True, True),  # worse: plateaued
        ([1.0, 0.9, 0.8, 0.7], 2, 0.02, True, False),  # epoch limit (4) reached while improving
        ([1.0, math.nan, math.nan], 2, 0.02, True, True),  # diverged: never improves
        ([1.0, 0.9, 0.5], 1, 0.02, False, False),  # patience 1: the last epoch alone against the rest
    ],
)
def test_plateau_rule(losses, patience, min_delta, stop, met):
    rule = loop.Plateau(patience, min_delta, max_epochs=4)
    stops = [rule.update(x) for x in losses]
    assert stops[-1] == stop and not any(stops[:-1])
    assert rule.met == met and rule.summary()["met"] == met


class Scripted(loop.Training):
    """A one-weight model whose weight is the number of the epoch that last trained it, and
    scripted training losses: which epoch `fit` kept is read off the kept weights."""

    def __init__(self, train_losses: list[float]):
        model = torch.nn.Linear(1, 1, bias=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        super().__init__(model, model, None, optimizer, loop.plateau_scheduler(optimizer, 0.02), None, None, None)
        self.train_losses, self.trained = train_losses, []

    def epoch(self, epoch: int) -> float:
        with torch.no_grad():
            self.model.weight.fill_(epoch)
        self.trained.append(epoch)
        return self.train_losses[epoch]


def run(tmp: Path, train_losses, val_losses=None, *, patience=10, min_delta=0.02, max_epochs=None, **options):
    """`fit` on a `Scripted` training; (kept, kept weight, dvclive summary, training, plateau)."""
    training = Scripted(train_losses)
    validate = (lambda: ({"loss": val_losses[len(training.trained) - 1]}, {})) if val_losses else None
    plateau = loop.Plateau(patience, min_delta, max_epochs or len(train_losses))
    checkpoint, live_dir = training.checkpoint(tmp / "checkpoint.pt", {}, True), tmp / "live"
    best, state, _ = loop.fit(training, validate, checkpoint=checkpoint, plateau=plateau, live_dir=live_dir, **options)
    summary = json.loads((tmp / "live" / "metrics.json").read_text())
    return best, int(state["weight"].item()), summary, training, plateau


def test_fit_keeps_the_epoch_with_the_lowest_validation_loss(tmp_path):
    best, weight, summary, training, _ = run(tmp_path, [0.9, 0.8, 0.7], [1.0, 0.5, 0.7])
    assert best == {"epoch": 1, "val_loss": 0.5} and weight == 1
    assert summary["selected"] == best and summary["plateau"]["epochs"] == 3 == len(training.trained)
    assert summary["plateau"]["best_epoch"] == 1 and summary["val"]["loss"] == 0.7  # the last epoch's values
    rows = (tmp_path / "live" / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()
    assert rows == ["step\tloss", "0\t1.0", "1\t0.5", "2\t0.7"]


def test_unkept_epochs_train_but_are_neither_kept_nor_seen_by_the_rule(tmp_path):
    """train_unet's frozen-encoder epochs: epoch 0 has the lowest loss and is still not kept;
    the run lasts the unkept epochs plus the rule's limit, and the summary counts every
    epoch run; the hook runs before each epoch."""
    hooked = []
    best, weight, summary, training, plateau = run(
        tmp_path, [0.9, 0.8, 0.7], [0.1, 0.5, 0.6], max_epochs=2, unkept_epochs=1, before_epoch=hooked.append
    )
    assert best == {"epoch": 1, "val_loss": 0.5} and weight == 1
    assert training.trained == hooked == [0, 1, 2]
    assert plateau.history == [0.5, 0.6] and summary["plateau"]["epochs"] == 3
    assert summary["plateau"]["rule"].endswith("(at most 2 epochs)")


def test_without_validation_the_training_loss_decides_or_the_last_epoch_is_kept(tmp_path):
    best, weight, summary, _, plateau = run(tmp_path / "lowest", [0.9, 0.5, 0.7])
    assert best == {"epoch": 1, "val_loss": 0.5} and weight == 1 and plateau.history == [0.9, 0.5, 0.7]
    assert "val" not in summary
    best, weight, summary, _, plateau = run(tmp_path / "last", [0.9, 0.5, 0.7], last_without_validation=True)
    assert best["epoch"] == 2 and math.isnan(best["val_loss"]) and weight == 2
    assert plateau.history == [0.9, 0.5, 0.7]  # the training loss still drives the rule and the scheduler


def test_fit_stops_at_the_plateau_and_says_so(tmp_path):
    best, _, summary, training, _ = run(tmp_path, [1.0] * 6, [1.0, 0.9, 0.95, 0.9, 0.8, 0.7], patience=1)
    assert training.trained == [0, 1, 2] and best["epoch"] == 1
    assert summary["plateau"]["met"] is True and summary["plateau"]["epochs"] == 3


def test_a_run_killed_after_it_stopped_trains_no_more_and_reports_the_same(tmp_path, monkeypatch):
    """A kill between the last checkpoint (stopped) and the end: the rerun trains nothing,
    keeps the same epoch and reports the epochs the run had."""
    monkeypatch.setenv("PNEUMO_CHECKPOINT_SECONDS", "0")
    monkeypatch.setattr(checkpoints.Checkpoint, "finish", lambda self: None)  # killed before the marker
    first = run(tmp_path, [1.0] * 6, [1.0, 0.9, 0.95, 0.9], patience=1)
    again = run(tmp_path, [1.0] * 6, [1.0, 0.9, 0.95, 0.9], patience=1)
    assert again[3].trained == [] and again[0] == first[0] and again[1] == 1
    assert again[2]["plateau"] == first[2]["plateau"] and again[2]["plateau"]["epochs"] == 3


def test_train_and_save_loads_the_kept_weights_and_saves_once(tmp_path):
    training = Scripted([0.9, 0.5, 0.7])
    saved = []
    best, last = loop.train_and_save(
        training,
        None,
        lambda kept: saved.append((kept, training.model.weight.item())),
        checkpoint=training.checkpoint(tmp_path / "c.pt", {}, True),
        plateau=loop.Plateau(10, 0.02, 3),
        live_dir=tmp_path / "live",
    )
    assert saved == [({"epoch": 1, "val_loss": 0.5}, 1.0)] and best["epoch"] == 1
    assert last == {"train_loss": 0.7}


def test_no_task_module_runs_an_epoch_loop_of_its_own():
    """Every training stage runs `loop.fit` (through `train_and_save`): no task loops over
    epochs, restores a checkpoint or opens the dvclive logger itself."""
    found = []
    for path in sorted((ROOT / "src" / "pneumo" / "tasks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            loops_epochs = isinstance(node, ast.For) and "epoch" in ast.unparse(node.target)
            loops_epochs = loops_epochs and ast.unparse(node.iter).startswith("range(")  # not reading curves by epoch
            calls = isinstance(node, ast.Call) and ast.unparse(node.func).endswith((".restore", "live", "loop.fit"))
            if loops_epochs or calls:
                found.append(f"{path.name}:{node.lineno}")
    assert found == []
