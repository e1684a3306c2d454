"""Training across processes and machines with DistributedDataParallel, started by torchrun.

``torchrun --nproc_per_node N -m LiverUNetLib.cli train ...`` sets WORLD_SIZE, RANK and LOCAL_RANK; ``train``
then gets :class:`DistributedHooks` instead of the no-op :class:`TrainingHooks` and trains as one process
would, with the work split:

* each optimiser step's batch (``batch_size``, the global batch) is split across the processes, every
  process drawing from the same shuffled order (one order generator, seeded alike on every process) and
  taking every N-th slice of it, so an epoch sees the same slices as one process, in 1/N of the steps' work;
* gradients are averaged by DDP; batch norm is synchronised: CUDA uses torch's SyncBatchNorm, the CPU (gloo)
  :class:`GlooSyncBatchNorm` (torch's refuses CPU tensors), so its statistics are those of the whole batch,
  as in one process. The soft Dice term is each process's share of the batch, averaged;
* the generators are reseeded from (seed, network, epoch[, rank]) at each epoch, so a resumed run needs no
  random state from the other processes;
* validation Dice is computed on the held-out cases shared out among the processes and summed, so every
  process takes the same checkpoint and early-stopping decision;
* only rank 0 reports progress and writes the resume checkpoint and the model; the resume checkpoint is read
  by rank 0 and sent to the others (no shared file system needed);
* a cancel (or Ctrl-C) on any process stops every process at the next step.

CPU processes use the gloo backend (so a 2-core machine and CI can run two), CUDA processes nccl, one GPU
each (``LOCAL_RANK``).
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .errors import CancelledError, LiverUNetError
from .progress import CancelToken, ProgressCallback

T = TypeVar("T")


class Backend(str, Enum):
    GLOO = "gloo"  # CPU
    NCCL = "nccl"  # CUDA


@dataclass(frozen=True)
class Launch:
    """Where this process stands among those torchrun started."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environment(cls) -> Optional["Launch"]:
        """The torchrun launch of this process, or None for a single process (WORLD_SIZE unset or 1)."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            if world <= 1:
                return None
            return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        except (KeyError, ValueError):
            raise LiverUNetError("WORLD_SIZE is set but RANK or LOCAL_RANK is missing or not a number; start "
                                 "distributed training with torchrun --nproc_per_node N -m LiverUNetLib.cli train ...") from None


def is_writer() -> bool:
    """True in the process that reports and writes files: a single process, or rank 0 of torchrun's."""
    launch = Launch.from_environment()
    return launch is None or launch.rank == 0


class TrainingHooks:
    """One process: every hook leaves training as it is."""

    rank, world_size, writes = 0, 1, True

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def progress(self, callback: ProgressCallback) -> ProgressCallback:
        return callback

    def from_writer(self, read: Callable[[], T]) -> T:
        return read()

    def wrap(self, net: nn.Module) -> nn.Module:
        return net

    def split(self, sampler: Any, seed: int, generators: list[torch.Generator]) -> None:
        pass

    def start_epoch(self, run: int, epoch: int) -> None:
        pass

    def check_cancel(self, cancel: CancelToken) -> None:
        cancel.check()

    def validation_dice(self, score: Callable[..., float], net: nn.Module, cases: list[Any], context: int) -> float:
        """``score(net, cases, context)``: the mean validation Dice (training_checkpoints.validation_dice)."""
        return score(net, cases, context)

    def mean(self, value: float) -> float:
        return value

    def card(self) -> dict[str, Any]:
        return {}

    def finish(self) -> None:
        pass


class _SumAcrossProcesses(torch.autograd.Function):
    """All-reduce (sum) with its gradient: the gradient of a sum over processes is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch across all processes, on any backend.

    One differentiable all-reduce per layer of the per-channel count, sum and sum of squares, taken about the
    running mean (the same on every process) so the variance keeps its precision."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        channels = x.shape[1]
        precise = x.to(torch.promote_types(x.dtype, torch.float32))  # bfloat16 activations: statistics in float32
        shift = self.running_mean.detach().view(1, -1, 1, 1).to(precise.dtype) if self.running_mean is not None else 0.0
        centred = precise - shift
        count = torch.full((1,), float(x.numel() // channels), dtype=precise.dtype, device=x.device)
        totals = _SumAcrossProcesses.apply(torch.cat([centred.sum((0, 2, 3)), (centred * centred).sum((0, 2, 3)), count]))
        n = totals[-1]
        offset = totals[:channels] / n
        variance = (totals[channels : 2 * channels] / n - offset * offset).clamp_min(0.0)
        mean = offset + (shift.view(-1) if isinstance(shift, torch.Tensor) else 0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = variance * n / torch.clamp(n - 1, min=1.0)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        y = (precise - mean.view(1, -1, 1, 1)) * torch.rsqrt(variance + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y.to(x.dtype)


def synchronise_batch_norm(module: nn.Module, cuda: bool) -> nn.Module:
    """``module`` with every BatchNorm2d synchronised across processes; its parameters and buffers are the
    same objects, so an optimiser made before keeps working and the state-dict keys are unchanged."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats)
            replacement.weight, replacement.bias = child.weight, child.bias
            replacement.running_mean, replacement.running_var = child.running_mean, child.running_var
            replacement.num_batches_tracked = child.num_batches_tracked
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            synchronise_batch_norm(child, cuda)
    return module


