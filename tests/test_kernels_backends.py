"""Every ``kernels.rollout_step`` backend against the torch reference on fresh random inputs:
odd sizes, both uncertainty kinds, healthy boxes, NaN/inf rows; the dispatch rules; the TF32
mode's error against float32.

Tolerances: every backend computes in float32 but sums in another order than the reference
(MKL's blocked GEMM, Triton's / NumPy's dot, the closed-form soft-clamped variance instead of
softplus-log-exp), so results differ by float32 rounding accumulated over 2-5 layers of width
<= 200. Measured over the cases below: at most 9.5e-7 absolute (cpu) and 4.8e-7 (triton,
interpreter) on outputs of magnitude <= ~6; ``rtol = atol = 2e-5`` leaves >10x headroom and still
catches a wrong term (sampling another member moves every row's next_obs by >= 0.05 here).
``terminal`` must match exactly except for rows whose reference ``next_obs`` lies within that
tolerance of a bound, where rounding may flip the comparison.
"""

import itertools
import math

import pytest
import torch

from bench.tf32_error import reference_tf32
from kernels import EnsembleParams, rollout_step
from kernels.rollout_step import BACKENDS, rollout_step_reference
from kernels.rollout_step_cpu import rollout_step_cpu

TOL = 2e-5
TRITON_BACKENDS = ("triton", "triton-tf32")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run single-threaded: the cpu backend issues E x layers small GEMMs per chunk, and where the
    machine's other cores are busy each multi-threaded call can wait a scheduler time slice for its
    second thread (measured here: 16 ms for a 7-row ``addmm`` with 2 threads, 37 us with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_case(n, e, d, a, k, num_layers, seed, member_dtype=torch.int64, bad_rows=True):
    """Random ensemble (log-variance bounds drawn so both sides of the soft clamp are exercised)
    and inputs; rows 2-6 get NaN/inf in obs, act and noise when ``bad_rows`` and ``n >= 7``; a
    +-2.5 healthy box."""
    g = torch.Generator().manual_seed(seed)
    p = EnsembleParams.random(e, d, a, k, num_layers=num_layers, seed=seed, num_elites=max(1, e - 2))
    p = EnsembleParams(
        p.weights,
        p.biases,
        p.in_mean,
        p.in_std,
        torch.randn(d + 1, generator=g),
        torch.randn(d + 1, generator=g) - 4.0,
        p.elites,
    )
    obs = torch.randn(n, d, generator=g)
    act = torch.rand(n, a, generator=g) * 2 - 1
    noise = torch.randn(n, d + 1, generator=g)
    member = p.elites[torch.randint(p.elites.numel(), (n,), generator=g)].to(member_dtype)
    if bad_rows and n >= 7:
        obs[2, d // 2] = math.nan
        obs[3, 0] = math.inf
        act[4, a - 1] = -math.inf
        noise[5, d] = math.nan
        noise[6, 0] = math.inf
    box = (torch.full((d,), -2.5), torch.full((d,), 2.5))
    return p, (obs, act, noise, member), box


def assert_matches(out, ref, box):
    torch.testing.assert_close(out.next_obs, ref.next_obs, rtol=TOL, atol=TOL)
    torch.testing.assert_close(out.reward, ref.reward, rtol=TOL, atol=TOL)
    torch.testing.assert_close(out.uncertainty, ref.uncertainty, rtol=TOL, atol=TOL)
    assert out.terminal.dtype == torch.bool
    margin = TOL * (1 + ref.next_obs.abs())
    near = ((ref.next_obs - box[0]).abs() < margin) | ((ref.next_obs - box[1]).abs() < margin)
    ok = (out.terminal == ref.terminal) | near.any(-1)
    assert ok.all(), f"terminal differs in rows {torch.nonzero(~ok).flatten().tolist()}"


def check_backend(backend, case, kind, device="cpu"):
    p, (obs, act, noise, member), box = case
    ref = rollout_step_reference(p, obs, act, noise, member, 0.7, *box, kind)
    if device != "cpu":
        p, obs, act, noise, member = p.to(device), obs.to(device), act.to(device), noise.to(device), member.to(device)
        box = (box[0].to(device), box[1].to(device))
    out = rollout_step(p, obs, act, noise, member, 0.7, *box, kind, backend=backend)
    out = type(out)(*(t.cpu() for t in out))
    assert_matches(out, ref, (box[0].cpu(), box[1].cpu()))
    n = obs.shape[0]
    if n >= 7:  # the NaN/inf rows are made safe exactly as in the reference
        bad = torch.zeros(n, dtype=torch.bool)
        bad[2:7] = True
        assert torch.equal(torch.isinf(out.uncertainty), bad) and out.terminal[bad].all()
        assert torch.isfinite(out.next_obs).all() and torch.isfinite(out.reward).all()
        assert (out.reward[bad] == 0).all()


# The full product of the sizes: N in (1, 7, 1000), E in (1, 5, 7), (D, A) of Hopper and
# HalfCheetah/Walker2d, K in (64, 200).
CPU_CASES = [
    (n, e, d, a, k) for n, e, (d, a), k in itertools.product((1, 7, 1000), (1, 5, 7), ((11, 3), (17, 6)), (64, 200))
]


@pytest.mark.parametrize("kind", ["aleatoric", "disagreement"])
@pytest.mark.parametrize("n,e,d,a,k", CPU_CASES)
def test_cpu_matches_reference(n, e, d, a, k, kind):
    seed = n + 10 * e + 100 * d + k
    case = make_case(
        n, e, d, a, k, num_layers=4 if k == 200 else 2, seed=seed, member_dtype=(torch.int32, torch.int64)[seed % 2]
    )
    check_backend("cpu", case, kind)


@pytest.mark.parametrize("chunk_rows,n", [(5, 33), (96, 1000)])
def test_cpu_chunking(monkeypatch, chunk_rows, n):
    """Several chunks with a ragged last one (chunks are ``CHUNK_ROWS`` x threads rows: e.g. with one
    thread 33 = 6 * 5 + 3 and 1000 = 10 * 96 + 40) give the reference's result."""
    monkeypatch.setattr("kernels.rollout_step_cpu.CHUNK_ROWS", chunk_rows)
    check_backend("cpu", make_case(n, 5, 11, 3, 64, num_layers=3, seed=11), "aleatoric")
    check_backend("cpu", make_case(n, 5, 11, 3, 64, num_layers=3, seed=12), "disagreement")


@pytest.fixture(params=["interpret", "cuda"])
def triton_device(request, monkeypatch):
    """Triton kernels run by Triton's interpreter on CPU tensors (every machine), and compiled on
    CUDA tensors where a GPU exists."""
    pytest.importorskip("triton")
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        return "cuda"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    return "cpu"


# The interpreter runs each program in NumPy (~2-3 s for 33 rows x 7 members at K = 200), so only
# a few shapes: N=7, E=5, D=11, K=64; K=200 with several row blocks and a ragged last one
# (33 rows, 16-row blocks); a single row, single member, no hidden-to-hidden layer.
TRITON_CASES = [(7, 5, 11, 3, 64, 4), (33, 7, 17, 6, 200, 4), (1, 1, 11, 3, 64, 1), (9, 3, 17, 6, 200, 2)]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy warns on the NaN rows in the interpreter
@pytest.mark.parametrize("kind", ["aleatoric", "disagreement"])
@pytest.mark.parametrize("n,e,d,a,k,layers", TRITON_CASES)
def test_triton_matches_reference(triton_device, n, e, d, a, k, layers, kind):
    case = make_case(n, e, d, a, k, num_layers=layers, seed=n + e + k, member_dtype=(torch.int32, torch.int64)[n % 2])
    check_backend("triton", case, kind, triton_device)


# TF32 keeps 10 of float32's 23 mantissa bits, so each matmul input carries up to 2^-10 ~ 1e-3
# relative error, which largely averages out over the 200-term sums. Measured with truncation to TF32 on
# the MOPO-sized ensemble below (E=7, 4 x 200 SiLU, D=17, A=6, 256 rows, seeds 0-4): 1.0e-4 to
# 1.7e-4 on next_obs, 0.5e-4 to 1.2e-4 on reward, <1e-5 on uncertainty, errors normalised by
# max(1, |float32 value|). Bound: 1e-3 (~6x the worst seed).
TF32_BOUND = 1e-3


def rel_error(x, ref):
    return ((x - ref).abs() / ref.abs().clamp_min(1.0)).max().item()


def test_tf32_truncation_error_of_the_reference_is_bounded():
    """What TF32 costs on this network, measured on the CPU by emulating it in torch."""
    p, (obs, act, noise, member), _ = make_case(256, 7, 17, 6, 200, num_layers=4, seed=3, bad_rows=False)
    ref = rollout_step_reference(p, obs, act, noise, member, 0.7)
    emulated = reference_tf32(p, obs, act, noise, member, 0.7)
    errors = [rel_error(x, r) for x, r in zip(emulated, (ref.next_obs, ref.reward, ref.uncertainty))]
    assert 1e-5 < max(errors) < TF32_BOUND, errors


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_triton_tf32_error_against_fp32(triton_device):
    """triton-tf32 against triton (IEEE float32) on the same inputs. On CUDA this is the tensor-core
    error; under the interpreter both run in float32 NumPy (input_precision is ignored there), so the
    error is ~0 and the test checks that the fast mode computes the same function."""
    n = 256 if triton_device == "cuda" else 16
    p, (obs, act, noise, member), _ = make_case(n, 7, 17, 6, 200, num_layers=4, seed=3, bad_rows=False)
    args = [t.to(triton_device) for t in (obs, act, noise, member)]
    p = p.to(triton_device)
    fp32 = rollout_step(p, *args, 0.7, backend="triton")
    tf32 = rollout_step(p, *args, 0.7, backend="triton-tf32")
    errors = [rel_error(x.cpu(), r.cpu()) for x, r in zip(tf32[:3], fp32[:3])]
    assert max(errors) < (TF32_BOUND if triton_device == "cuda" else 1e-6), errors


def test_default_dispatch_picks_cpu_for_cpu_tensors(monkeypatch):
    p, args, _ = make_case(7, 3, 11, 3, 64, num_layers=2, seed=5)
    calls = []

    def spy(*a):
        calls.append(a)
        return rollout_step_cpu(*a)

    monkeypatch.setitem(BACKENDS, "cpu", spy)
    rollout_step(p, *args)
    assert len(calls) == 1
    assert {"reference", "cpu", "triton", "triton-tf32"} <= set(BACKENDS)


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_triton_on_cpu_without_interpreter_raises(monkeypatch, backend):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    p, args, _ = make_case(7, 3, 11, 3, 64, num_layers=2, seed=6)
    with pytest.raises(ValueError, match="runs on CUDA tensors; for CPU tensors set TRITON_INTERPRET=1"):
        rollout_step(p, *args, backend=backend)


def test_triton_missing_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr("kernels.rollout_step_triton._import_triton", lambda: False)
    p, args, _ = make_case(7, 3, 11, 3, 64, num_layers=2, seed=9)
    with pytest.raises(ValueError, match=r"triton is not installed \(pip install 'simloop\[gpu\]'\)"):
        rollout_step(p, *args, backend="triton")


def test_triton_rejects_shapes_it_does_not_cover(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    p, args, _ = make_case(7, 3, 11, 3, 64, num_layers=2, seed=7)
    uneven = EnsembleParams(
        (p.weights[0], p.weights[1][:, :, :32], p.weights[2][:, :32]),
        (p.biases[0], p.biases[1][:, :32], p.biases[2]),
        p.in_mean,
        p.in_std,
        p.max_logvar,
        p.min_logvar,
        p.elites,
    )
    uneven.validate()
    with pytest.raises(ValueError, match="equal hidden widths"):
        rollout_step(uneven, *args, backend="triton")
    check_backend("cpu", (uneven, args, (torch.full((11,), -2.5), torch.full((11,), 2.5))), "aleatoric")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_fast_backends_reject_float64(monkeypatch, backend):
    if backend == "triton":
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    p, (obs, act, noise, member), _ = make_case(7, 3, 11, 3, 64, num_layers=2, seed=8)
    with pytest.raises(ValueError, match="float32; obs is torch.float64"):
        rollout_step(p, obs.double(), act, noise, member, backend=backend)
