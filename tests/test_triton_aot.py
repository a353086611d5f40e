"""bench.triton_aot: the Triton kernels compile ahead of time for sm_90 (a kernel change that does not compile, or
that makes tf32 spill, fails here rather than on the first GPU), and the table's arithmetic."""

from dataclasses import asdict

import pytest

from bench import triton_aot as aot
from kernels import rollout_step_triton as rst


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
@pytest.mark.parametrize("precision", ["ieee", "tf32"])
def test_a_pickable_forward_candidate_compiles_for_sm90(precision):
    """The first candidate autotuning may pick per precision, at the HalfCheetah/Walker2d shape (one compile each,
    ~5-10 s on an idle core; instant from Triton's cache)."""
    pytest.importorskip("triton")
    shape = next(s for s in aot.env_shapes() if "halfcheetah" in s.envs)
    _, kp, _ = rst.padded_widths(shape.obs_dim, shape.act_dim, shape.hidden_dim)
    config = next(c for c in rst.FORWARD_CONFIGS if rst.may_pick(c, precision, kp))
    row = aot.compile_job(aot.Job("forward", shape, 90, precision, asdict(config), True))
    assert "error" not in row, row["error"]
    assert row["registers"] > 0 and row["warps_per_sm"] >= config.num_warps
    if precision == "tf32":
        assert row["spill_stores"] == 0 and row["tensor_core_ops"] > 0
    else:
        assert row["tensor_core_ops"] == 0  # IEEE float32: FFMA on the CUDA cores


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
def test_epilogue_compiles_for_sm90():
    pytest.importorskip("triton")
    shape = aot.env_shapes()[0]
    job = next(j for j in aot.jobs([shape], [90], ["tf32"]) if j.kernel == "epilogue")
    row = aot.compile_job(job)
    assert "error" not in row, row["error"]
    assert row["spill_stores"] == 0


def test_autotuning_is_pruned_to_the_pickable_candidates():
    """``_prune`` (the autotuner's ``early_config_prune``) keeps exactly ``may_pick``'s candidates, in order."""
    pytest.importorskip("triton")
    assert rst._import_triton()
    configs = [
        rst.triton.Config({"BLOCK_M": c.block_m, "BLOCK_K": c.block_k}, num_warps=c.num_warps, num_stages=c.num_stages)
        for c in rst.FORWARD_CONFIGS
    ]
    for precision in ("ieee", "tf32"):
        kept = rst._prune(configs, {}, PRECISION=precision, KP=256)
        assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_K"], c.num_warps) for c in kept] == [
            (c.block_m, c.block_k, c.num_warps) for c in rst.PICKABLE[precision]
        ]
        assert 0 < len(kept) < len(configs)  # the spilling candidates are pruned
    narrow = rst._prune(configs, {}, PRECISION="tf32", KP=16)  # K slices no wider than the padded width
    assert narrow and all(c.kwargs["BLOCK_K"] <= 16 for c in narrow)


def test_env_shapes_come_from_the_env_specs_and_the_dynamics_defaults():
    shapes = {s.envs: s for s in aot.env_shapes()}
    assert set(shapes) == {("halfcheetah", "walker2d"), ("hopper",)}  # equal (D, A) compile once
    cheetah = shapes["halfcheetah", "walker2d"]
    assert (cheetah.num_members, cheetah.obs_dim, cheetah.act_dim, cheetah.hidden_dim) == (7, 17, 6, 200)
    assert shapes["hopper",].obs_dim == 11 and cheetah.num_layers == 4


def test_jobs_cover_every_candidate_target_and_precision():
    job_list = aot.jobs(aot.env_shapes(), [90, 80], ["ieee", "tf32"])
    forward = [j for j in job_list if j.kernel == "forward"]
    assert len(forward) == 2 * 2 * 2 * len(rst.FORWARD_CONFIGS)
    assert len(job_list) - len(forward) == 2 * 2 * 2  # epilogue: shapes x targets x uncertainty kinds


def test_occupancy_follows_the_occupancy_calculator():
    h100 = aot.ARCHS[90]
    # 255 registers -> 256 per thread, 8,192 per warp: 8 warps by registers
    assert aot.occupancy(255, 0, 4, h100) == (8, "registers")
    # 128 registers and 40 KiB: registers allow 16 warps (two 8-warp blocks), shared memory five blocks
    assert aot.occupancy(128, 40 * 1024, 8, h100) == (16, "registers")
    # 96 KiB + 1 KiB reserved per block: two blocks on sm_90, one on sm_80
    assert aot.occupancy(64, 96 * 1024, 4, h100) == (8, "shared memory")
    assert aot.occupancy(64, 96 * 1024, 4, aot.ARCHS[80]) == (4, "shared memory")
    assert aot.occupancy(32, 300 * 1024, 4, h100) == (0, "shared memory")  # over the per-block maximum
    assert aot.occupancy(32, 0, 1, h100) == (32, "blocks")


def _row(**kw):
    row = dict(kernel="forward", envs="hopper", arch="sm_90", precision="tf32", block_m=64, block_k=32)
    row.update(num_warps=8, num_stages=2, may_pick=True, registers=128, stack_bytes=0, spill_stores=0)
    row.update(spill_loads=0, shared_bytes=81920, tensor_core_ops=12, warps_per_sm=16, occupancy_limit="registers")
    row.update(kw)
    return row


def test_verdict_fails_on_pickable_candidates_that_spill_or_do_not_fit_and_on_compile_errors():
    assert aot.verdict([_row(), _row(may_pick=False, spill_stores=9), _row(may_pick=False, warps_per_sm=0)]) == []
    assert len(aot.verdict([_row(spill_stores=2)])) == 1
    assert len(aot.verdict([_row(precision="ieee", spill_stores=2)])) == 1
    assert "does not fit" in aot.verdict([_row(warps_per_sm=0)])[0]
    broken = dict(kernel="epilogue", envs="hopper", arch="sm_80", precision="aleatoric", error="PTXASError: x")
    assert aot.verdict([broken]) == ["epilogue hopper sm_80 aleatoric: PTXASError: x"]


def test_section_is_rewritten_between_markers_and_the_rest_kept(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nearlier text\n")
    rows = [_row(), _row(precision="ieee", may_pick=False, spill_stores=5, tensor_core_ops=0)]
    aot.write_section(results, aot.render(rows, "2026-12-06, test CPU", 1.0, 1))
    first = results.read_text()
    assert first.startswith("# Results\n\nearlier text\n") and first.count(aot.BEGIN) == 1
    assert "| hopper | sm_90 | tf32 | 64 | 32 | 8 | 2 | yes | 128 |" in first
    results.write_text(first + "\nlater text\n")
    aot.write_section(results, aot.render(rows[:1], "2026-12-07, test CPU", 1.0, 1))
    second = results.read_text()
    assert second.count(aot.BEGIN) == 1 and "2026-12-07" in second and "2026-12-06" not in second
    assert second.endswith("later text\n") and "earlier text" in second