class DistributedHooks(TrainingHooks):
    """Training as one of torchrun's processes (see the module's description)."""

    def __init__(self, device: torch.device, launch: Launch, batch_size: int) -> None:
        if batch_size < launch.world_size:
            raise LiverUNetError(f"A batch of {batch_size} cannot be split across {launch.world_size} processes; "
                                 f"use --batch-size {launch.world_size} or more (the batch is the global one).")
        if device.type == "cuda":
            device = torch.device("cuda", launch.local_rank)
            torch.cuda.set_device(device)
            backend = Backend.NCCL
        elif device.type == "cpu":
            backend = Backend.GLOO
        else:
            raise LiverUNetError(f"Distributed training runs on CUDA or the CPU, not {device.type}; use --device cpu.")
        super().__init__(device)
        self.rank, self.world_size, self.writes = launch.rank, launch.world_size, launch.rank == 0
        self.backend = backend
        if not dist.is_initialized():  # a caller's own group is used as it is, and left to the caller
            dist.init_process_group(backend.value)
            _mark_opened_by_training(True)
        self._order: Optional[torch.Generator] = None
        self._generators: list[torch.Generator] = []
        self._seed = 0

    def progress(self, callback: ProgressCallback) -> ProgressCallback:
        return callback if self.writes else (lambda _event: None)

    def from_writer(self, read: Callable[[], T]) -> T:
        box = [read() if self.writes else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, net: nn.Module) -> nn.Module:
        synchronise_batch_norm(net, self.device.type == "cuda")
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(net, device_ids=ids)

    def split(self, sampler: Any, seed: int, generators: list[torch.Generator]) -> None:
        self._seed, self._generators = seed, generators
        self._order = torch.Generator().manual_seed(seed)
        sampler.share(self.rank, self.world_size, self._order)

    def start_epoch(self, run: int, epoch: int) -> None:
        base = (self._seed * 1_000_003 + run * 10_007 + epoch) * 64
        if self._order is not None:
            self._order.manual_seed(base)  # the same order on every process
        for generator in self._generators:
            generator.manual_seed(base + 1 + self.rank)  # crops and augmentation differ per process

    def check_cancel(self, cancel: CancelToken) -> None:
        flag = torch.tensor([1.0 if cancel.cancelled else 0.0], device=self._collective_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            raise CancelledError()

    def validation_dice(self, score: Callable[..., float], net: nn.Module, cases: list[Any], context: int) -> float:
        scores = torch.zeros(max(1, len(cases)), dtype=torch.float64, device=self._collective_device())
        for index in range(self.rank, len(cases), self.world_size):
            scores[index] = score(net, [cases[index]], context)
        dist.all_reduce(scores)
        return float(scores[: len(cases)].mean()) if cases else 0.0

    def mean(self, value: float) -> float:
        total = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(total)
        return float(total.item() / self.world_size)

    def card(self) -> dict[str, Any]:
        return {"distributed": {"processes": self.world_size, "backend": self.backend.value,
                                "batch_norm": "synchronised across processes"}}

    def finish(self) -> None:
        """Wait for every process, then close the group (called once the DDP wrappers are released)."""
        dist.barrier()  # the model is written before any process reports that training finished
        close_process_group()

    def _collective_device(self) -> torch.device:
        return self.device if self.backend is Backend.NCCL else torch.device("cpu")


#: whether the open process group is training's own (a caller's group is left to the caller)
_opened_by_training = False


def _mark_opened_by_training(opened: bool) -> None:
    global _opened_by_training
    _opened_by_training = opened


def process_group_opened_by_training() -> bool:
    """True while a process group that training opened is open (only under torchrun)."""
    return _opened_by_training and dist.is_available() and dist.is_initialized()


def close_process_group() -> None:
    """Close the process group training opened, if any: after a finished run (every process passed the barrier)
    or a cancelled or failed one (no barrier: another process may have failed). gloo's worker threads free each
    finished collective's tensors, which takes the GIL, while the group's destructor joins those threads holding
    the GIL; a short sleep (which releases it) lets them finish first. A 2-process run in the test suite hung at
    exit without it (py-spy: ~ProcessGroupGloo, from a DDP reducer's deallocation, joining a thread that waited for
    the GIL in ~AsyncBarrierWork)."""
    if not process_group_opened_by_training():
        return
    _mark_opened_by_training(False)
    gc.collect()  # DDP wrappers caught in reference cycles, whose reducers hold the group
    time.sleep(0.1)
    dist.destroy_process_group()


def training_hooks(device: torch.device, batch_size: int) -> TrainingHooks:
    """The hooks for this process: distributed under torchrun (WORLD_SIZE > 1), else no-ops."""
    launch = Launch.from_environment()
    return TrainingHooks(device) if launch is None else DistributedHooks(device, launch, batch_size)
