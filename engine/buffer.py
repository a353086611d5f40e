"""A fixed-capacity replay buffer of transitions (``engine.batch.Batch``) that lives on the device.

The buffer is a ring: ``add`` writes at the cursor with one indexed copy per field (no
Python loop over rows), ``sample`` draws indices from the caller's generator. The model
buffer of MOPO/COMBO is this ring sized to hold the last ``k`` rollouts
(MOPO official code: ``model_retain_epochs``).
"""

from __future__ import annotations

import torch

from engine.batch import Batch


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions on ``device``.

    Args:
        capacity: number of transitions kept; older ones are overwritten.
        obs_dim, act_dim: D and A.
    Raises:
        ValueError: on a non-positive capacity, or ``add`` with mismatched dims.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: str | torch.device = "cpu"):
        if capacity <= 0:
            raise ValueError(f"ReplayBuffer capacity must be positive, got {capacity}")
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        z = dict(device=device, dtype=torch.float32)
        self.data = Batch(
            torch.zeros(capacity, obs_dim, **z),
            torch.zeros(capacity, act_dim, **z),
            torch.zeros(capacity, **z),
            torch.zeros(capacity, obs_dim, **z),
            torch.zeros(capacity, **z),
        )
        self.ptr = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, batch: Batch, mask: torch.Tensor | None = None) -> None:
        """Append the rows of ``batch`` (all of them, or those where ``mask: [B] bool`` is set).

        With a mask the number of rows written is data dependent, so this costs one host sync;
        callers do it once per rollout phase, never per step.
        """
        if batch.obs.shape[-1] != self.obs_dim or batch.act.shape[-1] != self.act_dim:
            raise ValueError(
                f"batch dims (obs {batch.obs.shape[-1]}, act {batch.act.shape[-1]}) do not match "
                f"the buffer (obs {self.obs_dim}, act {self.act_dim})"
            )
        if mask is not None:
            batch = batch.index(mask.nonzero().squeeze(-1))
        n = len(batch)
        if n == 0:
            return
        if n > self.capacity:
            batch = Batch(*(f[-self.capacity :] for f in batch))
            n = self.capacity
        idx = (torch.arange(n, device=self.data.obs.device) + self.ptr) % self.capacity
        for dst, src in zip(self.data, batch):
            dst[idx] = src.to(dst.dtype)
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """``batch_size`` rows drawn uniformly with replacement. Raises ValueError when empty."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=self.data.obs.device)
        return self.data.index(idx)

    def state_dict(self) -> dict:
        return {"data": [f[: self.size].clone() for f in self.data], "ptr": self.ptr, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()`` output, into a buffer of the same or another capacity.

        Same capacity: the same layout and write position, so sampling continues exactly as it
        would have. Other capacity (a run resumed with a longer or shorter budget): the rows go in
        oldest first, keeping the newest ``capacity`` of them, and writing continues after them.
        """
        n, ptr = state["size"], state["ptr"]
        src = list(state["data"])
        if n > 0 and ptr != n and n != self.capacity:  # a full ring of another capacity: oldest row at ptr
            src, ptr = [torch.roll(f, -ptr, 0) for f in src], n
        if n > self.capacity:
            src, n, ptr = [f[-self.capacity :] for f in src], self.capacity, 0
        for dst, f in zip(self.data, src):
            dst[:n] = f
        self.ptr, self.size = ptr % self.capacity, n
