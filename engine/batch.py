"""The named transition batch every part of the engine passes around (``obs, act, rew, next_obs, terminal``),
and its row-wise concatenation."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """A batch of transitions. ``obs, next_obs: [B, D]``, ``act: [B, A]``, ``rew, terminal: [B]``
    (all float32; ``terminal`` is 1.0 where the episode truly ended, never on a time-limit)."""

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    next_obs: torch.Tensor
    terminal: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def index(self, idx: torch.Tensor) -> Batch:
        """Rows ``idx`` of every field."""
        return Batch(*(f[idx] for f in self))

    def to(self, device) -> Batch:
        return Batch(*(f.to(device) for f in self))


def cat_batches(a: Batch, b: Batch) -> Batch:
    """Row-wise concatenation of two batches."""
    return Batch(*(torch.cat([x, y], 0) for x, y in zip(a, b)))
