"""DVC stage `compare_variants`: one grid of the same test films across every variant (run 0
of each): truth, then each variant's post-processed prediction."""

import argparse
import json
from pathlib import Path

from pneumo import params
from pneumo.core import runtime
from pneumo.progress import log_to_stderr
from pneumo.tasks.compare_variants import compare_variants


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True, help="folder of the <variant>-<run> model folders")
    parser.add_argument("--run", type=int, required=True, help="the run shown (one of `runs`)")
    parser.add_argument("--siim", type=Path, required=True, help="prepared SIIM folder")
    parser.add_argument("--grid", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    runtime.seed_everything(p["seed"])
    result = compare_variants(
        model_dirs={v: args.models / f"{v}-{args.run}" for v in p["train_unet"]["variants"]},
        siim_dir=args.siim,
        grid_path=args.grid,
        n_images=p["compare_variants"]["n_images"],
        seed=p["seed"],
        device=p["device"],
    )
    print(json.dumps(result["dice"]))


if __name__ == "__main__":
    main()
