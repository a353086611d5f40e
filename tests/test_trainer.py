"""engine.trainer wiring that a wrong experiment would get wrong: seeds, exact resume, the penalty reaching the
model buffer, divergence stopping the run, and the records a run writes."""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import replace

import pytest
import torch

from algos import armor, combo, mopo
from engine import data, trainer
from engine import off_data as off_data_module
from engine import rollout as rollout_module
from engine.dynamics import data_hash
from engine.logger import RunLogger
from engine.nets import TanhGaussianActor
from engine.policy_io import save_policy
from engine.rollout import RolloutConfig
from engine.sac import SACConfig
from tests.conftest import TINY_RUN

SMALL_SAC = SACConfig(hidden_dims=(32, 32))


def tiny(module, dataset, out, **kw):
    """A tiny run of ``module``'s algorithm (2-step rollouts, small networks)."""
    fields = dict(dataset=dataset, out=str(out), rollout=RolloutConfig(horizon=2), **TINY_RUN)
    if module is mopo:
        fields.update(rollout=RolloutConfig(horizon=2, penalty_coef=0.5), sac=SMALL_SAC)
    elif module is combo:
        fields.update(sac=replace(combo.Config().sac, hidden_dims=(32, 32)), num_repeat_actions=3)
    else:
        fields.update(
            hidden_dims=(32, 32),
            reference_updates=50,
            critic_pretrain_updates=30,
            dynamics=replace(TINY_RUN["dynamics"], num_members=1, num_elites=1),
        )
    return replace(module.Config(**fields), **kw)


def _rows(path, drop_perf: bool = True) -> list[dict]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if not (drop_perf and k.startswith("perf/"))} for r in rows]


def _assert_same_state(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}/{i}")
    else:
        assert a == b, where


class Killed(Exception):
    """Stands for the process being killed."""


def _kill_after(monkeypatch, step: int) -> None:
    """Make the run die at its first metrics row after ``step`` (after the checkpoint at ``step`` was written)."""
    log = RunLogger.log

    def dying(self, s, metrics):
        if s > step:
            raise Killed
        return log(self, s, metrics)

    monkeypatch.setattr(RunLogger, "log", dying)


@pytest.mark.parametrize("module", [mopo, combo, armor], ids=["mopo", "combo", "armor"])
def test_a_killed_and_resumed_run_equals_an_unstopped_one(module, tiny_dataset, tmp_path, monkeypatch):
    """N updates straight == N/2, killed after its checkpoint, resumed to N: agent state, model buffer,
    generator, metrics rows (timings aside) and evaluation episodes, bit for bit."""
    straight = tmp_path / "straight"
    module.train(tiny(module, tiny_dataset, straight))
    stopped = tmp_path / "stopped"
    with monkeypatch.context() as m:
        _kill_after(m, 20)
        with pytest.raises(Killed):
            module.train(tiny(module, tiny_dataset, stopped))
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["step"] == 20
    if module is armor:  # the reference comes from the checkpoint: BC is not fitted again
        monkeypatch.setattr(armor, "fit_bc", lambda *a, **k: pytest.fail("a resumed ARMOR run refitted BC"))
    summary = module.train(None, resume=str(stopped))
    assert summary["num_updates"] == 40
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(stopped / "checkpoint.pt", weights_only=True)
    for key in ("agent", "model_buffer", "gen", "step"):
        _assert_same_state(a[key], b[key], key)
    assert _rows(straight / "metrics.csv") == _rows(stopped / "metrics.csv")
    assert _rows(straight / "episodes.csv") == _rows(stopped / "episodes.csv")


