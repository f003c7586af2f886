"""DVC stage `report`: the ablation table (variant x metric, mean ± std over seeds, the
all-empty prediction as a row) as metrics/ablation.json and metrics/ablation.md."""

import argparse
from pathlib import Path

from pneumo import params
from pneumo.report import report

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--results", type=Path, required=True, help="folder of evaluate's <variant>-<seed>.json files")
parser.add_argument("--json", type=Path, required=True, help="ablation JSON to write")
parser.add_argument("--md", type=Path, required=True, help="ablation Markdown table to write")
args = parser.parse_args()

unet = params.load()["train_unet"]
# only the runs the current params define (a removed seed's old file is not read)
results = [args.results / f"{v}-{s}.json" for v in unet["variants"] for s in unet["seeds"]]
print(report(results=results, json_path=args.json, md_path=args.md))
