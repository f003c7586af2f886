"""Multi-process training under `torchrun`: one process per GPU (NCCL), or per CPU share
(gloo), with DistributedDataParallel, on one node or several (pneumo.launch). `nproc` is
a hardware knob, not a new experiment: `batch_size` stays the global batch, every process
draws the same sample order and the same augmentation numbers and keeps its own slice of
each global batch, and the loss is
computed on the gathered global batch (`gather_for_loss`), so a run on N processes takes
the steps of a single-process run. What still differs: batch-norm statistics come from
each process's slice (their running averages are averaged after every epoch; SyncBatchNorm
has no CPU kernel), and float sums run in another order. Without torchrun (WORLD_SIZE
unset) every function here is a no-op."""

from __future__ import annotations

import atexit
import logging
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Only this process writes files, logs and prints progress."""
    return rank() == 0


def start(device: torch.device) -> torch.device:
    """Join torchrun's process group when launched by it with several processes; returns
    this process's device (cuda:LOCAL_RANK on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            per_node = os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
            raise RuntimeError(f"{per_node} processes on this node but {torch.cuda.device_count()} GPU(s)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(stop)
    if is_main():
        nodes = world() // int(os.environ.get("LOCAL_WORLD_SIZE", world()))
        where = f" on {nodes} nodes" if nodes > 1 else ""
        backend = dist.get_backend()
        log.info(f"DistributedDataParallel: {world()} processes, backend {backend}, device {device.type}{where}")
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.barrier()  # the main process finishes writing before the others leave
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when there are several processes. DDP registers
    the parameters that require grad when it is built: rebuild it after freezing/unfreezing."""
    if world() == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False
    )


def local_rows(global_batch: int) -> slice:
    """The rows of a global batch that this process holds."""
    size = global_batch // world()
    return slice(rank() * size, (rank() + 1) * size)


class Shard(Sampler[int]):
    """This process's slice of each global batch drawn from `order` (any sampler, drawn
    identically on every process: same seed). Training (`drop_last`) keeps complete batches
    only; evaluation pads the last batch with its last index so that every process runs
    the same number of batches (`gather` drops the padding).

    torch's DistributedSampler deals the indices out round-robin from its own shuffle, so
    the global batches differ from a single-process run's and it cannot wrap the
    positive-share sampler; sharding batch by batch keeps both."""

    def __init__(self, order: Sampler, batch_size: int, drop_last: bool):
        if batch_size % world():
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world()} processes (nproc)")
        self.order, self.batch_size, self.drop_last = order, batch_size, drop_last

    def __iter__(self):
        rows, chunk = local_rows(self.batch_size), []
        for i in self.order:
            chunk.append(i)
            if len(chunk) == self.batch_size:
                yield from chunk[rows]
                chunk = []
        if chunk and not self.drop_last:
            if world() > 1:
                chunk += chunk[-1:] * (self.batch_size - len(chunk))
            yield from chunk[rows] if world() > 1 else chunk

    def __len__(self) -> int:
        n = len(self.order)
        full, rest = divmod(n, self.batch_size)
        if self.drop_last:
            return full * self.batch_size // world()
        return (full + (rest > 0)) * self.batch_size // world() if world() > 1 else n


def gather(batch: torch.Tensor) -> torch.Tensor:
    """Every process's slice of a global batch, concatenated in order (on every process)."""
    if world() == 1:
        return batch
    parts = [torch.empty_like(batch) for _ in range(world())]
    dist.all_gather(parts, batch.contiguous())
    return torch.cat(parts)


class _GatherForLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, batch: torch.Tensor) -> torch.Tensor:
        return gather(batch)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process computed the same loss from the gathered batch
        return grad[local_rows(grad.shape[0])]


def gather_for_loss(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch's outputs (differentiable) and targets on every process, so that a
    loss over the batch (Dice sums over all its pixels) is the single-process loss. Each
    process's backward then sends N times its share of the gradient, which DDP's average
    over the N processes turns back into exactly the single-process gradient."""
    if world() == 1:
        return outputs, targets
    return _GatherForLoss.apply(outputs), gather(targets)


def reduce_sum(*values: float | torch.Tensor, device: torch.device) -> list[float]:
    """Sums over processes (e.g. loss total and sample count for an epoch mean)."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).detach() for v in values])
    if world() > 1:
        dist.all_reduce(t)
    return t.tolist()


def sync_buffers(model: nn.Module) -> None:
    """Average the batch-norm running statistics over the processes, so that validation and
    the saved weights are one model everywhere. Each process updated them with its own
    slices (DDP built with broadcast_buffers=False): as running means are linear in the
    batch means, their average is what one process would have tracked on the whole batches."""
    if world() == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world()
