"""The fast CPU backend of ``kernels.rollout_step`` ("cpu"): the same math as
``rollout_step_reference`` (see ``kernels/rollout_step.py`` for the equations and the sources,
PETS / MBPO / MOPO), organised for the cache and for BLAS.

- Rows are processed in chunks of ``CHUNK_ROWS`` per thread, and within a chunk one member at a
  time runs through all its layers: the two ping-pong activation buffers (``[rows, K]``) and the
  member's weights stay in L2/L3 instead of streaming ``[E, N, K]`` tensors through memory.
  Every layer is one MKL ``addmm`` into a preallocated buffer, followed by an in-place SiLU.
- The elementwise tail (soft clamp, std norm, sample, penalty, termination) runs per chunk on the
  ``[E, rows, 2 (D+1)]`` head while it is still in cache, and uses the closed form of the
  exponentiated soft clamp (one ``exp`` per element instead of two softplus and an exp, see
  ``variance``). The std of only the chosen member is computed for the sample; the aleatoric
  uncertainty needs every member's variance sum.

Every hidden layer's SiLU is ``kernels.native.silu_`` (a polynomial ``exp`` in AVX2, on torch's own OpenMP
threads), which falls back to ATen's ``F.silu`` where it is unavailable (``native_silu=False`` asks for
``F.silu``). Where the time goes, what the native SiLU gained and the
layouts measured against this one (``bmm`` over members, one first layer shared by all members, the bias
folded into the matmul, ``torch.compile`` of the layers or of the tail, numba): bench/RESULTS.md.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from kernels import native
from kernels.params import UNCERTAINTIES, EnsembleParams, StepOutput, Uncertainty

CHUNK_ROWS = 1024
"""Rows per chunk and per thread: 1024 keeps the two activation buffers (2 x 800 KB) near the 1 MB L2 and the
member's weights in L3 (bench/RESULTS.md has the step's speed at 256 to 4096 rows)."""


def variance(raw: torch.Tensor, inv_var_max: torch.Tensor, var_min: torch.Tensor) -> torch.Tensor:
    """``exp(soft_clamp_logvar(raw))`` with one ``exp`` per element.

    With ``lv1 = max - softplus(max - raw)`` and ``lv = min + softplus(lv1 - min)`` (PETS App. A.1),
    ``exp(lv) = exp(min) (1 + exp(lv1 - min)) = exp(min) + exp(lv1)`` and
    ``exp(lv1) = exp(max) / (1 + exp(max - raw)) = 1 / (exp(-max) + exp(-raw))``, so
    ``var = exp(min) + 1 / (exp(-max) + exp(-raw))``: the same value as the reference up to
    float32 rounding (the reference's log-domain round trip itself costs ~|logvar| * 6e-8
    relative), with the same limits for ``raw -> +-inf`` and NaN propagation.

    Args:
        raw: ``[..., D+1]`` float32 raw log-variance head.
        inv_var_max: ``[D+1]`` ``exp(-max_logvar)``.
        var_min: ``[D+1]`` ``exp(min_logvar)``.
    Returns:
        ``[..., D+1]`` float32 variance (a new tensor).
    """
    return torch.neg(raw).exp_().add_(inv_var_max).reciprocal_().add_(var_min)


def _tail(
    head: torch.Tensor,
    obs: torch.Tensor,
    noise: torch.Tensor,
    member: torch.Tensor,
    inv_var_max: torch.Tensor,
    var_min: torch.Tensor,
    penalty_coef: float,
    obs_low: torch.Tensor | None,
    obs_high: torch.Tensor | None,
    uncertainty: Uncertainty,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """The epilogue on one chunk: ``head: [E, n, 2 (D+1)]`` contiguous (mean | raw log-variance),
    ``member: [n]`` int64 -> writes ``out = (next_obs [n, D], reward [n], uncertainty [n],
    terminal [n])`` in place. Written with few, cheap ops, as at ~1000 rows per chunk each op's fixed cost
    counts: ``index_select`` replaces advanced indexing and one ``x - x`` sum per row (0 for finite rows, NaN
    otherwise) replaces ``isfinite(x).all(-1)`` (bench/RESULTS.md has their costs)."""
    e, n, width = head.shape
    d1 = width // 2
    d = d1 - 1
    rows = torch.arange(n, device=head.device)
    chosen = head.view(e * n, width).index_select(0, member * n + rows)  # the sampled member (MOPO Alg. 2)
    if uncertainty == "aleatoric":
        u = variance(head[..., d1:], inv_var_max, var_min).sum(-1).amax(0).sqrt_()  # max_e ||std_e|| (MOPO Eq. 8)
    else:
        mean = head[..., :d1]
        u = (mean - mean.mean(0, keepdim=True)).norm(dim=-1).amax(0)
    std = variance(chosen[:, d1:], inv_var_max, var_min).sqrt_()
    y = torch.addcmul(chosen[:, :d1], std, noise)  # [n, D+1] = [delta obs, reward]
    next_obs = obs + y[:, :d]
    finite = ((y - y).sum(-1) + (obs - obs).sum(-1) + (u - u)) == 0
    terminal = ~finite
    if obs_low is not None:
        terminal |= ~(next_obs > obs_low).all(-1)
    if obs_high is not None:
        terminal |= ~(next_obs < obs_high).all(-1)
    next_out, reward_out, u_out, terminal_out = out
    torch.where(finite.unsqueeze(-1), next_obs, obs.nan_to_num(0.0, 0.0, 0.0), out=next_out)
    torch.where(finite, y[:, d] - penalty_coef * u, u.new_zeros(()), out=reward_out)
    torch.where(finite, u, u.new_full((), float("inf")), out=u_out)
    terminal_out.copy_(terminal)


@torch.no_grad()
def rollout_step_cpu(
    params: EnsembleParams,
    obs: torch.Tensor,
    act: torch.Tensor,
    noise: torch.Tensor,
    member: torch.Tensor,
    penalty_coef: float = 0.0,
    obs_low: torch.Tensor | None = None,
    obs_high: torch.Tensor | None = None,
    uncertainty: Uncertainty = "aleatoric",
    *,
    native_silu: bool = True,
) -> StepOutput:
    """``rollout_step`` on the CPU (chunked per-member BLAS forward, tail on the in-cache chunk); same arguments,
    returns and semantics as ``rollout_step_reference`` (shapes are checked by the dispatch).

    Args:
        params: ``EnsembleParams`` (float32).
        obs: ``[N, D]`` float32; act: ``[N, A]`` float32; noise: ``[N, D+1]`` float32 standard normal;
        member: ``[N]`` int32/int64 member per row; penalty_coef: MOPO's lambda (reward per unit
        of uncertainty); obs_low, obs_high: ``[D]`` healthy box or None; uncertainty:
        "aleatoric" | "disagreement"; native_silu: the AVX2 SiLU of ``kernels.native`` (False: ATen's
        ``F.silu``, for comparison; it also falls back there where the native one is unavailable).
    Returns:
        ``StepOutput(next_obs [N, D], reward [N], uncertainty [N], terminal [N] bool)``; not
        differentiable (runs under ``torch.no_grad``).
    Raises:
        ValueError: unknown uncertainty, or a tensor that is not float32.
    """
    if uncertainty not in UNCERTAINTIES:
        raise ValueError(f"unknown uncertainty {uncertainty!r}; valid: {UNCERTAINTIES}")
    for name, t in (("obs", obs), ("act", act), ("noise", noise), ("params.weights[0]", params.weights[0])):
        if t.dtype != torch.float32:
            raise ValueError(f"the cpu backend computes in float32; {name} is {t.dtype}")
    silu_ = native.silu_ if native_silu else lambda t: F.silu(t, inplace=True)
    n = obs.shape[0]
    ws, bs = params.weights, params.biases
    dev = obs.device
    x = (torch.cat([obs, act], -1) - params.in_mean) / params.in_std  # [N, D+A]
    member = member.long()
    inv_var_max, var_min = torch.exp(-params.max_logvar), torch.exp(params.min_logvar)
    next_obs = torch.empty_like(obs)
    reward = torch.empty(n, device=dev)
    unc = torch.empty(n, device=dev)
    terminal = torch.empty(n, dtype=torch.bool, device=dev)
    chunk = CHUNK_ROWS * torch.get_num_threads()
    rows_max = min(chunk, n)
    hidden = [w.shape[2] for w in ws[:-1]]
    ping_pong = [torch.empty(rows_max * max(hidden, default=0), device=dev) for _ in range(2)]
    e, width = params.num_members, ws[-1].shape[2]
    head_buf = torch.empty(e * rows_max * width, device=dev)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        head = head_buf[: e * rows * width].view(e, rows, width)  # [E, rows, 2 (D+1)], contiguous
        for m in range(e):
            h = x[start : start + rows]
            for i, k in enumerate(hidden):
                o = ping_pong[i % 2][: rows * k].view(rows, k)
                torch.addmm(bs[i][m], h, ws[i][m], out=o)  # [rows, in] @ [in, K] + [K]
                h = silu_(o)
            torch.addmm(bs[-1][m], h, ws[-1][m], out=head[m])
        part = slice(start, start + rows)
        _tail(
            head,
            obs[part],
            noise[part],
            member[part],
            inv_var_max,
            var_min,
            penalty_coef,
            obs_low,
            obs_high,
            uncertainty,
            (next_obs[part], reward[part], unc[part], terminal[part]),
        )
    return StepOutput(next_obs, reward, unc, terminal)
