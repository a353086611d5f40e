"""Command-line plumbing shared by the algorithm modules: preset selection on top of tyro,
and the short result table every run prints."""

from __future__ import annotations

from pathlib import Path

import tyro


def print_summary(summary: dict, run_dir: str | Path | None = None) -> None:
    """The short result table of a run."""
    rows = [
        ("dataset", summary["dataset"]),
        ("behaviour policy normalised score", f"{summary['behavior_normalized_score']:.1f}"),
        (
            f"{summary['algo'].upper()} normalised score",
            f"{summary['normalized_score']:.1f} ± {summary['normalized_score_std']:.1f} "
            f"({summary['eval_episodes']} episodes)",
        ),
        ("gradient steps", f"{summary['num_updates']:,}"),
        ("wall time", f"{summary['wall_s']:.0f} s"),
    ]
    if run_dir is not None:
        rows.append(("run directory", str(run_dir)))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))


def parse_cli(args: list[str], presets: dict, prog: str, description: str | None = None) -> tuple[object, str | None]:
    """``--fast`` / ``--preset KEY`` pick a preset (default: the preset of ``--dataset``, else the
    default dataset's), ``--resume DIR`` continues a run; every other flag overrides a field.

    Raises ValueError for an unknown preset, listing the valid keys.
    """
    args = list(args)
    resume = None
    if "--resume" in args:
        i = args.index("--resume")
        resume = args[i + 1]
        del args[i : i + 2]
    key = None
    if "--fast" in args:
        args.remove("--fast")
        key = "fast"
    if "--preset" in args:
        i = args.index("--preset")
        key = args[i + 1]
        del args[i : i + 2]
    if key is None:
        for i, a in enumerate(args):
            if a == "--dataset" and i + 1 < len(args):
                key = args[i + 1]
            elif a.startswith("--dataset="):
                key = a.split("=", 1)[1]
        if key is not None and key not in presets:
            key = None  # a dataset without a preset: defaults apply; the loader checks the id
    default_cls = type(next(iter(presets.values())))
    if key is not None and key not in presets:
        raise ValueError(f"unknown preset {key!r}; valid presets: {', '.join(sorted(presets))}")
    default = presets[key] if key is not None else default_cls()
    cfg = tyro.cli(default_cls, args=args, default=default, prog=prog, description=description)
    return cfg, resume


def run_cli(train, presets: dict, prog: str, description: str | None, argv: list[str] | None = None) -> dict:
    """The ``__main__`` of an algorithm module: parse (``parse_cli``), ``train(cfg, resume)``, print the table."""
    import sys

    try:
        cfg, resume = parse_cli(sys.argv[1:] if argv is None else argv, presets, prog, description)
        summary = train(cfg, resume)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        if argv is not None:  # called as a library: let the caller handle it
            raise
        sys.exit(f"{prog}: error: {e}")  # bad input from the command line: the message, status 1
    print_summary(summary, summary["run_dir"])
    return summary
