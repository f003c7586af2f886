"""Progress that reaches the logs: a tqdm bar when a person watches a terminal, else a log
line every `every` seconds and one at the end, so `dvc queue logs`, `dvc exp run` in the
background and batch-job logs show how far a long loop has got. Under torchrun only the
main process reports. Also the one logging setup of every stage (`log_to_stderr`: timed
lines). Beside the layers (like `pneumo.params`), so the prepare stages use it without
importing torch."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("pneumo.progress")
EVERY_SECONDS = 30.0
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"  # e.g. 2026-12-01 10:31:35 pneumo.core.loop: none-0 epoch 3: ...


def log_to_stderr() -> None:
    """Every stage's logging: INFO and up to stderr, each line with its date and time."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")


def progress(
    items: Iterable[T],
    desc: str,
    total: int | None = None,
    unit: str = "batches",
    status: Callable[[], str] | None = None,
    every: float = EVERY_SECONDS,
) -> Iterator[T]:
    """Yield `items`, reporting progress as `desc`. `status()` (e.g. the running loss) is
    called only when a line or the bar is drawn, so a GPU is not synchronised per step."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if int(os.environ.get("RANK", "0")) != 0:  # a torchrun process other than the main one
        yield from items
        return
    if sys.stderr.isatty():
        bar = tqdm(items, desc=desc, total=total, unit=unit[:-1] if unit.endswith("s") else unit, leave=False)
        for done, item in enumerate(bar, 1):
            yield item
            if status and (done == total or done % 10 == 0):
                bar.set_postfix_str(status())
        return
    start = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= every and done != total:
            extra = f", {status()}" if status else ""
            log.info(f"{desc}: {done}/{total if total is not None else '?'} {unit} ({now - start:.0f} s{extra})")
            last = now
    if last > start:  # a loop that reported along the way also reports its end
        log.info(f"{desc}: {done} {unit} in {time.perf_counter() - start:.0f} s")
