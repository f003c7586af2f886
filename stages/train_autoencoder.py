"""DVC stage `train_autoencoder`: an autoencoder on the prepared CXR-14 images (labels never
read); saves the model, its encoder (for the `autoencoder` U-Net variant), per-epoch losses
and a reconstruction grid."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.autoencoder import train_autoencoder

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--images", type=Path, required=True, help="prepared CXR-14 folder")
parser.add_argument("--model", type=Path, required=True, help="autoencoder checkpoint to write")
parser.add_argument("--encoder", type=Path, required=True, help="its encoder's checkpoint to write")
parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
parser.add_argument("--checkpoint", type=Path, required=True, help="epoch checkpoint to resume from / write")
parser.add_argument("--reconstructions", type=Path, required=True, help="PNG grid: inputs over reconstructions")
args = parser.parse_args()

p = params.load()
stage = p["train_autoencoder"]
params.seed_everything(p["seed"], p["deterministic"])
train_autoencoder(
    images_dir=args.images,
    model_path=args.model,
    encoder_path=args.encoder,
    live_dir=args.live,
    checkpoint_path=args.checkpoint,
    reconstructions=args.reconstructions,
    seed=p["seed"],
    resume=p["resume"],
    rt=params.runtime(p),
    params=stage,
    **stage,
)
