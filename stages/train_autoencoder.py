"""DVC stage `train_autoencoder@<run>`: an autoencoder on the prepared CXR-14 images (labels never
read); saves the model, its encoder (for the `autoencoder` U-Net variant), per-epoch losses
and a reconstruction grid."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.core import runtime
from pneumo.progress import log_to_stderr
from pneumo.tasks.train_autoencoder import train_autoencoder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of `runs`)")
    parser.add_argument("--images", type=Path, required=True, help="prepared CXR-14 folder")
    parser.add_argument("--model", type=Path, required=True, help="autoencoder checkpoint to write")
    parser.add_argument("--encoder", type=Path, required=True, help="its encoder's checkpoint to write")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
    parser.add_argument("--checkpoint", type=Path, required=True, help="epoch checkpoint to resume from / write")
    parser.add_argument("--reconstructions", type=Path, required=True, help="PNG grid: inputs over reconstructions")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    rt = runtime.from_params(p, args.seed)
    train_autoencoder(
        images_dir=args.images,
        model_path=args.model,
        encoder_path=args.encoder,
        live_dir=args.live,
        checkpoint_path=args.checkpoint,
        reconstructions=args.reconstructions,
        seed=args.seed,
        resume=rt.resume,
        rt=rt,
        params=p["train_autoencoder"],
        **p["train_autoencoder"],
    )


if __name__ == "__main__":
    main()
