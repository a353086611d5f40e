"""Run configurations as plain data, and the one rule that resolves a run's config.

A config is a frozen dataclass (fields documented under them; tyro turns them into flags). Every
entry point (``python -m algos.<name>``, ``experiments.sweep``, tests) resolves it the same way
(``resolve``): the dataset's preset, then a named budget preset (``fast``), then explicit flags.
Checkpoints and run records hold configs as plain dicts (``to_dict`` / ``from_dict``), so a saved
run does not depend on where its config class lives.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

C = TypeVar("C")

Budget = Callable[[Any], Any]
"""A budget preset: ``cfg -> cfg`` that changes only how much work a run does (updates, rollout batch,
evaluation, dynamics epochs, threads), never the algorithm's hyperparameters."""


def to_dict(obj) -> Any:
    """Dataclasses (nested), tuples and dicts to plain JSON-able values (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _convert(tp, value, where: str):
    """``value`` (plain data) as an instance of the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is tuple or tp is tuple:
        return tuple(value)
    return value


def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "config") -> C:
    """Rebuild a config dataclass (nested dataclasses and tuples included) from ``to_dict`` output.

    Fields missing from ``data`` take their defaults (a config saved before a field existed).
    Raises:
        ValueError: a key that is not a field of ``cls`` (names it and the valid fields), or a value the
            config's own checks reject.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}; valid: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def resolve(
    config_cls: type[C],
    presets: Mapping[str, C],
    budgets: Mapping[str, Budget],
    dataset: str | None = None,
    budget: str | None = None,
    overrides: Sequence[str] = (),
    default_dataset: str | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> C:
    """The config of a run, by the one rule every entry point uses:

    1. the preset of ``dataset`` (``presets[dataset]``; a dataset without one: the defaults with that
       dataset; no dataset: ``default_dataset``'s preset, else the defaults);
    2. the budget preset ``budget`` (``budgets[budget]``, e.g. ``"fast"``), applied to it;
    3. ``overrides``: command-line flags (``["--num-updates", "5000"]``), parsed by tyro against
       the result, so every field is a flag and ``--help`` shows the resolved values.

    Raises:
        ValueError: an unknown budget name (lists the valid ones), or bad values.
        SystemExit: from tyro on a malformed flag or ``--help``.
    """
    import tyro

    if budget is not None and budget not in budgets:
        raise ValueError(f"unknown preset {budget!r}; valid presets: {', '.join(sorted(budgets))}")
    key = dataset if dataset is not None else default_dataset
    if key is not None and key in presets:
        cfg = presets[key]
    else:
        cfg = config_cls() if key is None else dataclasses.replace(config_cls(), dataset=key)
    if budget is not None:
        cfg = budgets[budget](cfg)
    return tyro.cli(config_cls, args=list(overrides), default=cfg, prog=prog, description=description)


def changed_fields(a, b, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two configs of one class differ (nested dataclasses descended)."""
    out = []
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(x) and dataclasses.is_dataclass(y):
            out += changed_fields(x, y, f"{prefix}{f.name}.")
        elif x != y:
            out.append(prefix + f.name)
    return out
