"""Native (C) helpers of the "cpu" rollout backend, built on first use with the system C compiler
and loaded with ctypes: no build step at install time, no torch headers.

It holds an AVX2 + FMA in-place SiLU (``kernels/csrc/silu.c``) for the rollout backend, faster than
ATen's ``F.silu``: ATen's vectorised SiLU calls Sleef's 1-ulp ``exp``; this one uses a degree-6
polynomial (Cephes' ``expf`` coefficients) with ~2 ulp error, which the backend's tolerances
against the reference absorb (tests/test_native.py measures it). Forward only: the dynamics ensemble's
training keeps ATen's SiLU and its backward. bench/RESULTS.md has the speeds, and the native backward that
was measured and dropped.

The shared library is cached under ``$SIMLOOP_CACHE_DIR`` (default ``$XDG_CACHE_HOME/simloop`` or
``~/.cache/simloop``) in a directory named by the hash of the source and the compiler command, so
an edited source or another compiler rebuilds. ``SIMLOOP_NATIVE=0`` turns the native path off;
without a C compiler, or on a CPU without AVX2/FMA, ``silu_`` falls back to ``F.silu`` and
``native_status()`` says why (the fallback warns once).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch.nn import functional as F

SOURCE = Path(__file__).with_name("csrc") / "silu.c"
CFLAGS = ("-O3", "-shared", "-fPIC", "-std=c11", "-fopenmp")


def cache_dir() -> Path:
    """Where built libraries live: ``$SIMLOOP_CACHE_DIR``, else ``$XDG_CACHE_HOME/simloop``, else
    ``~/.cache/simloop``."""
    if os.environ.get("SIMLOOP_CACHE_DIR"):
        return Path(os.environ["SIMLOOP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "simloop"


def build(out_dir: Path | None = None) -> Path:
    """Compile ``kernels/csrc/silu.c`` into a shared library (or return the cached one).

    Returns:
        Path of the ``.so``.
    Raises:
        RuntimeError: no C compiler (``$CC`` or ``cc``), not x86-64, or the compiler failed (its
            output is in the message).
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise RuntimeError(f"the native SiLU is AVX2 code for x86-64; this machine is {platform.machine()}")
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler: {cc!r} is not on PATH (set CC to one)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((cc, *CFLAGS)).encode()).hexdigest()[:16]
    out_dir = (out_dir or cache_dir()) / f"native-{key}"
    lib = out_dir / "libsimloop_native.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".so", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        proc = subprocess.run([cc, *CFLAGS, str(SOURCE), "-o", str(tmp_path), "-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed to build {SOURCE.name} (exit {proc.returncode}):\n{proc.stderr.strip()}")
        os.replace(tmp_path, lib)  # atomic: a concurrent process sees either no file or the whole library
    finally:
        tmp_path.unlink(missing_ok=True)
    return lib


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("SIMLOOP_NATIVE", "1") == "0":
        return None, "turned off by SIMLOOP_NATIVE=0"
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as err:
        return None, f"not built: {err}"
    if not lib.simloop_cpu_supported():
        return None, "this CPU lacks AVX2 or FMA"
    lib.simloop_silu.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
    lib.simloop_silu.restype = None
    return lib, "AVX2 + FMA SiLU loaded"


def native_status() -> tuple[bool, str]:
    """``(available, reason)``: whether ``silu_`` runs the native kernel, and why (not) in words."""
    lib, why = _load()
    return lib is not None, why


@functools.cache
def _warn_fallback(why: str) -> None:
    warnings.warn(f"simloop: the native SiLU is unavailable ({why}); the cpu backend uses F.silu", stacklevel=3)


def silu_(x: torch.Tensor) -> torch.Tensor:
    """SiLU in place, ``x / (1 + exp(-x))`` (Elfwing et al. 2018; ``torch.nn.functional.silu``).

    Args:
        x: float32 CPU tensor, any shape; contiguous for the native kernel (else ``F.silu``).
    Returns:
        ``x`` (modified in place). Up to ~2 ulp from ``F.silu``; NaN, +-inf map as ``F.silu`` maps them.
    Raises:
        Nothing: without the native kernel it is ``F.silu(x, inplace=True)`` (a warning says why, once,
            unless ``SIMLOOP_NATIVE=0`` asked for it).
    """
    lib, why = _load()
    if lib is None or x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
        if lib is None and not why.startswith("turned off"):
            _warn_fallback(why)
        return F.silu(x, inplace=True)
    lib.simloop_silu(x.data_ptr(), x.data_ptr(), x.numel(), torch.get_num_threads())
    return x
