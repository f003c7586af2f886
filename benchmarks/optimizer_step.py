"""Adam's step, torch's default CPU implementation (a loop over the weights, one kernel per
operation) against its fused kernel (`loop.adam`), for the U-Net: the optimiser step alone,
and a whole training step (forward, backward, step) at the CPU default's size, batch and
precision. Paired: the two alternate, `--repeats` times each; medians and their ratio.
Prints one JSON line per measurement.

    python benchmarks/optimizer_step.py --size 64 --batch 16 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pneumo.core import models, runtime

KINDS = {"default": {}, "fused": {"fused": True}}


def timed(fn, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - started) / steps * 1e3  # ms per step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rt = runtime.start("cpu", amp=True)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, args.size, args.size)
    y = (torch.rand(args.batch, 1, args.size, args.size) < 0.05).float()
    setups = {}
    for kind, options in KINDS.items():
        model = models.build_unet(1)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, **options)

        def train_step(model=model, optimizer=optimizer):
            with rt.autocast():
                out = model(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        train_step()  # grads and optimiser state exist from here on
        setups[kind] = {"optimizer step": optimizer.step, "training step": train_step}
    for what in ("optimizer step", "training step"):
        times = {kind: [] for kind in KINDS}
        for _ in range(args.repeats):
            for kind in KINDS:
                times[kind].append(timed(setups[kind][what], args.steps))
        medians = {kind: statistics.median(t) for kind, t in times.items()}
        print(
            json.dumps(
                {
                    "measure": what,
                    "size": args.size,
                    "batch": args.batch,
                    "precision": "bf16" if rt.amp else "fp32",
                    **{f"{kind}_ms": round(m, 1) for kind, m in medians.items()},
                    "default_over_fused": round(medians["default"] / medians["fused"], 2),
                }
            )
        )


if __name__ == "__main__":
    main()
