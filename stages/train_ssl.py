"""DVC stage `train_ssl@ssl-<run>`: the `ssl` initialisation of one run, the U-Net's ResNet34 encoder
pretrained self-supervised (VICReg, lightly) on the unlabeled CXR-14 training films, seeded by
the run. Written twice: where every encoder lies, and in models/ssl/ for cluster_latents."""

import argparse
import shutil
from pathlib import Path

from pneumo import params
from pneumo.core import dist, runtime
from pneumo.progress import log_to_stderr
from pneumo.tasks.train_ssl import train_ssl


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of `runs`)")
    parser.add_argument("--images", type=Path, required=True, help="prepared CXR-14 folder")
    parser.add_argument("--out", type=Path, required=True, help="encoder checkpoint to write")
    parser.add_argument("--copy", type=Path, required=True, help="the same encoder again, for cluster_latents")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
    parser.add_argument("--checkpoint", type=Path, required=True, help="epoch checkpoint to resume from / write")
    args = parser.parse_args(argv)
    log_to_stderr()

    p = params.load()
    rt = runtime.from_params(p, args.seed)
    # which initialisations the stage makes is the pipeline's business (dvc.yaml), not the training's
    settings = {k: v for k, v in p["train_ssl"].items() if k != "initialisations"}
    train_ssl(
        images_dir=args.images,
        out_path=args.out,
        live_dir=args.live,
        checkpoint_path=args.checkpoint,
        seed=args.seed,
        resume=rt.resume,
        rt=rt,
        params=settings,
        **settings,
    )
    if dist.is_main():
        args.copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out, args.copy)


if __name__ == "__main__":
    main()
