"""DVC stage `evaluate@<variant>-<run>`: tune post-processing on validation, score the test
split with the all-empty baseline beside it, write the thresholds and a model card next to
the weights, plus ROC/PR data and test overlays."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.core import runtime
from pneumo.progress import log_to_stderr
from pneumo.tasks.evaluate import evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="folder of the U-Net checkpoint (model.safetensors)"
    )
    parser.add_argument("--siim", type=Path, required=True, help="prepared SIIM folder")
    parser.add_argument("--prepare-cxr14-metrics", type=Path, required=True, help="counts of the pretraining data")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--plots", type=Path, required=True, help="folder for roc.json, pr.json, overlays.png")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    runtime.seed_everything(p["seed"])
    evaluate(
        model_path=args.model_dir / "model.safetensors",
        postprocess_path=args.model_dir / "postprocess.json",
        card_path=args.model_dir / "MODEL_CARD.md",
        siim_dir=args.siim,
        metrics_path=args.metrics,
        plots_dir=args.plots,
        prepare_cxr14_metrics=args.prepare_cxr14_metrics,
        device=p["device"],
        **p["evaluate"],
    )


if __name__ == "__main__":
    main()
