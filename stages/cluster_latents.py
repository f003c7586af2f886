"""DVC stage `cluster_latents`: cluster the autoencoder's pooled latents of every prepared
CXR-14 image into pseudo-labels, and validate them against the true labels (NMI, ARI,
purity) beside a raw-pixel clustering baseline."""

import argparse
import logging
from pathlib import Path

from pneumo import params
from pneumo.core import runtime
from pneumo.tasks.cluster_latents import cluster_latents

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--images", type=Path, required=True, help="prepared CXR-14 folder")
parser.add_argument("--model", type=Path, required=True, help="autoencoder checkpoint")
parser.add_argument("--out", type=Path, required=True, help="pseudo_labels.csv to write")
parser.add_argument("--metrics", type=Path, required=True, help="validation metrics JSON")
parser.add_argument("--plots", type=Path, required=True, help="folder for the projection and cluster-vs-label images")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

p = params.load()
runtime.seed_everything(p["seed"])
cluster_latents(
    images_dir=args.images,
    model_path=args.model,
    out_csv=args.out,
    metrics_path=args.metrics,
    plots_dir=args.plots,
    classes=p["prepare_cxr14"]["classes"],
    seed=p["seed"],
    device=p["device"],
    **p["cluster_latents"],
)
