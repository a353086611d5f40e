"""bench.gpu_check without a GPU: its arguments, the JSON and RESULTS section it writes, and that a part that
raises, fails or overruns its budget is recorded while the check goes on."""

import json

import pytest

from bench import gpu_check


def _plan(*names: str, budget: float = 60) -> dict:
    """Parts from tests/gpu_check_parts.py: ``part_ok``, ``part_raises``, ``part_sleeps`` (120 s)."""
    return {n: gpu_check.Part(f"tests.gpu_check_parts:part_{n}", budget) for n in names}


def test_arguments_defaults_and_budget_overrides():
    args = gpu_check.parse_args([])
    assert list(args.plan) == ["parity", "throughput", "mjx", "mopo"]
    assert sum(p.budget_s for p in args.plan.values()) < 8 * 60
    args = gpu_check.parse_args(["--parts", "mopo", "parity", "--budget", "mopo=12.5", "--out", "x.json"])
    assert list(args.plan) == ["mopo", "parity"] and args.plan["mopo"].budget_s == 12.5
    assert args.plan["parity"].budget_s == gpu_check.PARTS["parity"].budget_s and str(args.out) == "x.json"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--budget", "warp=3"], "unknown part 'warp'"),
        (["--budget", "mopo=soon"], "expected PART=SECONDS"),
        (["--budget", "mopo=0"], "must be > 0"),
        (["--parts", "warp"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(argv)
    assert message in capsys.readouterr().err


def test_every_outcome_is_recorded_and_the_check_goes_on(tmp_path):
    out, results = tmp_path / "check.json", tmp_path / "RESULTS.md"
    results.write_text("# Results\n")
    plan = _plan("ok", "raises") | _plan("sleeps", budget=10)
    status = gpu_check.main(["--out", str(out), "--results", str(results)], parts=plan)
    assert status == 1
    doc = json.loads(out.read_text())
    parts = doc["parts"]
    assert list(parts) == ["ok", "raises", "sleeps"]
    assert parts["ok"]["status"] == "ok" and parts["ok"]["result"] == {"rows_per_s": 1.5e7}
    assert parts["raises"]["status"] == "failed" and parts["raises"]["error"] == "RuntimeError: no CUDA device"
    assert parts["sleeps"]["status"] == "timeout" and parts["sleeps"]["budget_s"] == 10
    assert parts["sleeps"]["result"] == {"measured": 1}  # what it had written before its budget ran out
    text = results.read_text()
    assert text.startswith("# Results\n") and gpu_check.BEGIN in text and gpu_check.END in text
    assert "| raises | failed |" in text and "| sleeps | timeout |" in text


def test_a_passing_check_exits_0_and_rewrites_its_section(tmp_path):
    out, results = tmp_path / "check.json", tmp_path / "RESULTS.md"
    results.write_text("# Results\n")
    assert gpu_check.main(["--out", str(out), "--results", str(results)], parts=_plan("ok")) == 0
    assert gpu_check.main(["--out", str(out), "--results", str(results)], parts=_plan("ok")) == 0
    assert results.read_text().count(gpu_check.BEGIN) == 1


def test_throughput_table_in_the_section():
    doc = dict(date="2026-12-06T12:00:00", machine="test", parts={})
    result = dict(device="H100", results=[dict(N=50_000, provider="triton-tf32", rows_per_s=6.2e7)], errors={})
    doc["parts"]["throughput"] = dict(status="ok", seconds=1.0, budget_s=110, result=result)
    section = gpu_check.render(doc)
    assert "| 50,000 | 62.00M |" in section


def test_the_gpu_parts_fail_cleanly_without_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        gpu_check.part_throughput()
