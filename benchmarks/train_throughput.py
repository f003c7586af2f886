"""Benchmark (not a test): images/s of the U-Net training step (ResNet34 encoder, Dice + BCE,
Adam) fed by the real input pipeline against the same step on ready-made tensors.

`data`: prepared uint8 memmaps -> DataLoader (positive-share sampler) -> to_input and
augmentation on the device, exactly what `train_unet` runs. `model_only`: one such batch,
already on the device, reused for every step. ratio = data / model_only images/s: the
share of the step's speed the input pipeline leaves (1.0 = it costs nothing). The images
are the real SIIM samples of ../shared/realdata, replicated and prepared at each size.
Each figure is the best of `--repeats` timed runs.

Also `activation_memory`: bytes the training step keeps for backward, per image (fp32, and
bf16 autocast when --amp on is measured): what decides the batch a GPU can hold at 512 px.

Prints one JSON line per measurement.
Usage: python benchmarks/train_throughput.py [--device cpu] [--sizes 128 256 512]
       [--amp off on] [--channels-last off on] [--steps 6] [--batch 8] [--workers 0]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import REALDATA, emit, replicate_siim

from pneumo.core import data, loop, models, runtime, validation
from pneumo.formats import prepared
from pneumo.tasks import prepare_siim, train_unet

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--realdata", type=Path, default=REALDATA)
parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
parser.add_argument("--amp", nargs="+", default=["off", "on"], choices=["off", "on"], help="bf16 autocast")
parser.add_argument("--channels-last", nargs="+", default=["off", "on"], choices=["off", "on"])
parser.add_argument(
    "--full-grid-sizes",
    type=int,
    nargs="*",
    default=None,
    help="sizes that get every amp x channels_last combination (default: all); others fp32 only",
)
parser.add_argument("--compile", action="store_true", help="torch.compile the step (compile time excluded)")
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
parser.add_argument("--repeats", type=int, default=2)
parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
parser.add_argument("--copies", type=int, default=4, help="replicas of the 10 real DICOMs")
parser.add_argument("--memory-only", action="store_true", help="only activation memory and FLOPs per image")
args = parser.parse_args()
device = runtime.device_from(args.device)


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def activation_bytes_per_image(size: int, rt: runtime.Runtime) -> float:
    """Bytes of the tensors autograd keeps for backward, per image: the growth from a batch
    of 2 to a batch of 4 (so weights and autocast's bf16 copies of them are left out)."""
    model = rt.prepare(models.build_unet(1)).train()

    def saved(batch: int) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), rt.autocast():
            model(rt.inputs(torch.randn(batch, 1, size, size, device=device)))
        return sum(seen.values())

    return (saved(4) - saved(2)) / 2


def training_gflop_per_image(model: torch.nn.Module, size: int) -> float:
    """Forward + backward FLOPs of one image (torch's FLOP counter; 1 multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = model(torch.randn(1, 1, size, size))
        (out[0] if isinstance(out, tuple) else out).float().sum().backward()
    return counter.get_total_flops() / 1e9


def measure(size: int, amp: bool, channels_last: bool, images, masks, rows) -> None:
    """model_only and data throughput of the U-Net training step at one setting."""
    rt = runtime.Runtime(device, amp=amp, channels_last=channels_last, compile=args.compile, workers=args.workers,
                       pin_memory=device.type == "cuda")  # fmt: skip
    torch.manual_seed(0)
    model = rt.prepare(models.build_unet(1))
    step = rt.wrap(model)
    criterion = validation.WeightedSum(validation.PIXEL_LOSSES["bce"](), 1.0, 1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    n = args.batch * args.steps
    indices = np.resize(np.arange(len(images)), n)  # enough rows for `steps` batches
    positive = np.array([int(rows[i]["mask_pixels"]) > 0 for i in indices])
    sampler = data.positive_share_sampler(positive, 0.5, seed=0)
    feed = data.loader(data.Arrays(images, masks, indices), args.batch, order=sampler, train=True, rt=rt)
    batch_fn = train_unet.batches(rt, torch.Generator().manual_seed(0))
    ready = [batch_fn(next(iter(feed)))] * args.steps  # one real batch, already on the device

    def epoch(batches, fn) -> float:
        return timed(lambda: loop.train_one_epoch(step, criterion, optimizer, batches, fn, rt, 0))

    warmup = epoch(ready[:2], lambda b: b)  # includes compilation with --compile
    epoch(feed, batch_fn)  # warm-up of the loader path (workers start, pinned buffers)
    t_model = min(epoch(ready, lambda b: b) for _ in range(args.repeats))
    t_data = min(epoch(feed, batch_fn) for _ in range(args.repeats))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    record = dict(device=name, size=size, batch=args.batch, amp=amp, channels_last=channels_last,
                  compile=args.compile, workers=args.workers)  # fmt: skip
    emit(measure="train_step", input="model_only", **record, images_per_s=round(n / t_model, 2))
    emit(measure="train_step", input="data", **record, images_per_s=round(n / t_data, 2),
         ratio=round(t_model / t_data, 3))  # fmt: skip
    if args.compile:
        emit(measure="compile_warmup", **record, seconds=round(warmup, 1))
    if device.type == "cuda":
        emit(measure="peak_memory", **record, gib=round(torch.cuda.max_memory_allocated(device) / 2**30, 2))
        torch.cuda.reset_peak_memory_stats(device)


with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp) / "siim"
    replicate_siim(args.realdata, root, args.copies)
    for size in args.sizes:
        out = Path(tmp) / f"prepared{size}"
        prepare_siim.prepare_siim(
            root=root, rle_csv="train-rle.csv", out_dir=out, image_size=size,
            split={"train": 1.0, "val": 0.0, "test": 0.0}, seed=0, strict=True, workers=os.cpu_count() or 1,
        )  # fmt: skip
        images, masks, rows = prepared.load_prepared(out)
        full = args.full_grid_sizes is None or size in args.full_grid_sizes
        combos = [(a, c) for a in args.amp for c in args.channels_last] if full else [("off", "off")]
        for amp, channels_last in combos if not args.memory_only else []:
            measure(size, amp == "on", channels_last == "on", images, masks, rows)
        for amp in sorted({a == "on" for a in args.amp}):
            per_image = activation_bytes_per_image(size, runtime.Runtime(device, amp=amp))
            emit(measure="activation_memory", size=size, amp=amp, mib_per_image=round(per_image / 2**20, 1))
        if args.memory_only:  # the training stages' models, for the full-scale profile
            for name, model in [
                ("unet", models.build_unet(1)),
                ("classifier", models.Classifier(6)),
                (
                    "autoencoder_resnet34",
                    models.build_autoencoder("resnet34", in_channels=1, depth=5, width=16, latent=128),
                ),
            ]:
                emit(measure="train_gflop_per_image", model=name, size=size,
                     gflop=round(training_gflop_per_image(model, size), 1))  # fmt: skip