def test_a_resumed_armor_run_does_not_need_its_reference_file(tiny_dataset, tmp_path, monkeypatch):
    """A run carried to another machine (a slim checkpoint in the repository) continues there without the
    ``--reference`` policy file: the reference is part of the checkpoint."""
    ref = TanhGaussianActor(17, 6, (32, 32))  # HalfCheetah's dims, the tiny dataset's
    save_policy(ref, tmp_path / "ref.pt", "halfcheetah", algo="bc", objective="likelihood")
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _kill_after(m, 20)
        with pytest.raises(Killed):
            armor.train(tiny(armor, tiny_dataset, run, reference=str(tmp_path / "ref.pt")))
    (tmp_path / "ref.pt").unlink()
    assert armor.train(None, resume=str(run))["num_updates"] == 40
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["agent"]["reference"]
    _assert_same_state(saved, ref.state_dict(), "reference")  # the reference is fixed; the file's weights throughout


def test_actor_from_state_dict_reads_its_shape_and_refuses_other_states():
    actor = TanhGaussianActor(17, 6, (64, 48, 32))
    copy = TanhGaussianActor.from_state_dict(actor.state_dict())
    assert (copy.obs_dim, copy.act_dim, copy.hidden_dims) == (17, 6, (64, 48, 32))
    _assert_same_state(copy.state_dict(), actor.state_dict())
    with pytest.raises(ValueError, match="no trunk"):
        TanhGaussianActor.from_state_dict({"net.0.weight": torch.zeros(2, 2)})


def test_a_killed_and_resumed_bc_run_equals_an_unstopped_one(tiny_dataset, tmp_path, monkeypatch):
    """BC follows the same run lifecycle: killed after its checkpoint, resumed (and extended) by the same rule."""
    from algos import bc

    cfg = bc.Config(
        dataset=tiny_dataset,
        num_updates=40,
        batch_size=32,
        hidden_dims=(32, 32),
        eval_interval=20,
        eval_episodes=2,
        log_interval=10,
        checkpoint_interval=20,
        progress=False,
    )
    bc.train(replace(cfg, out=str(tmp_path / "straight")))
    stopped = tmp_path / "stopped"
    with monkeypatch.context() as m:
        _kill_after(m, 20)
        with pytest.raises(Killed):
            bc.train(replace(cfg, out=str(stopped)))
    saved = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 20 and saved["data_hash"] == data_hash(data.load(tiny_dataset).as_batch())
    assert bc.train(None, resume=str(stopped))["num_updates"] == 40
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(stopped / "checkpoint.pt", weights_only=True)
    _assert_same_state(a["agent"], b["agent"], "agent")
    assert _rows(tmp_path / "straight" / "metrics.csv") == _rows(stopped / "metrics.csv")
    assert _rows(tmp_path / "straight" / "episodes.csv") == _rows(stopped / "episodes.csv")
    extended = bc.train(replace(cfg, out=str(stopped), num_updates=60), resume=str(stopped))
    assert extended["num_updates"] == 60
    with pytest.raises(ValueError, match="fields differ from it: lr"):
        bc.train(replace(cfg, out=str(stopped), num_updates=80, lr=1e-2), resume=str(stopped))


def _first_steps(module, dataset, out, seed: int):
    """Initial actor weights and the first update's critic loss of a run, through the loop's own setup."""
    run = trainer.ModelBasedRun(module.ALGO, module.Config, tiny(module, dataset, out, seed=seed), module.make_agent)
    try:
        init = {k: v.clone() for k, v in run.agent.actor.state_dict().items()}
        run.rollout_phase()
        run.update()
        return init, float(run.sums["train/critic_loss"]), run.dyn_info
    finally:
        run.close()


