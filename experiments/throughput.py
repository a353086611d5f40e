"""Throughput chart of one pytest-benchmark JSON run (``python -m pytest bench --benchmark-enable
--benchmark-only --benchmark-autosave``): the throughputs each benchmark reports, one panel per benchmark
group and unit, each bar with its ratio to the slowest of its panel. The sweep's table command draws it."""

from __future__ import annotations

import json
import re
from pathlib import Path


def find_benchmark_json(benchmark_json: str | None) -> Path | None:
    """The given file, else the newest ``*.json`` under ./.benchmarks (pytest-benchmark's autosave folder)."""
    if benchmark_json is not None:
        return Path(benchmark_json)
    found = sorted(Path(".benchmarks").rglob("*.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


_RATE_RE = re.compile(r"^(?:(?P<provider>.+)_)?(?P<unit>[a-z]+)_per_s$")


def benchmark_rates(bench: dict) -> list[tuple[str, str, float]]:
    """``(label, unit, value)`` throughputs of one pytest-benchmark entry: each ``extra_info`` key
    ``[<provider>_]<unit>_per_s`` (wall clock; ``..._cpu`` keys are skipped), else 1 / median as calls/s."""
    info = bench.get("extra_info", {})
    size = f" (N={info['N']:,})" if isinstance(info.get("N"), int) else ""
    rates = []
    for key, value in info.items():
        m = _RATE_RE.match(key)
        if m is not None and isinstance(value, (int, float)):
            provider = f" [{m['provider']}]" if m["provider"] else ""
            rates.append((f"{bench['name']}{provider}{size}", f"{m['unit']}/s", float(value)))
    return rates or [(bench["name"] + size, "calls/s (1 / median)", 1.0 / bench["stats"]["median"])]


def throughput_plot(out_dir: Path, benchmark_json: str | None = None) -> Path | None:
    """Bar charts of one pytest-benchmark JSON run, one panel per benchmark group and unit
    (transitions/s, updates/s, ...): every benchmark's reported throughputs (``benchmark_rates``), each
    annotated with its ratio to the slowest bar of its panel (providers measured side by side). Writes
    ``out_dir/throughput.png`` and returns it; prints a note and returns None when there is no JSON (or it holds no
    timed benchmark): bench/RESULTS.md is prose for people, the JSON is the machine-readable record.

    Raises:
        FileNotFoundError: a given ``benchmark_json`` that does not exist.
    """
    path = find_benchmark_json(benchmark_json)
    if path is None:
        print(
            "note: no pytest-benchmark JSON found (./.benchmarks is empty); throughput plot skipped. Make one with: "
            "python -m pytest bench --benchmark-enable --benchmark-only --benchmark-autosave"
        )
        return None
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark JSON at {path}")
    run = json.loads(path.read_text())
    benches = [b for b in run.get("benchmarks", []) if b.get("stats")]
    if not benches:
        print(f"note: {path} holds no timed benchmarks (run with --benchmark-enable); throughput plot skipped")
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpu = run.get("machine_info", {}).get("cpu", {})
    panels: dict[str, list[tuple[str, float]]] = {}
    machines: dict[str, set[str]] = {}  # per panel: bench.conftest.machine() strings (they name the threads)
    for bench in benches:
        # One panel per benchmark group (pytest-benchmark's ``group``, else the test's name) and unit, so
        # each ratio compares providers measured side by side in one benchmark, never unrelated ones.
        group = bench.get("group") or bench["name"].split("[")[0]
        for label, unit, value in benchmark_rates(bench):
            if unit.startswith("calls/s"):  # a whole-procedure timing, not a throughput
                continue
            key = f"{unit} | {group}"
            panels.setdefault(key, []).append((label, value))
            machines.setdefault(key, set()).add(bench.get("extra_info", {}).get("machine") or cpu.get("brand_raw", ""))
    heights = [0.45 * len(bars) + 1.1 for bars in panels.values()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, sum(heights) + 0.6), height_ratios=heights, squeeze=False)
    for ax, (unit, bars) in zip(axes[:, 0], panels.items()):
        labels, values = [b[0] for b in bars], [b[1] for b in bars]
        rects = ax.barh(labels, values, color="tab:blue")
        for rect, v in zip(rects, values):
            text = f" {v:,.0f} (x{v / min(values):.2f})"
            ax.text(rect.get_width(), rect.get_y() + rect.get_height() / 2, text, va="center", fontsize=8)
        ax.set_xlabel(unit.split(" | ")[0])
        ax.set_title(f"{unit.split(' | ')[1]}: " + "; ".join(sorted(machines[unit])), fontsize=8)
        ax.set_xlim(0, max(values) * 1.4)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"throughput, pytest-benchmark run {path.name}", fontsize=9)
    fig.tight_layout()
    out = out_dir / "throughput.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
