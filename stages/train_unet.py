"""DVC stage `train_unet@<share>-<variant>-<run>`: fine-tune a U-Net (ResNet34 encoder) on
`share` percent of the prepared SIIM training films from one run's encoder initialisation
until its validation loss plateaus; keeps the epoch with the lowest validation loss."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.core import runtime
from pneumo.progress import log_to_stderr
from pneumo.tasks.train_unet import train_unet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--share", type=int, required=True, help="percent of the training films (one of `shares`)")
    parser.add_argument("--variant", required=True, help="encoder initialisation name")
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of `runs`)")
    parser.add_argument("--encoder", type=Path, required=True, help="encoder checkpoint to start from")
    parser.add_argument("--siim", type=Path, required=True, help="prepared SIIM folder")
    parser.add_argument("--out", type=Path, required=True, help="U-Net checkpoint to write")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
    parser.add_argument("--checkpoint", type=Path, required=True, help="epoch checkpoint to resume from / write")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    rt = runtime.from_params(p, args.seed)
    # the keys dvc.yaml declares, by name (`variants` and `shares` are the matrix, not settings of one U-Net)
    stage = {
        "max_epochs": p["train_unet"]["max_epochs"],
        "patience": p["train_unet"]["patience"],
        "min_delta": p["train_unet"]["min_delta"],
        "batch_size": p["train_unet"]["batch_size"],
        "lr": p["train_unet"]["lr"],
        "pixel_loss": p["train_unet"]["pixel_loss"],
        "dice_weight": p["train_unet"]["dice_weight"],
        "pixel_weight": p["train_unet"]["pixel_weight"],
        "freeze_encoder_epochs": p["train_unet"]["freeze_encoder_epochs"],
        "positive_share": p["train_unet"]["positive_share"],
        "encoder_lr_scale": p["train_unet"]["encoder_lr_scale"],
    }
    best = train_unet(
        variant=args.variant,
        encoder_path=args.encoder,
        siim_dir=args.siim,
        out_path=args.out,
        live_dir=args.live,
        checkpoint_path=args.checkpoint,
        share=args.share,
        seed=args.seed,
        resume=rt.resume,
        rt=rt,
        params={**stage, "share": args.share, "seed": args.seed},
        **stage,
    )
    print(f"selected epoch {best['epoch']}: validation loss {best['val_loss']:.4f}")


if __name__ == "__main__":
    main()
