"""Benchmark (not a test): the post-processing grid search that `train_unet` runs on the
validation set after every epoch (and `evaluate` once), against scoring each combination
with `postprocess` + `dice_per_image` (its definition; tests/test_metrics.py checks both
give the same scores). At 512 px the validation probabilities of the real SIIM split are
~2,400 x 512 x 512 floats, so a pass over the pixels per combination costs minutes per epoch.

Prints one JSON line per measurement.
Usage: python benchmarks/postprocess.py [--images 300] [--size 256]
"""

import argparse
import itertools
import time

import numpy as np
import yaml
from common import emit

from pneumo.core import metrics

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--images", type=int, default=300)
parser.add_argument("--size", type=int, default=256)
args = parser.parse_args()

with open("params.yaml") as f:
    grid = yaml.safe_load(f)["evaluate"]
tops, bottoms = grid["tops"], grid["bottoms"]
areas = metrics.min_areas(grid["min_area_fractions"], args.size)
rng = np.random.default_rng(0)
true = rng.random((args.images, args.size, args.size)) > 0.995
probs = rng.random(true.shape).astype(np.float32)

t = time.perf_counter()
best = metrics.tune_postprocess(probs, true, tops, areas, bottoms)
fast = time.perf_counter() - t

t = time.perf_counter()
scores = [
    metrics.dice_per_image(metrics.postprocess(probs, top, area, bottom), true).mean()
    for top, area, bottom in itertools.product(tops, areas, bottoms)
    if bottom <= top
]
naive = time.perf_counter() - t
assert max(scores) == best["score"]
record = dict(images=args.images, size=args.size, combinations=len(scores))
emit(measure="tune_postprocess", **record, seconds=round(fast, 3))
emit(measure="postprocess_then_dice_per_combination", **record, seconds=round(naive, 3), ratio=round(naive / fast, 1))