def test_the_seed_decides_initial_weights_and_first_losses_and_a_cached_model_changes_nothing(tiny_dataset, tmp_path):
    init0, loss0, dyn0 = _first_steps(mopo, tiny_dataset, tmp_path / "a", seed=0)
    assert not dyn0["reused"]  # fitted here ...
    again, loss0_again, dyn0_again = _first_steps(mopo, tiny_dataset, tmp_path / "b", seed=0)
    assert dyn0_again["reused"]  # ... and taken from the cache here: the agent's init must not notice
    _assert_same_state(init0, again)
    assert loss0 == loss0_again
    init1, loss1, dyn1 = _first_steps(mopo, tiny_dataset, tmp_path / "c", seed=1)
    assert not dyn1["reused"]  # seed 1 fits its own ensemble (dynamics.seed follows the run's seed)
    assert not torch.equal(init0["trunk.0.weight"], init1["trunk.0.weight"])
    assert loss0 != loss1
    pinned = tiny(mopo, tiny_dataset, tmp_path / "d", seed=1)
    pinned = replace(pinned, dynamics=replace(pinned.dynamics, seed=0))
    run = trainer.ModelBasedRun("mopo", mopo.Config, pinned, mopo.make_agent)
    try:
        assert run.dyn_info["reused"] and run.dyn_info["path"] == dyn0["path"]  # --dynamics.seed 0 pins it
        _assert_same_state(init1, run.agent.actor.state_dict())  # and leaves the agent's init to --seed
    finally:
        run.close()


def _initial_weights(module, dataset, out, seed: int) -> dict:
    """The agent's actor and critic weights as the loop's setup builds them (nothing trained after)."""
    run = trainer.ModelBasedRun(module.ALGO, module.Config, tiny(module, dataset, out, seed=seed), module.make_agent)
    try:
        state = run.agent.state_dict()
        return {k: {n: t.clone() for n, t in state[k].items()} for k in ("actor", "critic")}
    finally:
        run.close()


def _every_weight_differs(a: dict, b: dict) -> bool:
    """Every weight matrix of state dict ``a`` differs from ``b``'s (and there is at least one)."""
    names = [n for n in a if n.endswith("weight")]
    return bool(names) and all(not torch.equal(a[n], b[n]) for n in names)


def test_the_seed_decides_armors_initial_critic_and_actor(tiny_dataset, tmp_path):
    """ARMOR's critics come from the run's seeding of the global generator, its actor from the BC reference."""
    seed0 = _initial_weights(armor, tiny_dataset, tmp_path / "a", seed=0)
    _assert_same_state(seed0, _initial_weights(armor, tiny_dataset, tmp_path / "b", seed=0))
    seed1 = _initial_weights(armor, tiny_dataset, tmp_path / "c", seed=1)
    for part in ("actor", "critic"):
        assert _every_weight_differs(seed0[part], seed1[part]), part


class _Built(Exception):
    """Raised by the recording learner below to stop ``bc.train`` at its first update (inside the run's ``try``,
    so the run closes its logger)."""


