"""Training checkpoints as plain data: loadable with ``torch.load(weights_only=True)`` and independent of
where the code that wrote them lives.

A checkpoint is a dict::

    {"format": 2, "algo": "mopo", "config": {...plain dict...}, "agent": {...state dicts...},
     "model_buffer": {...} (absent in a slim checkpoint), "gen": ByteTensor, "step": int, "wall_s": float}

Checkpoints written before format 2 pickled the config object (``algos.mopo.Config``) under ``cfg``.
``load`` still reads them: it unpickles them with every simloop class replaced by a neutral record of its
fields (so nothing of simloop is imported or executed, and a module moved since does not matter), converts
the config to a plain dict, and warns.
"""

from __future__ import annotations

import pickle
import types
import warnings
from pathlib import Path

import torch

FORMAT = 2
"""Version of the checkpoint layout written by ``save``."""

_REQUIRED = {"algo", "config", "agent", "gen", "step"}
_OWN_PACKAGES = ("algos", "engine", "kernels", "bench")


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically: a temporary file beside it, then a rename, so a kill never leaves
    a truncated file; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def save(state: dict, path: str | Path) -> None:
    """Write ``state`` (plain data and tensors) to ``path`` atomically (``save_atomic``)."""
    save_atomic({"format": FORMAT, **state}, path)


class _Record:
    """Stands in for a simloop object (a pickled config) in a legacy checkpoint: keeps its class path and fields."""

    def __init__(self, *args):
        self.fields: dict = {}

    def __setstate__(self, state):
        self.fields = dict(state[1] if isinstance(state, tuple) else state)


def _plain(obj):
    if isinstance(obj, _Record):
        return {k: _plain(v) for k, v in obj.fields.items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] in _OWN_PACKAGES:
            return type(name, (_Record,), {"__module__": "legacy." + module})
        return super().find_class(module, name)


_legacy_pickle = types.SimpleNamespace(Unpickler=_LegacyUnpickler, load=pickle.load, __name__="legacy_pickle")


def _upgrade(old: dict, algo: str | None, path: Path) -> dict:
    cfg = old.pop("cfg")
    if algo is None:
        parts = type(cfg).__module__.split(".")  # legacy.algos.mopo
        algo = parts[-1] if len(parts) > 2 else None
    if algo is None:
        raise ValueError(f"{path}: a legacy checkpoint whose algorithm cannot be told; pass algo=")
    warnings.warn(
        f"{path} was written before checkpoints held plain data (format {FORMAT}); it was converted on load "
        "and the next checkpoint of the run is written in the new format",
        stacklevel=3,
    )
    return {"format": FORMAT, "algo": algo, "config": _plain(cfg), **old}


def load(path: str | Path, algo: str | None = None, map_location=None) -> dict:
    """Read a training checkpoint as plain data.

    Args:
        path: a ``checkpoint.pt``.
        algo: the algorithm expected (``"mopo"``); used to name a legacy checkpoint's algorithm and checked
            against a new one's.
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a training checkpoint (names the missing keys), or one of another algorithm.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # Format 1 pickled config objects, which weights_only refuses: read it with them neutralised.
        ckpt = torch.load(path, map_location=map_location, weights_only=False, pickle_module=_legacy_pickle)
        if not isinstance(ckpt, dict) or "cfg" not in ckpt:
            raise ValueError(f"{path} is not a training checkpoint (it holds objects other than plain data)") from None
        ckpt = _upgrade(ckpt, algo, path)
    if not isinstance(ckpt, dict) or not _REQUIRED <= set(ckpt):
        missing = sorted(_REQUIRED - set(ckpt)) if isinstance(ckpt, dict) else sorted(_REQUIRED)
        raise ValueError(f"{path} is not a training checkpoint (missing {', '.join(missing)})")
    if algo is not None and ckpt["algo"] != algo:
        raise ValueError(
            f"{path} is a checkpoint of a {ckpt['algo']!r} run, not {algo!r}: "
            f"resume it with python -m algos.{ckpt['algo']}"
        )
    return ckpt


def resume(
    run_dir: str | Path,
    algo: str,
    config_cls: type,
    cfg=None,
    run_control: tuple[str, ...] = (),
    budget: str = "num_updates",
    normalize=None,
):
    """The one resume rule of every run (model-based, BC, behaviour training): read ``run_dir/checkpoint.pt``
    and return ``(config in force, checkpoint)``.

    The config in force is the saved one (``cfg`` None), or ``cfg`` when it differs from the saved one only in
    ``run_control`` fields (how long and where the run goes: a larger ``budget`` extends it). ``normalize`` is
    applied to both configs before they are compared (e.g. filling in a seed that follows another field).

    Raises:
        FileNotFoundError: no checkpoint in ``run_dir``.
        ValueError: a checkpoint of another algorithm; ``cfg`` differs outside ``run_control`` (names the
            fields); ``cfg``'s budget is below the checkpoint's step.
    """
    from engine.config import changed_fields, from_dict

    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: no checkpoint.pt in {run_dir}")
    ckpt = load(path, algo)
    normalize = normalize or (lambda c: c)
    saved = normalize(from_dict(config_cls, ckpt["config"]))
    if cfg is None:
        return saved, ckpt
    cfg = normalize(cfg)
    other = [f for f in changed_fields(saved, cfg) if f not in run_control]
    if other:
        raise ValueError(
            f"a resumed run keeps its saved config; these fields differ from it: {', '.join(other)} "
            f"(only {', '.join(run_control)} may change on --resume)"
        )
    if getattr(cfg, budget) < ckpt["step"]:
        flag = "--" + budget.replace("_", "-")
        raise ValueError(
            f"the checkpoint is at step {ckpt['step']}, past {flag} {getattr(cfg, budget)}; "
            f"give at least {ckpt['step']}"
        )
    return cfg, ckpt


def slim(src: str | Path, dst: str | Path) -> Path:
    """Copy a run's ``checkpoint.pt`` without its model buffer (ARMOR on HalfCheetah: 218 MB -> ~9 MB), so that a
    long run can be carried to another machine (or kept in a repository) and continued there with
    ``--resume``: put the file as ``checkpoint.pt`` in a run directory. The agent, its optimisers, the random
    generator and the step are kept; the resumed run starts with one fresh rollout phase in the model buffer
    instead of the last ``model_retain_rollouts``. A legacy checkpoint is written in the current format.
    Returns ``dst``.

    Raises:
        FileNotFoundError: no file at ``src``.
        ValueError: ``src`` is not a training checkpoint.
    """
    ckpt = load(src)
    ckpt.pop("model_buffer", None)
    save(ckpt, dst)
    return Path(dst)
