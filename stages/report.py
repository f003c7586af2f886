"""DVC stage `report`: the ablation table with 95% stratified, paired bootstrap intervals
(variants x metrics, the content-free baselines beside them, differences from `none` and
from the best baseline) as metrics/ablation.json and metrics/ablation.md, and the headline
numbers (the only DVC metrics file) as metrics/headline.json."""

import argparse
import logging
from pathlib import Path

from pneumo import params
from pneumo.tasks.report import report

BASELINES = ("all_empty", "location_prior")  # content-free: they never see an image

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--results", type=Path, required=True, help="folder of evaluate's <variant>-<seed>/ folders")
parser.add_argument("--baselines", type=Path, required=True, help="folder of the baselines' <name>/ folders")
parser.add_argument("--pseudo-labels", type=Path, required=True, help="cluster_latents' metrics JSON (NMI)")
parser.add_argument("--json", type=Path, required=True, help="ablation JSON to write (every interval)")
parser.add_argument("--md", type=Path, required=True, help="ablation Markdown report to write")
parser.add_argument("--headline", type=Path, required=True, help="headline metrics JSON to write (DVC metrics)")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

p = params.load()
unet = p["train_unet"]
# only the runs the current params define (a removed seed's old folder is not read)
runs = {v: [args.results / f"{v}-{s}" / "per_image.csv" for s in unet["seeds"]] for v in unet["variants"]}
report(
    runs=runs,
    baselines={name: args.baselines / name / "per_image.csv" for name in BASELINES},
    resamples=p["report"]["resamples"],
    seed=p["seed"],
    json_path=args.json,
    md_path=args.md,
    headline_path=args.headline,
    clustering_path=args.pseudo_labels,
)
