"""The fused rollout step's roofline on paper (issue 34): FLOPs and bytes per row of the Triton step and of torch
eager (``rollout_step_reference``), and the rows/s they bound on an H100 SXM, for IEEE float32 and TF32.

    python -m bench.roofline            # prints the markdown table for bench/RESULTS.md

Peaks (NVIDIA H100 Tensor Core GPU datasheet, SXM5 column): TF32 tensor core 989 TFLOP/s with sparsity, so
494.7 dense; FP32 (CUDA cores, FFMA) 67 TFLOP/s; HBM3 3.35 TB/s. A row is one transition of one rollout step.

- Triton, as the kernels are written (``kernels/rollout_step_triton.py``): the forward computes the padded widths
  (D+A -> DINP, 200 -> KP = 256, 2 (D+1) -> 2 DP) and reads obs and act once per member (tiles are member-major);
  it writes the head ``[E, N, 2 DP]``, which the epilogue reads back (the mean and log-variance halves, D+1 floats
  each, in 32-byte sectors) with obs, noise and member, and writes next_obs, reward, uncertainty and terminal.
  On-chip traffic (L2 -> SM), which HBM figures leave out: every tile of ``BLOCK_M`` rows loads its member's
  weights, and every layer stores its activation to the program's scratch slot and loads it back.
- Torch eager: the reference's aten ops traced on the CPU (``TorchDispatchMode``), each op reading its tensor
  inputs and writing its outputs through HBM (no fusion), the batched matmuls' FLOPs from their shapes; per row as
  the slope between two N (so the weights, read once per call, drop out). Its time per row is the sum over ops of
  each op's own roofline time (ops run one after another); launch overheads are left out (large N).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.dynamics import DynamicsConfig
from engine.envs import get_env_spec
from kernels import EnsembleParams, rollout_step_reference
from kernels.rollout_step_triton import padded_widths


@dataclass(frozen=True)
class Peaks:
    """Device peaks, FLOP/s and bytes/s."""

    name: str
    tf32: float
    fp32: float
    hbm: float


H100_SXM = Peaks("H100 SXM5 (datasheet)", tf32=494.7e12, fp32=67e12, hbm=3.35e12)
GOAL_ROWS_PER_S = 50e6
SECTOR = 32
"""Bytes per DRAM/L2 sector: a masked row read of f floats moves ``ceil(4 f / 32)`` sectors."""


def _sectors(floats: int) -> int:
    """Bytes moved by a masked read of ``floats`` consecutive floats at a row start (whole 32-byte sectors)."""
    return -(-4 * floats // SECTOR) * SECTOR


@dataclass(frozen=True)
class StepShape:
    num_members: int
    obs_dim: int
    act_dim: int
    hidden_dim: int
    num_layers: int

    @staticmethod
    def of(env: str, dyn: DynamicsConfig | None = None) -> StepShape:
        spec, dyn = get_env_spec(env), dyn or DynamicsConfig()
        return StepShape(dyn.num_members, spec.obs_dim, spec.act_dim, dyn.hidden_dim, dyn.num_layers)


def triton_per_row(s: StepShape) -> dict:
    """FLOPs and bytes per row of the Triton step (see the module docstring); ``l2_weight_bytes_per_tile`` is
    divided by BLOCK_M for a per-row figure."""
    e, d, a = s.num_members, s.obs_dim, s.act_dim
    dinp, kp, dp = padded_widths(d, a, s.hidden_dim)
    hidden = s.num_layers - 1
    weights = dinp * kp + hidden * kp * kp + kp * 2 * dp + (s.num_layers * kp + 2 * dp)  # floats per member
    useful = (d + a) * s.hidden_dim + hidden * s.hidden_dim**2 + s.hidden_dim * 2 * (d + 1)
    # obs/act/noise/outputs: contiguous rows, exact bytes; the head's two halves: D+1 of DP floats in sectors
    fwd_hbm = e * 4 * (d + a) + e * 2 * dp * 4
    epi_hbm = e * 2 * _sectors(d + 1) + 4 * d + 4 * (d + 1) + 8 + 4 * d + 4 + 4 + 1
    return dict(
        flops=2 * e * (dinp * kp + hidden * kp * kp + kp * 2 * dp),
        useful_flops=2 * e * useful,
        forward_hbm_bytes=fwd_hbm,
        epilogue_hbm_bytes=epi_hbm,
        l2_weight_bytes_per_tile=e * weights * 4,
        l2_scratch_bytes=e * 2 * s.num_layers * kp * 4,  # each layer's activation stored and loaded once
    )


class _Traffic(TorchDispatchMode):
    """Records, for every aten op that moves data (views excluded), its name, the bytes of its tensor inputs and
    outputs, and its matmul FLOPs (``bmm``/``baddbmm``: 2 B M K N; 0 for other ops)."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            flat = torch.utils._pytree.tree_leaves((args, kwargs or {}, out))
            moved = sum(t.numel() * t.element_size() for t in flat if isinstance(t, torch.Tensor))
            name = func.__name__.split(".")[0]
            flops = 0
            if name in ("bmm", "baddbmm"):
                a, b = args[-2], args[-1]
                flops = 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
            self.ops.append((name, moved, flops))
        return out


