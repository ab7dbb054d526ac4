"""Where a run executes: the device, seeding, and its place among data-parallel workers."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hadskip.errors import ConfigError, HadSkipError


class TrainingDiverged(HadSkipError):
    """The loss became NaN or infinite."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is visible; use --set device=cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Runtime:
    """Where a run executes: device, and its place among data-parallel workers (1 when alone)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    progress: bool | None = None  # tqdm bars on the main worker; None: only when stderr is a terminal
    # called as on_step(stage_name, step, total_steps, losses) every `log_every` steps
    on_step: Callable[[str, int, int, dict[str, float]], None] | None = None
    log_every: int = 50

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every worker start from worker 0's weights."""
        if self.distributed:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """All-reduce gradients in one flat buffer (what DDP does, without wrapping the model)."""
        if not self.distributed or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p)
            offset += n

    def all_gather(self, obj: object) -> list[object]:
        """Every worker's `obj`, in rank order (just `[obj]` when alone)."""
        if not self.distributed:
            return [obj]
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered
