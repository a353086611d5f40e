"""What TF32 matmuls cost the rollout step in accuracy, measured on the CPU against a float64 reference (issue 34).

    python -m bench.tf32_error           # prints the markdown table for bench/RESULTS.md

TF32 keeps 10 of float32's 23 mantissa bits of each matmul input and accumulates in float32. The step is
emulated with ``rollout_step_reference``'s math and every matmul input rounded to TF32 first, two ways: truncated
(what tensor cores do with float32 operands they read as TF32) and rounded to nearest even (``cvt.rna``, what a
TF32 conversion does); the kernel's error lies within the worse of the two. Errors are ``|x - x64| / max(1,
|x64|)``, the largest over rows, for next_obs, reward and uncertainty, on the MOPO ensemble (E 7, 4 x 200 SiLU,
HalfCheetah dims) with the log-variance bounds drawn as in the kernel tests, over seeds.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from kernels import EnsembleParams, rollout_step_reference
from kernels.params import soft_clamp_logvar


def tf32_round(t: torch.Tensor, mode: str) -> torch.Tensor:
    """float32 -> the nearest TF32 value below in magnitude (``"truncate"``) or to nearest even (``"nearest"``)."""
    bits = t.contiguous().view(torch.int32)
    if mode == "nearest":
        bits = bits + (((bits >> 13) & 1) + 0xFFF)
    elif mode != "truncate":
        raise ValueError(f"mode must be 'truncate' or 'nearest', got {mode!r}")
    return (bits & ~0x1FFF).view(torch.float32)


def reference_tf32(p: EnsembleParams, obs, act, noise, member, penalty_coef: float, mode: str = "truncate"):
    """``(next_obs, reward, uncertainty)`` of the reference's math (aleatoric uncertainty, no healthy box) with
    every matmul input rounded to TF32 (``tf32_round``) and float32 accumulation."""
    h = ((torch.cat([obs, act], -1) - p.in_mean) / p.in_std).expand(p.num_members, -1, -1)
    for i, (w, b) in enumerate(zip(p.weights, p.biases)):
        h = torch.baddbmm(b.unsqueeze(1), tf32_round(h, mode), tf32_round(w, mode))
        h = torch.nn.functional.silu(h) if i < len(p.weights) - 1 else h
    mean, raw = h.chunk(2, dim=-1)
    std = (0.5 * soft_clamp_logvar(raw, p.max_logvar, p.min_logvar)).exp()
    u = std.norm(dim=-1).amax(0)
    rows = torch.arange(obs.shape[0])
    y = mean[member, rows] + std[member, rows] * noise
    return obs + y[:, : p.obs_dim], y[:, p.obs_dim] - penalty_coef * u, u


def case(seed: int, n: int, e: int = 7, d: int = 17, a: int = 6, k: int = 200, layers: int = 4):
    """A MOPO-sized ensemble with log-variance bounds drawn around both sides of the soft clamp, and inputs."""
    g = torch.Generator().manual_seed(seed)
    p = EnsembleParams.random(e, d, a, k, num_layers=layers, seed=seed, num_elites=e - 2)
    p = replace(p, max_logvar=torch.randn(d + 1, generator=g), min_logvar=torch.randn(d + 1, generator=g) - 4.0)
    obs, act = torch.randn(n, d, generator=g), torch.rand(n, a, generator=g) * 2 - 1
    noise = torch.randn(n, d + 1, generator=g)
    return p, obs, act, noise, p.elites[torch.randint(p.elites.numel(), (n,), generator=g)]


def _double(p: EnsembleParams) -> EnsembleParams:
    vectors = {f: getattr(p, f).double() for f in ("in_mean", "in_std", "max_logvar", "min_logvar")}
    return replace(
        p, weights=tuple(w.double() for w in p.weights), biases=tuple(b.double() for b in p.biases), **vectors
    )


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).abs() / ref.abs().clamp_min(1.0)).max().item()


def measure(seeds=range(5), n: int = 1024, penalty_coef: float = 0.5) -> dict[str, list[float]]:
    """Per variant (float32, TF32 truncated, TF32 nearest): the largest error over next_obs, reward and uncertainty
    against float64, one entry per seed."""
    out: dict[str, list[float]] = {"float32": [], "tf32 truncate": [], "tf32 nearest": []}
    for seed in seeds:
        p, obs, act, noise, member = case(seed, n)
        ref = rollout_step_reference(_double(p), obs.double(), act.double(), noise.double(), member, penalty_coef)[:3]
        f32 = rollout_step_reference(p, obs, act, noise, member, penalty_coef)[:3]
        variants = {
            "float32": f32,
            "tf32 truncate": reference_tf32(p, obs, act, noise, member, penalty_coef, "truncate"),
            "tf32 nearest": reference_tf32(p, obs, act, noise, member, penalty_coef, "nearest"),
        }
        for name, got in variants.items():
            out[name].append(max(rel_error(x, r) for x, r in zip(got, ref)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tf32_error", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    errors = measure(range(args.seeds), args.rows)
    print(f"| variant | largest error over seeds 0-{args.seeds - 1} (N {args.rows:,}) | per seed |")
    print("|---|---|---|")
    for name, errs in errors.items():
        print(f"| {name} | {max(errs):.2e} | {', '.join(f'{x:.1e}' for x in errs)} |")


if __name__ == "__main__":
    main()
