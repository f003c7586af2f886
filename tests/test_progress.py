"""Progress reaches the logs when no terminal is attached (queued experiments, batch jobs):
long loops report along the way, and every training epoch leaves one line."""

import logging

import pytest

from pneumo.core import loop
from pneumo.progress import progress


def test_progress_logs_lines_without_a_terminal_and_passes_items_through(caplog):
    caplog.set_level(logging.INFO, logger="pneumo.progress")
    seen = list(progress(range(5), "evaluate: test split", status=lambda: "loss 0.5000", every=0))
    assert seen == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("evaluate: test split: 1/5 batches (") and lines[0].endswith("s, loss 0.5000)")
    assert len(lines) == 5 and lines[-1].startswith("evaluate: test split: 5 batches in ")


def test_a_short_loop_stays_quiet(caplog):
    caplog.set_level(logging.INFO, logger="pneumo.progress")
    assert list(progress([1, 2], "validation")) == [1, 2]
    assert not caplog.records


@pytest.mark.parametrize("start", [0, 2])
def test_every_epoch_leaves_one_line_with_its_values_and_seconds(tmp_path, caplog, start):
    caplog.set_level(logging.INFO, logger="pneumo.core.loop")
    with loop.live(tmp_path / "none-0", start) as live:
        for epoch in range(start, 4):
            live.log_metric("train/loss", 1 / (epoch + 1))
            live.log_metric("val/siim_dice", 0.5 + epoch / 10)
            live.next_step()
        live.summary["selected"] = {"epoch": 3}
    lines = [r.getMessage() for r in caplog.records if r.name == "pneumo.core.loop"]
    assert [line.split(":")[0] for line in lines] == [f"none-0 epoch {e}" for e in range(start, 4)]
    assert "train/loss 0.2500 val/siim_dice 0.8000 (" in lines[-1] and lines[-1].endswith(" s)")
    tsv = (tmp_path / "none-0" / "plots" / "metrics" / "val" / "siim_dice.tsv").read_text().splitlines()
    assert len(tsv) == 1 + 4 - start  # dvclive still gets every value
    assert '"selected": {' in (tmp_path / "none-0" / "metrics.json").read_text()
