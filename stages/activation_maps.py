"""DVC stage `activation_maps@<variant>` (the first run): Grad-CAM grids of a U-Net variant (and of its
pretraining head where it has one) on fixed test images, and the share of activation mass
inside the dilated ground-truth mask on positive test images."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.core import runtime
from pneumo.progress import log_to_stderr
from pneumo.tasks.activation_maps import activation_maps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, help="encoder initialisation name")
    parser.add_argument("--model-dir", type=Path, required=True, help="U-Net folder (model + postprocess.json)")
    parser.add_argument(
        "--encoder", type=Path, required=True, help="the initialisation's encoder (for its head's Grad-CAM)"
    )
    parser.add_argument(
        "--head", type=Path, required=True, help="pretraining head checkpoint (read if the initialisation has one)"
    )
    parser.add_argument("--siim", type=Path, required=True, help="prepared SIIM folder")
    parser.add_argument("--grid", type=Path, required=True, help="PNG grid to write")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    runtime.seed_everything(p["seed"])
    print(
        activation_maps(
            model_dir=args.model_dir,
            encoder_path=args.encoder,
            head_path=args.head,
            siim_dir=args.siim,
            grid_path=args.grid,
            metrics_path=args.metrics,
            variant=args.variant,
            classes=p["prepare_cxr14"]["classes"],
            seed=p["seed"],
            device=p["device"],
            **p["activation_maps"],
        )
    )


if __name__ == "__main__":
    main()
