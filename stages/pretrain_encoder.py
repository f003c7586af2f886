"""DVC stage `pretrain_encoder@<target>`: the U-Net's ResNet34 encoder pretrained on CXR-14
with the true labels (`labels`) or the pseudo-labels (`pseudo_labels`); `none` writes the
seeded random initialisation. Only encoder weights are saved."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.pretrain import pretrain_encoder

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--target", required=True, help="none | labels | pseudo_labels")
parser.add_argument("--images", type=Path, required=True, help="prepared CXR-14 folder")
parser.add_argument("--targets", type=Path, required=True, help="CSV with the targets by image_id")
parser.add_argument("--out", type=Path, required=True, help="encoder checkpoint to write")
parser.add_argument("--head", type=Path, required=True, help="classification head checkpoint to write")
parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
parser.add_argument("--checkpoint", type=Path, required=True, help="epoch checkpoint to resume from / write")
args = parser.parse_args()

p = params.load()
stage = p["pretrain_encoder"]
params.seed_everything(p["seed"], p["deterministic"])
pretrain_encoder(
    target=args.target,
    images_dir=args.images,
    targets_csv=args.targets,
    out_path=args.out,
    head_path=args.head,
    live_dir=args.live,
    checkpoint_path=args.checkpoint,
    classes=p["prepare_cxr14"]["classes"],
    seed=p["seed"],
    resume=p["resume"],
    rt=params.runtime(p),
    params=stage,
    **stage,
)
