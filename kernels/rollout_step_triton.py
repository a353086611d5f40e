"""The Triton backend of ``kernels.rollout_step`` ("triton", and "triton-tf32" for the fast mode):
the math of ``rollout_step_reference`` (``kernels/rollout_step.py``: PETS soft clamp, MBPO/MOPO
sampling and penalty) in two kernels.

1. ``_forward_kernel``, persistent (``PROGRAMS_PER_SM`` programs per SM on CUDA): each program takes
   (member, block of ``BLOCK_M`` rows) tiles through every layer of the member. The input normalisation
   is fused into the first layer; each hidden layer is a GEMM ``[BLOCK_M, KP] @ [KP, KP]`` over K in
   ``BLOCK_K`` slices, its input activation read back from the program's own scratch slot and its output
   stored to the slot's other half (ping-pong), so only one ``[BLOCK_M, KP]`` accumulator lives in
   registers and Triton stages both operands through shared memory, software-pipelined over K; the
   slots (``2 BLOCK_M KP`` floats per program, a few tens of MiB in all) are meant to stay in L2. Only the
   head ``[BLOCK_M, 2 DP]`` (mean | raw log-variance) goes to memory for the epilogue. Widths are padded
   to powers of two (hidden 200 -> KP = 256, D+A -> DINP, D+1 -> DP, each >= 16 for ``tl.dot``) by
   zero-padding the packed weights once (``_packed``, cached per parameter version), so padded units
   compute ``silu(0) = 0`` and the kernel needs no masks on weights. The candidates autotuning may pick
   (``PICKABLE``) compile without register spills (bench/RESULTS.md, ``python -m bench.triton_aot``).
2. ``_epilogue_kernel``, grid ``(cdiv(N, BLOCK_R),)``: per row, over the E members' heads: the
   soft-clamped variance in closed form (``kernels.rollout_step_cpu.variance``), the uncertainty
   (max over members), the sample of the chosen member, the penalised reward, termination and the
   non-finite handling of the reference.

Precision: "triton" computes the matmuls in IEEE float32 (``input_precision="ieee"``);
"triton-tf32" uses TF32 tensor cores (10-bit mantissa inputs, float32 accumulation), the fast mode.
Under ``TRITON_INTERPRET=1`` (CPU tensors, used by the tests) both run in float32 NumPy: the
interpreter ignores ``input_precision``.

The kernels are built lazily: JIT-compiled with autotuned block sizes for CUDA tensors, or run by
Triton's interpreter for CPU tensors when ``TRITON_INTERPRET=1`` is set (read at call time, so
the variable can be set after import).
"""

from __future__ import annotations

import functools
import os
import weakref
from dataclasses import dataclass

import torch

from kernels.params import UNCERTAINTIES, EnsembleParams, StepOutput, Uncertainty

triton = tl = _sum_combine = None
"""Imported on first use by ``_import_triton`` (importing triton is slow, a cost that CPU-only users of ``kernels``
should not pay; bench/RESULTS.md); the kernels' bodies read ``tl`` and ``_sum_combine`` from here."""


def _import_triton() -> bool:
    """Import triton into this module's globals; False if it is not installed (the `gpu` and `test`
    extras install it).

    Reductions are written ``tl.reduce(x, axis, _sum_combine)`` instead of ``tl.sum``, and tensors
    made with ``tl.full`` instead of ``tl.zeros``: ``tl.sum`` and ``tl.zeros`` are @triton.jit library
    functions, which the interpreter can only call if TRITON_INTERPRET=1 was set before triton was
    imported, whereas builtins and ``tl.reduce`` with this combine function (which the interpreter
    maps to ``np.sum``) work whatever the order."""
    global triton, tl, _sum_combine
    if triton is None:
        try:
            import triton as triton_module
            import triton.language as language
            from triton.language.standard import _sum_combine as sum_combine
        except ImportError:
            return False
        triton, tl, _sum_combine = triton_module, language, sum_combine
    return True