def test_the_seed_decides_bcs_initial_policy(tiny_dataset, tmp_path, monkeypatch):
    from algos import bc

    built = []

    class Recording(bc.BCLearner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append({n: t.clone() for n, t in self.actor.state_dict().items()})

        def step(self, batch, generator=None):
            raise _Built

    monkeypatch.setattr(bc, "BCLearner", Recording)
    cfg = bc.Config(dataset=tiny_dataset, hidden_dims=(32, 32), progress=False)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        with pytest.raises(_Built):
            bc.train(replace(cfg, out=str(tmp_path / name), seed=seed))
    _assert_same_state(built[0], built[1])
    assert _every_weight_differs(built[0], built[2])


def test_the_penalty_reaches_the_model_buffer(tiny_dataset, tmp_path, monkeypatch):
    """In a run with lambda > 0, the rows of the model buffer carry reward = model reward - lambda * u, with the
    model reward and u recomputed here from the same inputs, and the run's cfg.rollout is the engine's."""
    calls = []
    step = rollout_module.rollout_step

    def recording(params, obs, act, noise, member, penalty_coef, *args):
        out = step(params, obs, act, noise, member, penalty_coef, *args)
        calls.append((params, obs, act, noise, member, penalty_coef, args, out))
        return out

    monkeypatch.setattr(rollout_module, "rollout_step", recording)
    cfg = tiny(mopo, tiny_dataset, tmp_path / "run", rollout=RolloutConfig(horizon=2, penalty_coef=0.7))
    run = trainer.ModelBasedRun("mopo", mopo.Config, cfg, mopo.make_agent)
    try:
        assert all(e.cfg == cfg.rollout for e in run.engines)
        run.rollout_phase()
        assert len(calls) == cfg.rollout.horizon
        rewards, kept = [], []
        for params, obs, act, noise, member, lam, args, out in calls:
            assert lam == 0.7
            plain = step(params, obs, act, noise, member, 0.0, *args)  # the model's own reward, no penalty
            torch.testing.assert_close(out.reward, plain.reward - 0.7 * plain.uncertainty, rtol=0, atol=1e-5)
            assert bool((plain.uncertainty > 0).all())  # so the check above is not vacuous
            rewards.append(out.reward)
            kept.append(torch.isfinite(out.uncertainty))
        alive = torch.ones_like(kept[0])
        expected = []
        for t, (r, k) in enumerate(zip(rewards, kept)):  # rows kept: alive and finite, step by step
            expected.append(r[alive & k])
            alive = alive & ~calls[t][-1].terminal
        buffer_rew = run.model_buffer.data.rew[: len(run.model_buffer)]
        torch.testing.assert_close(buffer_rew, torch.cat(expected), rtol=0, atol=0)
    finally:
        run.close()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_diverging_run_stops_naming_the_step_and_keeps_its_last_checkpoint(bad, tiny_dataset, tmp_path, monkeypatch):
    """NaN and +inf each stop the run, in a metric and in a parameter (a check for NaN alone misses +inf)."""
    cfg = tiny(mopo, tiny_dataset, tmp_path / "run")
    update = mopo.MOPOAgent.update

    def diverging(self, real, model, generator):
        metrics = update(self, real, model, generator)
        if int(self.sac.critic_opt.state_dict()["state"][0]["step"]) > 25:  # from update 26 on
            metrics["train/critic_loss"] = torch.full_like(metrics["train/critic_loss"], bad)
        return metrics

    monkeypatch.setattr(mopo.MOPOAgent, "update", diverging)
    with pytest.raises(
        FloatingPointError, match=r"non-finite train/critic_loss in the updates of steps 21-30.*step 20"
    ):
        mopo.train(cfg)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 20
    monkeypatch.setattr(mopo.MOPOAgent, "update", update)

    def poison(self, real, model, generator):  # a parameter, not a metric, goes bad at update 20, just before
        metrics = update(self, real, model, generator)  # the checkpoint, so that no other value is NaN yet
        if int(self.sac.critic_opt.state_dict()["state"][0]["step"]) == 20:
            with torch.no_grad():
                self.actor.trunk[0].weight[0, 0] = bad
        return metrics

    monkeypatch.setattr(mopo.MOPOAgent, "update", poison)
    cfg2 = replace(cfg, out=str(tmp_path / "run2"), log_interval=40, eval_interval=40)
    with pytest.raises(FloatingPointError, match=r"non-finite values in the agent.s actor/trunk.0.weight at step 20"):
        mopo.train(cfg2)
    assert not (tmp_path / "run2" / "checkpoint.pt").exists()


def test_off_data_warning_names_the_step_the_fraction_and_what_to_run():
    quiet = {"eval/model_uncertainty_frac_beyond_p99": 0.02}
    assert off_data_module.off_data_warning(40, quiet, "runs/x") is None
    assert off_data_module.off_data_warning(40, {}, "runs/x") is None  # the MJX backend logs no probe
    message = off_data_module.off_data_warning(150_000, {"eval/model_uncertainty_frac_beyond_p99": 0.25}, "runs/w2d")
    assert message.startswith("step 150000: 25% of the evaluation's steps")
    assert "python -m experiments.diagnose runs/w2d" in message


def test_a_run_warns_at_each_evaluation_past_the_threshold(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(off_data_module, "OFF_DATA_WARN_FRAC", -1.0)  # every evaluation counts as off the data
    with pytest.warns(UserWarning, match="beyond the data's 99th-percentile") as caught:
        mopo.train(tiny(mopo, tiny_dataset, tmp_path / "run"))
    off_data = [str(w.message) for w in caught if "99th-percentile" in str(w.message)]
    assert [m.split(":")[0] for m in off_data] == ["step 20", "step 40"]  # the step-20 evaluation and the final one
    assert f"experiments.diagnose {tmp_path / 'run'}" in off_data[0]


def test_a_run_writes_its_records_and_restores_the_thread_count(tiny_dataset, tmp_path):
    before = torch.get_num_threads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = mopo.train(tiny(mopo, tiny_dataset, tmp_path / "run", num_threads=1 if before != 1 else 2))
    assert torch.get_num_threads() == before
    run = tmp_path / "run"
    episodes = _rows(run / "episodes.csv")
    assert [int(r["step"]) for r in episodes] == [20, 40]  # the step-20 evaluation and the final one
    assert [int(r["seed"]) for r in episodes] == [10_000, 10_000]
    final = [float(r["normalized_score"]) for r in episodes if r["step"] == "40"]
    assert summary["normalized_score"] == pytest.approx(sum(final) / len(final))
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["best_eval_normalized_score"] == max(float(r["normalized_score"]) for r in episodes)
    assert on_disk["machine"]["cpu"] and on_disk["machine"]["torch_threads"] in (1, 2)
    evals = [r for r in _rows(run / "metrics.csv") if r.get("eval/normalized_score")]
    assert len(evals) == 2
    for r in evals:  # where the policy goes against where the data is, under the model
        assert float(r["eval/model_uncertainty_mean"]) > 0 and float(r["eval/model_uncertainty_data_p99"]) > 0
        assert 0.0 <= float(r["eval/model_uncertainty_frac_beyond_p99"]) <= 1.0
    off_data = [str(w.message) for w in caught if "beyond the data's 99th-percentile" in str(w.message)]
    expected = [r["step"] for r in evals if float(r["eval/model_uncertainty_frac_beyond_p99"]) > 0.1]
    assert [m.split(":")[0] for m in off_data] == [f"step {s}" for s in expected]  # a warning for each, none else
    config = json.loads((run / "config.json").read_text())
    assert config["algo"] == "mopo" and config["rollout"]["penalty_coef"] == 0.5 and config["dynamics"]["seed"] == 0


@pytest.mark.parametrize("module", [mopo, combo], ids=["mopo", "combo"])
def test_a_cosine_actor_schedule_anneals_per_block_and_survives_a_kill(module, tiny_dataset, tmp_path, monkeypatch):
    """``--sac.actor-lr-schedule cosine``: the actor's rate is set at every rollout phase (20 updates apart here, of
    40: blocks 0 and 1, so actor_lr and actor_lr / 2) and the critics' rate stays. A run killed after its
    checkpoint at 30 (mid-block, where no rollout phase sets the rate) and resumed ends bit for bit as an unbroken
    one, its optimiser's rate included."""

    def cosine(out):
        cfg = tiny(module, tiny_dataset, out, checkpoint_interval=10)
        return replace(cfg, sac=replace(cfg.sac, actor_lr_schedule="cosine", actor_lr=1e-3))

    straight = tmp_path / "straight"
    module.train(cosine(straight))
    stopped = tmp_path / "stopped"
    with monkeypatch.context() as m:
        _kill_after(m, 30)
        with pytest.raises(Killed):
            module.train(cosine(stopped))
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["step"] == 30
    module.train(None, resume=str(stopped))
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["agent"]
    b = torch.load(stopped / "checkpoint.pt", weights_only=True)["agent"]
    _assert_same_state(a, b, "agent")
    assert a["actor_opt"]["param_groups"][0]["lr"] == pytest.approx(5e-4, rel=1e-12)
    assert a["critic_opt"]["param_groups"][0]["lr"] == cosine(straight).sac.critic_lr
