"""engine.harness.RunHarness, directly: the non-finite stop (NaN, +inf and -inf, in a logged metric and in the
agent's state), resume (the checkpoint's step, wall time and earlier evaluations; a checkpoint of the layout
written before the harness), the fresh-run refusal, the thread count and the summary."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch

from engine import checkpoint
from engine.harness import RunHarness, nonfinite_key


@dataclass(frozen=True)
class Cfg:
    dataset: str = "simloop/hopper/medium-v0"
    seed: int = 3
    num_threads: int = 1
    num_updates: int = 30
    eval_episodes: int = 2
    lr: float = 1e-3
    out: str | None = None
    progress: bool = False


CONTROL = ("num_updates", "num_threads", "progress")
NON_FINITE = [float("nan"), float("inf"), float("-inf")]


def _agent(seed: int = 0) -> dict:
    """An agent state as checkpoints hold them: nested state dicts of fresh random tensors, one integer tensor."""
    g = torch.Generator().manual_seed(seed)
    return {
        "actor": {"trunk.0.weight": torch.randn(7, 5, generator=g), "trunk.0.bias": torch.randn(7, generator=g)},
        "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3}]},
        "counts": torch.arange(4),
    }


def _fresh(tmp_path, **kw) -> RunHarness:
    return RunHarness("toy", Cfg, Cfg(out=str(tmp_path / "run"), **kw), None, CONTROL)


@pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "+inf", "-inf"])
def test_a_non_finite_train_metric_stops_the_run_naming_it_and_the_steps(bad, tmp_path):
    with _fresh(tmp_path) as run:
        run.step = 10
        run.log({"train/loss": torch.tensor(0.5), "eval/normalized_score": 12.0})
        run.checkpoint({"agent": _agent(), "gen": torch.Generator().get_state()})
        run.step = 20
        with pytest.raises(
            FloatingPointError,
            match=r"non-finite train/critic_loss in the updates of steps 11-20: .*last checkpoint \(step 10\)",
        ):
            run.log({"train/loss": 0.4, "train/critic_loss": torch.tensor(bad)})
        assert checkpoint.load(run.dir / "checkpoint.pt")["step"] == 10  # the last checkpoint is kept
        assert not math.isfinite(run.log({"eval/return_mean": bad})["eval/return_mean"])  # only train/* stops a run


@pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "+inf", "-inf"])
def test_a_non_finite_agent_tensor_stops_the_checkpoint_naming_the_tensor(bad, tmp_path):
    with _fresh(tmp_path) as run:
        run.step = 10
        run.checkpoint({"agent": _agent(), "gen": torch.Generator().get_state()})
        before = (run.dir / "checkpoint.pt").read_bytes()
        agent = _agent()
        agent["actor"]["trunk.0.weight"][6, 4] = bad  # one entry of seven by five
        run.step = 20
        with pytest.raises(
            FloatingPointError,
            match=r"non-finite values in the agent's actor/trunk.0.weight at step 20: .*last checkpoint \(step 10\)",
        ):
            run.checkpoint({"agent": agent, "gen": torch.Generator().get_state()})
        assert (run.dir / "checkpoint.pt").read_bytes() == before  # nothing written


def test_nonfinite_key_walks_nested_states_and_ignores_other_values():
    state = _agent()
    assert nonfinite_key(state) is None
    state["opt"]["param_groups"][0]["lr"] = math.inf  # a float, not a tensor: not looked at
    assert nonfinite_key(state) is None
    state["opt"]["state"][0]["step"] = torch.tensor(math.inf)
    assert nonfinite_key(state) == "opt/state/0/step"
    assert nonfinite_key([torch.ones(3), torch.tensor([1.0, math.nan])]) == "1"


def test_resume_continues_step_wall_time_and_evaluations(tmp_path):
    with _fresh(tmp_path) as run:
        for step, score in ((10, 30.0), (20, 50.0)):
            run.step = step
            run.log({"train/loss": 1.0, "eval/normalized_score": score})
        run.checkpoint({"agent": _agent(), "gen": torch.Generator().get_state()})
        run.step = 30
        run.log({"eval/normalized_score": 99.0})  # logged after the checkpoint: dropped on resume
    saved = checkpoint.load(run.dir / "checkpoint.pt", "toy")
    assert saved["config"]["lr"] == 1e-3 and saved["step"] == 20 and saved["wall_s"] > 0
    with RunHarness("toy", Cfg, Cfg(out=str(run.dir), num_updates=40), str(run.dir), CONTROL) as resumed:
        assert resumed.step == 20 and resumed.cfg.num_updates == 40 and resumed.ckpt["agent"].keys() == _agent().keys()
        assert resumed.evals == [(10, 30.0), (20, 50.0)]
        assert resumed.wall_s() >= saved["wall_s"]
        resumed.step = 40
        summary = resumed.summary(
            {
                "eval/normalized_score": 40.0,
                "eval/normalized_score_std": 1.0,
                "eval/return_mean": 400.0,
                "eval/return_std": 10.0,
            },
            "hopper",
            41.2,
            {"objective": "mse"},
        )
    assert summary["best_eval_normalized_score"] == 50.0 and summary["best_eval_step"] == 20  # before the resume
    assert summary["num_updates"] == 40 and summary["objective"] == "mse" and summary["run_dir"] == str(run.dir)
    assert json.loads((run.dir / "summary.json").read_text()) == summary
    with pytest.raises(ValueError, match="fields differ from it: lr"):
        RunHarness("toy", Cfg, Cfg(out=str(run.dir), lr=1.0), str(run.dir), CONTROL)
    with pytest.raises(ValueError, match=r"at step 20, past --num-updates 10"):
        RunHarness("toy", Cfg, Cfg(out=str(run.dir), num_updates=10), str(run.dir), CONTROL)


def test_a_checkpoint_of_the_layout_before_the_harness_resumes(tmp_path):
    """The layouts the run loops wrote themselves (format 2): model-based (with ``model_buffer``), BC, and
    behaviour training (no ``wall_s``; its config without fields added since). Each resumes with its own keys."""
    buffer = {"data": [torch.randn(4, 3)], "ptr": 0, "size": 4}
    layouts = {
        "mb": {"model_buffer": buffer, "wall_s": 12.5},
        "bc": {"wall_s": 12.5},
        "behavior": {"buffer": buffer, "rng": {"state": 1}, "episode": 3, "env_state": {"obs": torch.zeros(11)}},
    }
    for name, own in layouts.items():
        run_dir = tmp_path / name
        config = {"dataset": "simloop/hopper/medium-v0", "seed": 3, "num_threads": 1, "num_updates": 30, "lr": 1e-3}
        state = {"algo": "toy", "config": config, "agent": _agent(), "gen": torch.Generator().get_state(), "step": 20}
        run_dir.mkdir()
        torch.save({"format": 2, **state, **own}, run_dir / "checkpoint.pt")
        with RunHarness("toy", Cfg, None, str(run_dir), CONTROL) as run:
            assert run.step == 20 and run.cfg == Cfg(out=None) and run.prior_wall == own.get("wall_s", 0.0)
            for key in own:
                assert key in run.ckpt, (name, key)
            assert torch.equal(run.ckpt["agent"]["actor"]["trunk.0.weight"], _agent()["actor"]["trunk.0.weight"])


def test_a_fresh_run_refuses_a_run_directory_and_writes_its_config(tmp_path):
    with _fresh(tmp_path) as run:
        config = json.loads((run.dir / "config.json").read_text())
        assert config["algo"] == "toy" and config["lr"] == 1e-3 and "command" in config
        run.step = 10
        run.checkpoint({"agent": _agent(), "gen": torch.Generator().get_state()})
    with pytest.raises(FileExistsError, match="already holds a run: continue it with --resume"):
        _fresh(tmp_path)
    with pytest.raises(ValueError, match="a fresh run needs a config"):
        RunHarness("toy", Cfg, None)


def test_the_thread_count_is_set_for_the_run_and_restored(tmp_path):
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    run = _fresh(tmp_path, num_threads=other)
    assert torch.get_num_threads() == other
    run.checkpoint({"agent": _agent(), "gen": torch.Generator().get_state()})
    run.close()
    run.close()  # idempotent
    assert torch.get_num_threads() == before
    with pytest.raises(FileExistsError):  # a failed start leaves the thread count as it was too
        _fresh(tmp_path, num_threads=other)
    assert torch.get_num_threads() == before


def _subnormal_survives() -> bool:
    """Whether float32 arithmetic on this thread keeps a subnormal (1e-39): False while flushed (FTZ/DAZ)."""
    return torch.tensor([1e-39]).mul(1.0).item() != 0.0


def test_subnormals_are_flushed_during_the_run_and_restored(tmp_path):
    assert _subnormal_survives()
    run = _fresh(tmp_path)
    if not run.flush_denormal:
        run.close()
        pytest.fail("this CPU cannot flush subnormals (torch.set_flush_denormal returned False); the harness needs x86")
    assert not _subnormal_survives()
    run.checkpoint({"agent": _agent(), "gen": torch.Generator().get_state()})
    run.close()
    assert _subnormal_survives()
    with pytest.raises(FileExistsError):  # a failed start leaves them as they were too
        _fresh(tmp_path)
    assert _subnormal_survives()


def test_out_as_a_run_control_field_follows_the_resumed_directory(tmp_path):
    with _fresh(tmp_path) as run:
        run.checkpoint({"agent": _agent(), "gen": torch.Generator().get_state()})
    moved = tmp_path / "moved"
    (run.dir / "checkpoint.pt").rename(tmp_path / "checkpoint.pt")
    moved.mkdir()
    (tmp_path / "checkpoint.pt").rename(moved / "checkpoint.pt")
    with RunHarness("toy", Cfg, None, str(moved), (*CONTROL, "out")) as resumed:
        assert resumed.dir == moved and resumed.cfg.out == str(moved)
    with RunHarness("toy", Cfg, None, str(moved), CONTROL) as resumed:
        assert resumed.cfg.out == str(run.dir)  # not a run-control field: the saved config as it is


def test_validate_stops_a_run_before_anything_is_written(tmp_path):
    def refuse(cfg):
        raise ValueError(f"no such dataset {cfg.dataset!r}")

    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match="no such dataset 'simloop/hopper/medium-v0'"):
        RunHarness("algo", Cfg, Cfg(out=str(tmp_path / "run")), validate=refuse)
    assert not (tmp_path / "run").exists() and torch.get_num_threads() == threads


@pytest.mark.parametrize("algo", ["mopo", "bc"])
def test_an_unknown_dataset_id_makes_no_run_directory(algo, tmp_path):
    from algos import algo_module

    mod = algo_module(algo)
    cfg = mod.Config(dataset="simloop/ant/medium-v0", out=str(tmp_path / "run"), num_updates=5)
    with pytest.raises(ValueError, match="unknown dataset 'simloop/ant/medium-v0'.*simloop ids: .*hopper"):
        mod.train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_second_process_in_a_run_directory_is_refused_and_changes_nothing(tmp_path):
    """While a run trains, a resume of its directory (another process's, or the same one's, by mistake) is refused
    with RunInUseError naming the owner's pid, before its logger could drop the rows after its checkpoint; once the
    run closes, the resume goes ahead. Two fresh runs into one new directory are refused alike."""
    import os

    from engine.harness import RunInUseError

    run = _fresh(tmp_path)
    run.step = 10
    run.log({"train/loss": 0.5})
    run.checkpoint({"agent": _agent(), "gen": torch.Generator().get_state()})
    run.step = 20
    run.log({"train/loss": 0.4})  # a row after the checkpoint, which a resume would drop
    rows = (run.dir / "metrics.csv").read_text()
    with pytest.raises(RunInUseError, match=rf"in use: process {os.getpid()} is training there"):
        RunHarness("toy", Cfg, None, run.dir, CONTROL)
    assert (run.dir / "metrics.csv").read_text() == rows
    with pytest.raises(FileExistsError):  # the CLI's clean error path catches it as such
        RunHarness("toy", Cfg, None, run.dir, CONTROL)
    run.close()
    with RunHarness("toy", Cfg, None, run.dir, CONTROL) as resumed:
        assert resumed.step == 10
    other = RunHarness("toy", Cfg, Cfg(out=str(tmp_path / "new")), None, CONTROL)
    with pytest.raises(RunInUseError):
        RunHarness("toy", Cfg, Cfg(out=str(tmp_path / "new")), None, CONTROL)
    other.close()