def _forward_kernel(
    obs_ptr,
    act_ptr,
    in_mean_ptr,
    in_std_ptr,
    w0_ptr,
    b0_ptr,
    wh_ptr,
    bh_ptr,
    wl_ptr,
    bl_ptr,
    head_ptr,
    scratch_ptr,
    N,
    E: tl.constexpr,
    NUM_HIDDEN: tl.constexpr,
    D: tl.constexpr,
    A: tl.constexpr,
    DINP: tl.constexpr,
    KP: tl.constexpr,
    DP: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """``head[e, rows] = MLP_e(norm(obs, act))`` for every (member, block of ``BLOCK_M`` rows) tile.

    Persistent: program p takes tiles p, p + P, p + 2P, ... (P programs, tiles member-major so that the
    programs running together read the same member's weights). Packed weights (zero-padded):
    ``w0 [E, DINP, KP]``, ``b0 [E, KP]``, ``wh [NUM_HIDDEN, E, KP, KP]``, ``bh [NUM_HIDDEN, E, KP]``,
    ``wl [E, KP, 2 DP]``, ``bl [E, 2 DP]``; ``head [E, N, 2 DP]``; ``scratch [P, 2, BLOCK_M, KP]``.
    Each layer is a GEMM over K in ``BLOCK_K`` slices of its input activation, read back from this
    program's scratch slot; the output goes to the slot's other half (ping-pong), so only the layer's
    ``[BLOCK_M, KP]`` accumulator lives in registers. ``tl.debug_barrier`` orders each store before the
    next layer's loads (and the loads before the stores that reuse a half) across the program's threads.
    """
    pid = tl.program_id(0)
    num_blocks = (N + BLOCK_M - 1) // BLOCK_M
    r = tl.arange(0, BLOCK_M)
    cin = tl.arange(0, DINP)
    ck = tl.arange(0, KP)
    cb = tl.arange(0, BLOCK_K)
    co = tl.arange(0, 2 * DP)
    is_obs = cin < D
    is_act = (cin >= D) & (cin < D + A)
    mu = tl.load(in_mean_ptr + cin, mask=is_obs | is_act, other=0.0)
    sd = tl.load(in_std_ptr + cin, mask=is_obs | is_act, other=1.0)
    slot = scratch_ptr + pid.to(tl.int64) * (2 * BLOCK_M * KP)
    for tile in range(pid, E * num_blocks, tl.num_programs(0)):
        e = tile // num_blocks
        rows = ((tile % num_blocks) * BLOCK_M + r).to(tl.int64)
        rmask = rows < N
        # layer 0 on x = (concat(obs, act) - in_mean) / in_std: [BLOCK_M, DINP] @ [DINP, KP], padding 0
        xo = tl.load(obs_ptr + rows[:, None] * D + cin[None, :], mask=rmask[:, None] & is_obs[None, :], other=0.0)
        xa = tl.load(act_ptr + rows[:, None] * A + (cin[None, :] - D), mask=rmask[:, None] & is_act[None, :], other=0.0)
        x = (xo + xa - mu[None, :]) / sd[None, :]
        h = tl.dot(x, tl.load(w0_ptr + e * DINP * KP + cin[:, None] * KP + ck[None, :]), input_precision=PRECISION)
        h = h + tl.load(b0_ptr + e * KP + ck)[None, :]
        h = h / (1.0 + tl.exp(-h))  # SiLU
        tl.debug_barrier()  # the previous tile's output layer has read its half
        tl.store(slot + r[:, None] * KP + ck[None, :], h)
        # hidden layers: [BLOCK_M, KP] @ [KP, KP], the input read from one half, the output written to the other
        for layer in range(NUM_HIDDEN):
            src = slot + (layer % 2) * (BLOCK_M * KP)
            wbase = wh_ptr + (layer * E + e) * KP * KP
            acc = tl.full((BLOCK_M, KP), 0.0, tl.float32) + tl.load(bh_ptr + (layer * E + e) * KP + ck)[None, :]
            tl.debug_barrier()  # src is written
            for k in range(0, KP, BLOCK_K):
                a = tl.load(src + r[:, None] * KP + (k + cb[None, :]))
                w = tl.load(wbase + (k + cb[:, None]) * KP + ck[None, :])
                acc = tl.dot(a, w, acc, input_precision=PRECISION)
            acc = acc / (1.0 + tl.exp(-acc))
            tl.store(slot + ((layer + 1) % 2) * (BLOCK_M * KP) + r[:, None] * KP + ck[None, :], acc)
        # output layer: [BLOCK_M, KP] @ [KP, 2 DP] -> head[e, rows]
        src = slot + (NUM_HIDDEN % 2) * (BLOCK_M * KP)
        wbase = wl_ptr + e * KP * 2 * DP
        out = tl.full((BLOCK_M, 2 * DP), 0.0, tl.float32) + tl.load(bl_ptr + e * 2 * DP + co)[None, :]
        tl.debug_barrier()
        for k in range(0, KP, BLOCK_K):
            a = tl.load(src + r[:, None] * KP + (k + cb[None, :]))
            out = tl.dot(a, tl.load(wbase + (k + cb[:, None]) * (2 * DP) + co[None, :]), out, input_precision=PRECISION)
        tl.store(head_ptr + (e * N + rows[:, None]) * (2 * DP) + co[None, :], out, mask=rmask[:, None])


def _epilogue_kernel(
    head_ptr,
    obs_ptr,
    noise_ptr,
    member_ptr,
    inv_var_max_ptr,
    var_min_ptr,
    low_ptr,
    high_ptr,
    next_obs_ptr,
    reward_ptr,
    unc_ptr,
    terminal_ptr,
    N,
    E: tl.constexpr,
    penalty_coef,
    D: tl.constexpr,
    DP: tl.constexpr,
    DISAGREEMENT: tl.constexpr,
    HAS_LOW: tl.constexpr,
    HAS_HIGH: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Uncertainty, sample, penalty and termination for ``BLOCK_R`` rows from ``head [E, N, 2 DP]``."""
    FLT_MAX: tl.constexpr = 3.4028234663852886e38  # |x| <= FLT_MAX <=> x is finite (False for NaN)
    pid = tl.program_id(0)
    rows = (pid * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    rmask = rows < N
    c = tl.arange(0, DP)
    ymask = rmask[:, None] & (c < D + 1)[None, :]
    dmask = rmask[:, None] & (c < D)[None, :]
    member = tl.load(member_ptr + rows, mask=rmask, other=0)
    inv_var_max = tl.load(inv_var_max_ptr + c, mask=c < D + 1, other=1.0)[None, :]
    var_min = tl.load(var_min_ptr + c, mask=c < D + 1, other=0.0)[None, :]
    mean_sel = tl.full((BLOCK_R, DP), 0.0, tl.float32)
    raw_sel = tl.full((BLOCK_R, DP), 0.0, tl.float32)
    mean_sum = tl.full((BLOCK_R, DP), 0.0, tl.float32)
    u2 = tl.full((BLOCK_R,), 0.0, tl.float32)
    u_bad = tl.full((BLOCK_R,), 0, tl.int32)  # members with a non-finite norm
    for e in range(E):
        base = head_ptr + (e * N + rows[:, None]) * (2 * DP) + c[None, :]
        mean = tl.load(base, mask=ymask, other=0.0)
        raw = tl.load(base + DP, mask=ymask, other=0.0)
        pick = (member == e)[:, None]
        mean_sel = tl.where(pick, mean, mean_sel)
        raw_sel = tl.where(pick, raw, raw_sel)
        if DISAGREEMENT:
            mean_sum += mean
        else:
            var = var_min + 1.0 / (inv_var_max + tl.exp(-raw))  # exp(soft clamp(raw))
            s = tl.reduce(tl.where(ymask, var, 0.0), 1, _sum_combine)  # ||std_e||^2
            u_bad += tl.where((tl.abs(s) > FLT_MAX) | (s != s), 1, 0)
            u2 = tl.maximum(u2, s)
    if DISAGREEMENT:
        mean_bar = mean_sum / E
        for e in range(E):
            mean = tl.load(head_ptr + (e * N + rows[:, None]) * (2 * DP) + c[None, :], mask=ymask, other=0.0)
            diff = tl.where(ymask, mean - mean_bar, 0.0)
            s = tl.reduce(diff * diff, 1, _sum_combine)  # ||mean_e - mean_bar||^2
            u_bad += tl.where((tl.abs(s) > FLT_MAX) | (s != s), 1, 0)
            u2 = tl.maximum(u2, s)
    u = tl.sqrt(u2)
    std = tl.sqrt(var_min + 1.0 / (inv_var_max + tl.exp(-raw_sel)))
    noise = tl.load(noise_ptr + rows[:, None] * (D + 1) + c[None, :], mask=ymask, other=0.0)
    y = mean_sel + std * noise  # [BLOCK_R, DP]: [delta obs, reward, padding]
    obs = tl.load(obs_ptr + rows[:, None] * D + c[None, :], mask=dmask, other=0.0)
    # Booleans are built from comparisons only (no ``~``): Triton 3.3's interpreter cannot invert int1.
    obs_nonfinite = (tl.abs(obs) > FLT_MAX) | (obs != obs)
    y_bad = tl.reduce(tl.where(ymask & ((tl.abs(y) > FLT_MAX) | (y != y)), 1, 0), 1, _sum_combine)
    obs_bad = tl.reduce(tl.where(dmask & obs_nonfinite, 1, 0), 1, _sum_combine)
    finite = (y_bad + obs_bad + u_bad) == 0
    terminal = (y_bad + obs_bad + u_bad) > 0
    next_obs = obs + y
    reward = tl.reduce(tl.where((c == D)[None, :], y, 0.0), 1, _sum_combine) - penalty_coef * u
    if HAS_LOW:  # unhealthy unless obs_low < next_obs (NaN compares False, as in the reference)
        low = tl.load(low_ptr + c, mask=c < D, other=0.0)[None, :]
        out_low = (next_obs <= low) | (next_obs != next_obs)
        terminal = terminal | (tl.reduce(tl.where(dmask & out_low, 1, 0), 1, _sum_combine) > 0)
    if HAS_HIGH:
        high = tl.load(high_ptr + c, mask=c < D, other=0.0)[None, :]
        out_high = (next_obs >= high) | (next_obs != next_obs)
        terminal = terminal | (tl.reduce(tl.where(dmask & out_high, 1, 0), 1, _sum_combine) > 0)
    next_obs = tl.where(finite[:, None], next_obs, tl.where(obs_nonfinite, 0.0, obs))
    tl.store(next_obs_ptr + rows[:, None] * D + c[None, :], next_obs, mask=dmask)
    tl.store(reward_ptr + rows, tl.where(finite, reward, 0.0), mask=rmask)
    tl.store(unc_ptr + rows, tl.where(finite, u, float("inf")), mask=rmask)
    tl.store(terminal_ptr + rows, terminal.to(tl.int8), mask=rmask)


# Tuning: below the kernels, so that editing it leaves their line numbers (part of Triton's cache key) alone.

MAX_WIDTH = 256
"""Largest padded hidden width: a layer's ``[BLOCK_M, KP]`` float32 accumulator lives in registers, which
is affordable up to 256 (hidden 200, the MBPO/MOPO width)."""

INTERPRET_BLOCK_M = 16
"""Rows per program under the interpreter (no autotuning there): small, so tests with N of a few
dozen still cover several row blocks and the masked last block."""

INTERPRET_BLOCK_K = 64
"""K slice under the interpreter (capped at KP): few, large NumPy matmuls per layer."""

EPILOGUE_BLOCK_R = 64
"""Rows per epilogue program: the epilogue is memory-bound and tiny next to the forward. 64 rows x 8 warps put 8
of each ``[BLOCK_R, DP]`` tensor's floats in a thread; 128 rows spilled for sm_90 (the aleatoric epilogue with 4
warps, 10 ``STL``; the disagreement one with 8 warps, 3 ``STL``; 2026-12-06, bench/RESULTS.md)."""

EPILOGUE_NUM_WARPS = 8
"""Warps per epilogue program (see ``EPILOGUE_BLOCK_R``)."""

PROGRAMS_PER_SM = 2
"""Persistent forward programs launched per SM. Where registers and shared memory let two reside, one's GEMM
hides the other's layer boundary (barrier, store, pipeline refill); where only one fits, the second runs after
it, with the same total work per SM, since the programs share the tiles evenly. Warps per SM of each candidate:
the compile table in bench/RESULTS.md."""


@dataclass(frozen=True)
class ForwardConfig:
    """One autotuning candidate of ``_forward_kernel``."""

    block_m: int
    """Rows per tile (the GEMMs' M)."""
    block_k: int
    """K slice of each GEMM step (the activation and weight tiles staged through shared memory)."""
    num_warps: int
    num_stages: int
    """Software-pipeline depth of the K loops."""


FORWARD_CONFIGS = (
    ForwardConfig(32, 16, 4, 2),
    ForwardConfig(64, 16, 8, 2),
    ForwardConfig(64, 32, 8, 2),
    ForwardConfig(64, 32, 4, 2),  # spills: the [64, KP] accumulator is 128 registers a thread on 4 warps
    ForwardConfig(128, 32, 8, 2),  # spills: likewise on 8 warps
)
"""The candidates ``python -m bench.triton_aot`` compiles; ``PICKABLE`` says which autotuning may pick. The last
two spill for sm_80 and sm_90 in both precisions (2026-12-06), so they stay in the table and out of autotuning;
the last would halve the weights' L2 traffic per row (bench/RESULTS.md)."""

PICKABLE = {"ieee": FORWARD_CONFIGS[:3], "tf32": FORWARD_CONFIGS[:3]}
"""Per precision, the candidates that compile without spills for sm_80 and sm_90 at the MOPO ensemble's widths
(KP 256; smaller widths need fewer registers): the compile table in bench/RESULTS.md (``python -m
bench.triton_aot``). Kept below the kernels in this file: Triton's cache key holds a kernel's first line."""


def may_pick(config: ForwardConfig, precision: str, kp: int) -> bool:
    """Whether autotuning may pick ``config`` for this precision and padded hidden width."""
    return config in PICKABLE[precision] and config.block_k <= kp


def _prune(configs, nargs, **meta):
    """``early_config_prune`` of the forward's autotuner: the candidates ``may_pick`` allows."""
    return [
        c
        for c in configs
        if may_pick(
            ForwardConfig(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_K"], c.num_warps, c.num_stages),
            meta["PRECISION"],
            meta["KP"],
        )
    ]


@functools.cache
def _kernels(interpret: bool):
    """``(forward, epilogue)`` launchable kernels: interpreted (CPU tensors) or JIT + autotune (CUDA)."""
    if interpret:
        # Built here rather than with @triton.jit at import so that TRITON_INTERPRET is read when the
        # backend is used, not when kernels/ is first imported.
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(_forward_kernel), InterpretedFunction(_epilogue_kernel)
    configs = [
        triton.Config({"BLOCK_M": c.block_m, "BLOCK_K": c.block_k}, num_warps=c.num_warps, num_stages=c.num_stages)
        for c in FORWARD_CONFIGS
    ]
    forward = triton.autotune(
        configs=configs,
        key=["KP", "DINP", "DP", "NUM_HIDDEN", "PRECISION"],
        prune_configs_by={"early_config_prune": _prune},
    )(triton.jit(_forward_kernel))
    return forward, triton.jit(_epilogue_kernel)


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def padded_widths(obs_dim: int, act_dim: int, hidden_dim: int) -> tuple[int, int, int]:
    """``(DINP, KP, DP)``: the kernel's padded widths of the input ``D + A``, the hidden layers and the head
    half ``D + 1`` (powers of two, at least 16 for ``tl.dot``)."""
    return _pow2(obs_dim + act_dim), _pow2(hidden_dim), _pow2(obs_dim + 1)


def unsupported_reason(params: EnsembleParams, device: torch.device) -> str | None:
    """Why the triton backend cannot run these params on this device, or None if it can."""
    if not _import_triton():
        return "triton is not installed (pip install 'simloop[gpu]')"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return (
            "the triton backend runs on CUDA tensors; for CPU tensors set TRITON_INTERPRET=1 "
            "(Triton's interpreter, slow, for tests) or use backend='cpu'"
        )
    if device.type not in ("cpu", "cuda"):
        return f"the triton backend runs on CUDA tensors, got {device.type}"
    ws = params.weights
    if len(ws) < 2:
        return "the triton backend needs at least one hidden layer"
    hidden = {w.shape[2] for w in ws[:-1]}
    if len(hidden) != 1:
        return f"the triton backend needs equal hidden widths, got {[w.shape[2] for w in ws[:-1]]}"
    if _pow2(hidden.pop()) > MAX_WIDTH or _pow2(ws[0].shape[1]) > MAX_WIDTH:
        return f"the triton backend supports widths up to {MAX_WIDTH}"
    return None


_PACK_CACHE: dict[tuple, tuple] = {}


def _packed(params: EnsembleParams) -> tuple[torch.Tensor, ...]:
    """Zero-padded, stacked weights ``(w0, b0, wh, bh, wl, bl)`` (shapes in ``_forward_kernel``),
    cached per parameter tensors and their in-place version counters (a training step that updates
    the weights in place invalidates the entry)."""
    tensors = params.weights + params.biases
    key = tuple((id(t), t._version) for t in tensors)
    hit = _PACK_CACHE.get(key)
    if hit is not None and all(ref() is t for ref, t in zip(hit[0], tensors)):
        return hit[1]
    e, d, a = params.num_members, params.obs_dim, params.act_dim
    ws, bs = params.weights, params.biases
    k = ws[0].shape[2]
    dinp, kp, dp = padded_widths(d, a, k)
    dev = params.device
    with torch.no_grad():
        w0 = torch.zeros(e, dinp, kp, device=dev)
        w0[:, : d + a, :k] = ws[0]
        b0 = torch.zeros(e, kp, device=dev)
        b0[:, :k] = bs[0]
        nh = len(ws) - 2
        wh = torch.zeros(max(nh, 1), e, kp, kp, device=dev)
        bh = torch.zeros(max(nh, 1), e, kp, device=dev)
        for i in range(nh):
            wh[i, :, :k, :k] = ws[1 + i]
            bh[i, :, :k] = bs[1 + i]
        wl = torch.zeros(e, kp, 2 * dp, device=dev)  # mean in [0, D+1), raw log-variance in [DP, DP+D+1)
        wl[:, :k, : d + 1] = ws[-1][:, :, : d + 1]
        wl[:, :k, dp : dp + d + 1] = ws[-1][:, :, d + 1 :]
        bl = torch.zeros(e, 2 * dp, device=dev)
        bl[:, : d + 1] = bs[-1][:, : d + 1]
        bl[:, dp : dp + d + 1] = bs[-1][:, d + 1 :]
    packed = (w0, b0, wh, bh, wl, bl)
    if len(_PACK_CACHE) >= 4:
        _PACK_CACHE.pop(next(iter(_PACK_CACHE)))
    _PACK_CACHE[key] = (tuple(weakref.ref(t) for t in tensors), packed)
    return packed


def _rollout_step_triton(
    params: EnsembleParams,
    obs: torch.Tensor,
    act: torch.Tensor,
    noise: torch.Tensor,
    member: torch.Tensor,
    penalty_coef: float,
    obs_low: torch.Tensor | None,
    obs_high: torch.Tensor | None,
    uncertainty: Uncertainty,
    precision: str,
) -> StepOutput:
    if uncertainty not in UNCERTAINTIES:
        raise ValueError(f"unknown uncertainty {uncertainty!r}; valid: {UNCERTAINTIES}")
    reason = unsupported_reason(params, obs.device)
    if reason is not None:
        raise ValueError(reason)
    for name, t in (("obs", obs), ("act", act), ("noise", noise), ("params.weights[0]", params.weights[0])):
        if t.dtype != torch.float32:
            raise ValueError(f"the triton backend computes in float32; {name} is {t.dtype}")
    interpret = obs.device.type == "cpu"
    forward, epilogue = _kernels(interpret)
    w0, b0, wh, bh, wl, bl = _packed(params)
    n, d = obs.shape
    e = params.num_members
    dinp, kp, dp = w0.shape[1], w0.shape[2], wl.shape[2] // 2
    obs, act, noise = obs.contiguous(), act.contiguous(), noise.contiguous()
    next_obs = torch.empty_like(obs)
    reward = torch.empty(n, device=obs.device)
    unc = torch.empty(n, device=obs.device)
    terminal = torch.empty(n, dtype=torch.int8, device=obs.device)
    if n == 0:  # a grid of zero programs is not a valid launch
        return StepOutput(next_obs, reward, unc, terminal.view(torch.bool))
    head = torch.empty(e, n, 2 * dp, device=obs.device)
    meta = dict(E=e, NUM_HIDDEN=len(params.weights) - 2, D=d, A=params.act_dim, DINP=dinp, KP=kp, DP=dp)
    if interpret:  # one tile per program
        num_tiles = e * triton.cdiv(n, INTERPRET_BLOCK_M)
        scratch = torch.empty(num_tiles, 2, INTERPRET_BLOCK_M, kp, device=obs.device)
        grid, tune = (num_tiles,), dict(BLOCK_M=INTERPRET_BLOCK_M, BLOCK_K=min(INTERPRET_BLOCK_K, kp))
    else:  # persistent: PROGRAMS_PER_SM programs per SM, a scratch slot each for the largest candidate
        slots = PROGRAMS_PER_SM * torch.cuda.get_device_properties(obs.device).multi_processor_count
        scratch = torch.empty(slots, 2, max(c.block_m for c in FORWARD_CONFIGS), kp, device=obs.device)
        grid, tune = (lambda m: (min(slots, e * triton.cdiv(n, m["BLOCK_M"])),)), {}
    args = (obs, act, params.in_mean, params.in_std, w0, b0, wh, bh, wl, bl, head, scratch, n)
    forward[grid](*args, **meta, PRECISION=precision, **tune)
    epilogue[(triton.cdiv(n, EPILOGUE_BLOCK_R),)](
        head,
        obs,
        noise,
        member,
        torch.exp(-params.max_logvar),
        torch.exp(params.min_logvar),
        obs_low if obs_low is not None else obs,
        obs_high if obs_high is not None else obs,
        next_obs,
        reward,
        unc,
        terminal,
        n,
        penalty_coef=float(penalty_coef),
        E=e,
        D=d,
        DP=dp,
        DISAGREEMENT=uncertainty == "disagreement",
        HAS_LOW=obs_low is not None,
        HAS_HIGH=obs_high is not None,
        BLOCK_R=EPILOGUE_BLOCK_R,
        **({} if interpret else dict(num_warps=EPILOGUE_NUM_WARPS)),
    )
    return StepOutput(next_obs, reward, unc, terminal.view(torch.bool))


def rollout_step_triton(
    params: EnsembleParams,
    obs: torch.Tensor,
    act: torch.Tensor,
    noise: torch.Tensor,
    member: torch.Tensor,
    penalty_coef: float = 0.0,
    obs_low: torch.Tensor | None = None,
    obs_high: torch.Tensor | None = None,
    uncertainty: Uncertainty = "aleatoric",
) -> StepOutput:
    """``rollout_step`` with the Triton kernels, matmuls in IEEE float32.

    Same arguments, shapes (``obs [N, D]``, ``act [N, A]``, ``noise [N, D+1]`` float32,
    ``member [N]`` int32/int64), returns and semantics as ``rollout_step_reference``; not
    differentiable. Tensors on CUDA, or on the CPU with ``TRITON_INTERPRET=1``.

    Raises:
        ValueError: triton missing, CPU tensors without ``TRITON_INTERPRET=1``, an ensemble the
            kernel does not cover (no hidden layer, unequal hidden widths, widths > 256), a tensor
            that is not float32, or an unknown uncertainty.
    """
    return _rollout_step_triton(
        params, obs, act, noise, member, penalty_coef, obs_low, obs_high, uncertainty, precision="ieee"
    )


def rollout_step_triton_tf32(
    params: EnsembleParams,
    obs: torch.Tensor,
    act: torch.Tensor,
    noise: torch.Tensor,
    member: torch.Tensor,
    penalty_coef: float = 0.0,
    obs_low: torch.Tensor | None = None,
    obs_high: torch.Tensor | None = None,
    uncertainty: Uncertainty = "aleatoric",
) -> StepOutput:
    """``rollout_step_triton`` with TF32 tensor-core matmuls (the fast mode; float32 under the
    interpreter). Same arguments, returns and errors as ``rollout_step_triton``."""
    return _rollout_step_triton(
        params, obs, act, noise, member, penalty_coef, obs_low, obs_high, uncertainty, precision="tf32"
    )
