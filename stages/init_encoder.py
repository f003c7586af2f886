"""DVC stage `init_encoder`: the encoder of the `none` initialisation (seeded random
weights, no pretraining), written like every other initialisation's encoder."""

import argparse
import logging
from pathlib import Path

from pneumo import params
from pneumo.core import runtime
from pneumo.tasks.init_encoder import init_encoder

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", type=Path, required=True, help="encoder checkpoint to write")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

runtime.seed_everything(params.load()["seed"])
init_encoder(out_path=args.out)
