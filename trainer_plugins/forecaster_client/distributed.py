"""torch.distributed: one rank talks to the service, every rank stops at the same step.

torch is never imported here: a process that has not imported it is not distributed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any


@dataclass
class RankGroup:
    """The default process group, seen from this rank."""

    rank: int
    world_size: int
    _dist: Any
    _device: Any

    @classmethod
    def detect(cls) -> RankGroup | None:
        """The group when torch.distributed is initialized with more than one process."""
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        return cls(dist.get_rank(), dist.get_world_size(), dist, device)

    def broadcast(self, codes: tuple[int, int]) -> tuple[int, int]:
        """Rank 0's codes, on every rank. A collective: every rank must call it in step."""
        import torch

        flag = torch.tensor(
            codes if self.rank == 0 else (0, 0), dtype=torch.int64, device=self._device
        )
        self._dist.broadcast(flag, src=0)
        action, reason = flag.tolist()
        return int(action), int(reason)
