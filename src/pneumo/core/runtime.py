"""Where and how models run: the device, bf16 autocast, channels_last, torch.compile,
loader workers; joining torchrun's process group; seeding.

Two kinds of settings. What can change a result, even by float rounding (device, amp,
channels_last, compile, nproc, deterministic), is a param in params.yaml, declared in
dvc.yaml, so changing it reruns the stages it affects. What only changes speed or restart
behaviour is read from the environment by `local_settings()`, so setting it never
invalidates a trained model:

    PNEUMO_LOADER_WORKERS   DataLoader worker processes per training process (default 0)
    PNEUMO_PIN_MEMORY       page-locked host batches on CUDA, 0 or 1 (default 1)
    PNEUMO_RESUME           resume a killed training stage from its epoch checkpoint, 0 or 1 (default 1)
    PNEUMO_CHECKPOINT_SECONDS  write the epoch checkpoint after an epoch once this many seconds have
                            passed since the last one (default 60; 0 = after every epoch)
    CUDA_VISIBLE_DEVICES    which GPU(s) a run uses (CUDA's own variable; `device` says only cpu/cuda)
    PNEUMO_DECODE_WORKERS   decoding processes of the prepare stages (formats.prepared.decode_workers)

Where the training processes run (one node or several) is set by `pneumo.launch`'s
variables (PNEUMO_NNODES, PNEUMO_RDZV_ENDPOINT, ...), also result-neutral.
"""

from __future__ import annotations

import logging
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pneumo.core import dist

log = logging.getLogger(__name__)


def cuda_problem() -> str | None:
    """Why CUDA cannot be used in this process (one line), or None when it can: a CPU-only
    torch build, no GPU or driver, or a driver older than the CUDA this torch was built for."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
        reason = "no GPU visible (CUDA_VISIBLE_DEVICES?)"
    except Exception as e:  # torch's own reason: no driver, driver too old, no device
        reason = " ".join(str(e).split()).split(". ")[0]
        reason = reason[:1].lower() + reason[1:]
    return f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, but {reason}"


def device_from(name: str = "auto") -> torch.device:
    """The device a param names: `auto` is CUDA when usable, else the CPU with a warning that
    says why; `cuda` (or `cuda:N`) where CUDA is unusable is an error that says why, never a
    silent CPU run. Logs the device (with the GPU's name)."""
    if name == "auto" or name.startswith("cuda"):
        problem = cuda_problem()
        if problem and name != "auto":
            raise RuntimeError(f"device {name!r}: CUDA is unusable here: {problem}")
        if problem:
            log.warning(f"device auto: running on the CPU ({problem})")
        name = "cpu" if problem else "cuda" if name == "auto" else name
    device = torch.device(name)
    log.info(f"device: {describe(device)}")
    return device


def describe(device: torch.device) -> str:
    """`cuda:0 (NVIDIA H200)` or `cpu (2 threads, bf16 units)`."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    units = ", bf16 units" if native_cpu_bf16() else ""
    return f"cpu ({torch.get_num_threads()} threads{units})"


@dataclass(frozen=True)
class Runtime:
    """Where and how models run. `amp` (bf16 autocast) and `channels_last` change float
    rounding only; `workers` and `pin_memory` change nothing but speed."""

    device: torch.device
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    pin_memory: bool = False
    resume: bool = True  # continue from a stage's epoch checkpoint (PNEUMO_RESUME)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move the model to the device (channels_last if set); the model itself, whose
        state_dict is what gets saved."""
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        return model.to(self.device, memory_format=fmt)

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training step calls: DDP across processes, then torch.compile if set."""
        step = dist.wrap(model, self.device)
        return torch.compile(step) if self.compile else step


@dataclass(frozen=True)
class LocalSettings:
    """Result-neutral settings of this machine (see the module docstring)."""

    loader_workers: int = 0
    pin_memory: bool = True
    resume: bool = True
    checkpoint_seconds: int = 60


def local_settings(env: dict[str, str] | None = None) -> LocalSettings:
    """The result-neutral settings from the environment; a malformed value is an error
    naming the variable."""
    env = os.environ if env is None else env
    values = {}
    for field, kind in (("loader_workers", int), ("pin_memory", bool), ("resume", bool), ("checkpoint_seconds", int)):
        name = f"PNEUMO_{field.upper()}"
        if name not in env:
            continue
        text = env[name].strip()
        if kind is bool and text not in ("0", "1"):
            raise ValueError(f"{name}={text!r}: expected 0 or 1")
        if kind is int and not text.isdigit():
            raise ValueError(f"{name}={text!r}: expected a whole number >= 0")
        values[field] = kind(int(text))
    return LocalSettings(**values)


def start(
    device: str = "auto",
    *,
    amp: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    local: LocalSettings | None = None,
) -> Runtime:
    """Start the runtime of a training process: joins torchrun's process group when the
    stage was launched with nproc > 1 (call once per process, before building loaders).
    `amp` (bf16 autocast) takes effect on CUDA and on CPUs with native bf16 units (AVX-512
    BF16, AMX; 1.5-2x faster training here, benchmarks/README.md), where emulating it would be
    slower than fp32: elsewhere the run stays fp32, and each training stage records which
    precision it used. `channels_last` and pinned memory take effect on CUDA only."""
    local = local or LocalSettings()
    dev = dist.start(device_from(device))
    cuda = dev.type == "cuda"
    amp = amp and (cuda or native_cpu_bf16())
    rt = Runtime(
        dev, amp, channels_last and cuda, compile, local.loader_workers, local.pin_memory and cuda, local.resume
    )
    if dist.is_main():
        processes = dist.world()
        log.info(
            f"runtime: {describe(dev)}, {processes} process{'es' if processes > 1 else ''}, "
            f"{'bf16 autocast' if amp else 'fp32'}, {rt.workers} loader workers per process"
        )
    return rt


PARAMS = ("device", "deterministic", "amp", "channels_last", "compile")  # what `from_params` reads


def from_params(p: dict, seed: int) -> Runtime:
    """The runtime of a training stage: everything seeded by the stage's run, started with
    the top-level params `PARAMS` of params.yaml `p` and this machine's result-neutral
    settings from the environment (`local_settings`)."""
    seed_everything(seed, p["deterministic"])
    return start(
        p["device"], amp=p["amp"], channels_last=p["channels_last"], compile=p["compile"], local=local_settings()
    )


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (oneDNN's own check)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one number; with `deterministic`,
    ask torch for deterministic kernels (on CUDA: no cuDNN autotuning, fixed cuBLAS
    workspace; ops without a deterministic kernel warn instead of failing)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
