"""DVC stage `linear_probe`: the frozen features of every initialisation's encoder (every run),
layer by layer, probed with a logistic regression per CXR-14 class on the `probe` split that
no encoder has seen (macro and Pneumothorax AUC) and for SIIM's pneumothorax label on the SIIM
validation films, with seed-aware intervals and each encoder's difference from `none`."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.progress import log_to_stderr
from pneumo.tasks.linear_probe import linear_probe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, required=True, help="prepared CXR-14 folder")
    parser.add_argument("--siim", type=Path, required=True, help="prepared SIIM folder (the target's probe)")
    parser.add_argument("--encoders", type=Path, required=True, help="folder of <initialisation>-<run>.safetensors")
    parser.add_argument("--out", type=Path, required=True, help="probe table (JSON) to write")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    probe = p["linear_probe"]
    linear_probe(
        images_dir=args.images,
        siim_dir=args.siim,
        encoders_dir=args.encoders,
        encoders=probe["encoders"],
        c=probe["c"],
        resamples=probe["resamples"],
        run_ids=p["runs"],
        classes=p["prepare_cxr14"]["classes"],
        seed=p["seed"],
        device=p["device"],
        out_path=args.out,
    )


if __name__ == "__main__":
    main()
