"""The native AVX2 SiLU (kernels/native.py, kernels/csrc/silu.c): built here, accurate against
``F.silu`` over the float range and on the special values, threaded splits and ragged tails, the
fallback when it is turned off or cannot be built, and the cpu backend with and without it."""

import math
import platform
import shutil
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from kernels import native
from kernels.rollout_step import rollout_step_reference
from kernels.rollout_step_cpu import rollout_step_cpu
from tests.test_kernels_backends import assert_matches, make_case


def cpu_has_avx2_fma() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return " avx2" in flags and " fma" in flags


X86 = platform.machine().lower() in ("x86_64", "amd64")
CAN_BUILD = X86 and shutil.which("cc") is not None
needs_build = pytest.mark.skipif(not CAN_BUILD, reason="needs x86-64 and a C compiler")


@pytest.fixture
def fresh_native(monkeypatch):
    """Forget the loaded library before and after, so an environment change in the test takes effect
    (it asks for ``monkeypatch`` so that its teardown runs before the environment is restored)."""
    native._load.cache_clear()
    native._warn_fallback.cache_clear()
    yield
    native._load.cache_clear()
    native._warn_fallback.cache_clear()


def test_native_silu_is_built_and_loaded_on_this_kind_of_machine():
    """On x86-64 with a C compiler and AVX2 + FMA (these machines and CI) the native kernel must load:
    a broken build would otherwise only show as a slower benchmark."""
    if not CAN_BUILD or not cpu_has_avx2_fma():
        ok, why = native.native_status()
        assert not ok and why  # elsewhere: the fallback, with its reason
        return
    ok, why = native.native_status()
    assert ok, why


@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 1000, 200_003])
@pytest.mark.parametrize("threads", [1, 2])
def test_native_silu_matches_aten(n, threads):
    """Relative error <= 1e-6 (measured 2.5e-7, ~2 ulp) against float64 over N(0, 10^2) values and a sweep of
    magnitudes from 1e-30 to 1e4 of both signs; ragged lengths (scalar tail) and a 2-thread split."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g) * 10
    sweep = torch.logspace(-30, 4, 341)
    x[: min(n, 682)] = torch.cat([sweep, -sweep])[: min(n, 682)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = native.silu_(x.clone())
    finally:
        torch.set_num_threads(before)
    want = F.silu(x.double()).float()
    # relative, except where SiLU is below float32's smallest normal (x < -87: e^x underflows)
    excess = (got - want).abs() - (1e-6 * want.abs() + torch.finfo(torch.float32).tiny)
    assert excess.max() <= 0, f"error beyond 1e-6 relative at x = {x[excess.argmax()]:.6g}"


def test_native_silu_special_values_as_aten():
    x = torch.tensor([math.nan, math.inf, -math.inf, -100.0, -88.8, -88.6, 88.8, 100.0, 0.0, -0.0] * 2)
    got, want = native.silu_(x.clone()), F.silu(x)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    fin = ~torch.isnan(want)
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-6, atol=1e-37)


def test_non_contiguous_input_falls_back_to_aten():
    x = torch.randn(64, 33)[:, ::2]
    want = F.silu(x)
    got = native.silu_(x)
    assert got is x
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_turned_off_by_environment(monkeypatch, fresh_native):
    monkeypatch.setenv("SIMLOOP_NATIVE", "0")
    ok, why = native.native_status()
    assert not ok and "SIMLOOP_NATIVE=0" in why
    x = torch.randn(100)
    torch.testing.assert_close(native.silu_(x.clone()), F.silu(x), rtol=0, atol=0)


def test_missing_compiler_is_a_clear_error_and_the_fallback_warns(monkeypatch, fresh_native, tmp_path):
    monkeypatch.setenv("CC", "no-such-cc-simloop")
    monkeypatch.setenv("SIMLOOP_CACHE_DIR", str(tmp_path))
    if X86:
        with pytest.raises(RuntimeError, match="no-such-cc-simloop"):
            native.build(tmp_path)
    ok, why = native.native_status()
    assert not ok and "not built" in why
    x = torch.randn(100)
    with pytest.warns(UserWarning, match="native SiLU is unavailable"):
        got = native.silu_(x.clone())
    torch.testing.assert_close(got, F.silu(x), rtol=0, atol=0)


@needs_build
def test_compiler_failure_names_the_compiler_output(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "CFLAGS", (*native.CFLAGS, "-Wl,--no-such-linker-flag-simloop"))
    with pytest.raises(RuntimeError, match="failed to build silu.c"):
        native.build(tmp_path)
    assert not list(tmp_path.rglob("*.so")), "a failed build leaves no library behind"


@needs_build
def test_build_is_cached_by_source_and_flags(tmp_path):
    lib = native.build(tmp_path)
    mtime = lib.stat().st_mtime_ns
    assert native.build(tmp_path) == lib and lib.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("kind", ["aleatoric", "disagreement"])
def test_cpu_backend_with_and_without_native_silu_matches_reference(kind):
    p, (obs, act, noise, member), box = make_case(1000, 7, 17, 6, 200, num_layers=4, seed=5)
    want = rollout_step_reference(p, obs, act, noise, member, 0.7, *box, kind)
    for native_silu in (True, False):
        got = rollout_step_cpu(p, obs, act, noise, member, 0.7, *box, kind, native_silu=native_silu)
        assert_matches(got, want, box)