def eager_per_row(s: StepShape, n1: int = 512, n2: int = 2048) -> dict:
    """Per-row FLOPs and bytes of ``rollout_step_reference`` and its time per row on ``H100_SXM`` with IEEE and
    TF32 matmuls (sum over ops of ``max(FLOPs / peak, bytes / HBM)``), as the slope between N = n1 and n2."""

    def trace(n: int) -> list[tuple[str, int, int]]:
        p = EnsembleParams.random(s.num_members, s.obs_dim, s.act_dim, s.hidden_dim, s.num_layers, seed=0)
        g = torch.Generator().manual_seed(0)
        obs, act = torch.randn(n, s.obs_dim, generator=g), torch.rand(n, s.act_dim, generator=g)
        noise = torch.randn(n, s.obs_dim + 1, generator=g)
        member = torch.randint(s.num_members, (n,), generator=g)
        box = (torch.full((s.obs_dim,), -10.0), torch.full((s.obs_dim,), 10.0))
        traffic = _Traffic()
        with traffic:
            rollout_step_reference(p, obs, act, noise, member, 0.5, *box)
        return traffic.ops

    ops1, ops2 = trace(n1), trace(n2)
    assert [o[0] for o in ops1] == [o[0] for o in ops2], "the reference ran other ops at another N"
    per_op = [(op, (b2 - b1) / (n2 - n1), (f2 - f1) / (n2 - n1)) for (op, b1, f1), (_, b2, f2) in zip(ops1, ops2)]

    def seconds(peak: float) -> float:
        return sum(max(f / peak, b / H100_SXM.hbm) for _, b, f in per_op)

    return dict(
        flops=sum(f for *_, f in per_op),
        hbm_bytes=sum(b for _, b, _ in per_op),
        ops=len(per_op),
        ieee_s=seconds(H100_SXM.fp32),
        tf32_s=seconds(H100_SXM.tf32),
    )


def table(env: str = "halfcheetah", block_ms: tuple[int, ...] = (32, 64, 128)) -> list[str]:
    s = StepShape.of(env)
    t = triton_per_row(s)
    eager = eager_per_row(s)
    hbm = t["forward_hbm_bytes"] + t["epilogue_hbm_bytes"]
    rows = []
    for precision, peak in (("ieee", H100_SXM.fp32), ("tf32", H100_SXM.tf32)):
        fwd_s = max(t["flops"] / peak, t["forward_hbm_bytes"] / H100_SXM.hbm)
        step_s = fwd_s + t["epilogue_hbm_bytes"] / H100_SXM.hbm
        limit = "FLOPs" if t["flops"] / peak > t["forward_hbm_bytes"] / H100_SXM.hbm else "HBM"
        eager_s = eager[f"{precision}_s"]
        rows.append(
            f"| {precision} | {1 / step_s / 1e6:,.1f}M ({limit}) | {1 / eager_s / 1e6:,.1f}M | "
            f"{GOAL_ROWS_PER_S / 1e6:.0f}M |"
        )
    l2_rows = []
    for bm in block_ms:
        weights = t["l2_weight_bytes_per_tile"] / bm
        l2 = weights + t["l2_scratch_bytes"]
        l2_rows.append(
            f"| {bm} | {weights:,.0f} | {t['l2_scratch_bytes']:,} | {l2 / 1e3:,.1f} kB | "
            f"{l2 * GOAL_ROWS_PER_S / 1e12:.1f} TB/s |"
        )
    return [
        f"Shape: {env} (D {s.obs_dim}, A {s.act_dim}), E {s.num_members}, {s.num_layers} x {s.hidden_dim} SiLU. "
        f"Peaks: {H100_SXM.name}, TF32 tensor {H100_SXM.tf32 / 1e12:.1f} TFLOP/s dense, "
        f"FP32 {H100_SXM.fp32 / 1e12:.0f} TFLOP/s, HBM {H100_SXM.hbm / 1e12:.2f} TB/s.",
        "",
        "| per row | Triton (fused) | torch eager (reference) |",
        "|---|---|---|",
        f"| FLOPs | {t['flops'] / 1e6:.2f}M computed (padded widths), {t['useful_flops'] / 1e6:.2f}M useful | "
        f"{eager['flops'] / 1e6:.2f}M |",
        f"| HBM bytes | {hbm:,} ({t['forward_hbm_bytes']:,} forward + {t['epilogue_hbm_bytes']:,} epilogue) | "
        f"{eager['hbm_bytes']:,.0f} ({eager['ops']} ops) |",
        f"| FLOPs per HBM byte | {t['flops'] / hbm:,.0f} | {eager['flops'] / eager['hbm_bytes']:,.1f} |",
        "",
        "| precision | Triton bound, rows/s (limit) | torch eager bound, rows/s | goal |",
        "|---|---|---|---|",
        *rows,
        "",
        "On-chip traffic of the Triton forward (L2 -> SM; NVIDIA publishes no L2 bandwidth for the H100):",
        "",
        "| BLOCK_M | weights, bytes/row | scratch, bytes/row | L2 -> SM per row | L2 bandwidth for 50M rows/s |",
        "|---|---|---|---|---|",
        *l2_rows,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.roofline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="halfcheetah")
    args = parser.parse_args(argv)
    print("\n".join(table(args.env)))


if __name__ == "__main__":
    main()
