"""DVC stage `train_unet@<variant>-<run>`: fine-tune a U-Net (ResNet34 encoder) on the
prepared SIIM data from one run's encoder initialisation until its validation loss plateaus;
keeps the epoch with the lowest validation loss."""

import argparse
import logging
from pathlib import Path

from pneumo import params
from pneumo.core import runtime
from pneumo.tasks.train_unet import train_unet

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--variant", required=True, help="encoder initialisation name")
parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of `runs`)")
parser.add_argument("--encoder", type=Path, required=True, help="encoder checkpoint to start from")
parser.add_argument("--siim", type=Path, required=True, help="prepared SIIM folder")
parser.add_argument("--out", type=Path, required=True, help="U-Net checkpoint to write")
parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
parser.add_argument("--checkpoint", type=Path, required=True, help="epoch checkpoint to resume from / write")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

p = params.load()
stage = {k: v for k, v in p["train_unet"].items() if k != "variants"}
local = runtime.local_settings()  # speed and restart knobs from the environment, not params
runtime.seed_everything(args.seed, p["deterministic"])
best = train_unet(
    variant=args.variant,
    encoder_path=args.encoder,
    siim_dir=args.siim,
    out_path=args.out,
    live_dir=args.live,
    checkpoint_path=args.checkpoint,
    seed=args.seed,
    resume=local.resume,
    rt=runtime.start(p["device"], amp=p["amp"], channels_last=p["channels_last"], compile=p["compile"], local=local),
    params={**stage, "seed": args.seed},
    **stage,
)
print(f"selected epoch {best['epoch']}: validation loss {best['val_loss']:.4f}")
