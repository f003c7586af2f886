"""DVC stage `init_encoder@<run>`: the encoder of the `none` initialisation of one run
(random weights seeded by the run, no pretraining), written like every other
initialisation's encoder."""

import argparse
from pathlib import Path

from pneumo.core import runtime
from pneumo.progress import log_to_stderr
from pneumo.tasks.init_encoder import init_encoder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of `runs`)")
    parser.add_argument("--out", type=Path, required=True, help="encoder checkpoint to write")
    args = parser.parse_args(argv)
    log_to_stderr()

    runtime.seed_everything(args.seed)
    init_encoder(out_path=args.out)


if __name__ == "__main__":
    main()
