"""DVC stage `predict_test`: a SIIM submission CSV (+ overlays) for the DICOMs under
`predict_test.input_dir`, from the variant with the best validation SIIM Dice."""

import argparse
import json
import logging
import sys
from pathlib import Path

from pneumo import params
from pneumo.tasks.predict_test import PredictError, predict

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--input", type=Path, required=True, help="folder of test DICOMs")
parser.add_argument("--evaluations", type=Path, required=True, help="folder of evaluate's <variant>-<run>.json")
parser.add_argument("--models", type=Path, required=True, help="folder of the <variant>-<run> model folders")
parser.add_argument("--out", type=Path, required=True, help="output folder")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

p = params.load()
runs = [f"{v}-{r}" for v in p["train_unet"]["variants"] for r in p["runs"]]
# chosen on validation, never on test
best = max(runs, key=lambda r: json.loads((args.evaluations / f"{r}.json").read_text())["val"]["siim_dice"])
print(f"best variant by validation SIIM Dice: {best}")
try:
    done, errors = predict(
        model_dir=args.models / best,
        inputs=[args.input],
        out_csv=args.out / "submission.csv",
        overlays_dir=args.out / "overlays",
        batch_size=p["predict_test"]["batch_size"],
        device=p["device"],
    )
except PredictError as e:
    sys.exit(f"predict_test: {e}")
(args.out / "chosen_model.json").write_text(json.dumps({"model": str(args.models / best), "images": done}) + "\n")
if errors and p["data"]["strict"]:
    sys.exit(f"{len(errors)} unreadable test file(s) (data.strict=true); see {args.out / 'submission.csv.errors.csv'}")
