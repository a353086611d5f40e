"""The dynamics ensemble: fits a known system, picks elites by holdout error, saves/reloads
exactly, and is reused (or refused) by fit_or_load."""

from dataclasses import replace

import pytest
import torch

from engine.batch import Batch
from engine.dynamics import DynamicsConfig, EnsembleDynamics, fit_or_load
from tests.conftest import TINY_DYN

SMALL = DynamicsConfig(
    num_members=3, num_elites=2, hidden_dim=32, num_layers=2, weight_decays=(1e-5, 1e-5, 1e-5), max_epochs=40, seed=1
)


def toy_system(n: int, seed: int) -> Batch:
    """A smooth 3-d system with one action: s' = s + 0.1 sin(s) + 0.2 a, r = s_0 - a^2."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g)
    act = torch.rand(n, 1, generator=g) * 2 - 1
    nxt = obs + 0.1 * torch.sin(obs) + 0.2 * act
    rew = obs[:, 0] - act[:, 0] ** 2
    return Batch(obs, act, rew, nxt, torch.zeros(n))


def test_fits_toy_system_and_picks_elites():
    torch.set_num_threads(1)
    data = toy_system(3001, seed=0)
    dyn = EnsembleDynamics(3, 1, SMALL)
    metrics = dyn.fit(data, progress=False)
    # Target variance is ~1 for the reward and ~0.05 for the deltas: an MSE under 0.01 means the
    # model explains >95% of it after 40 short epochs.
    assert metrics["dynamics/holdout_mse"] < 0.01
    # Fresh test data from the same system: the elite means predict it too.
    test = toy_system(513, seed=7)
    mean, logvar = dyn.model(dyn.model.normalize(test.obs, test.act))
    target = torch.cat([test.next_obs - test.obs, test.rew[:, None]], -1)
    mse = (mean - target).pow(2).mean((1, 2))
    assert mse[dyn.elites].mean() < 0.01
    # Elites are the members with the lowest holdout error (sorted indices).
    assert dyn.elites.numel() == 2 and torch.all(dyn.elites[1:] > dyn.elites[:-1])
    assert metrics["dynamics/holdout_mse"] <= metrics["dynamics/holdout_mse_all"] + 1e-9


def test_save_load_identical_predictions(tmp_path):
    data = toy_system(700, seed=2)
    dyn = EnsembleDynamics(3, 1, SMALL.__class__(**{**SMALL.__dict__, "max_epochs": 2}))
    dyn.fit(data, progress=False)
    dyn.save(tmp_path / "dyn.pt", dataset_id="toy")
    again, meta = EnsembleDynamics.load(tmp_path / "dyn.pt")
    x = dyn.model.normalize(data.obs[:9], data.act[:9])
    for a, b in zip(dyn.model(x), again.model(x)):
        assert torch.equal(a, b)
    assert torch.equal(dyn.elites, again.elites) and meta["dataset_id"] == "toy"


def test_fit_or_load_reuses_and_refuses_mismatch(tmp_path):
    cfg = DynamicsConfig(**{**SMALL.__dict__, "max_epochs": 1})
    data = toy_system(600, seed=3)
    d1, info1 = fit_or_load(data, "toy/a-v0", cfg, cache_dir=tmp_path, progress=False)
    d2, info2 = fit_or_load(data, "toy/a-v0", cfg, cache_dir=tmp_path, progress=False)
    assert not info1["reused"] and info2["reused"] and info1["path"] == info2["path"]
    assert torch.equal(d1.model.layers[0].weight, d2.model.layers[0].weight)
    other = toy_system(600, seed=4)
    with pytest.raises(ValueError, match="was trained on 'toy/a-v0'"):
        fit_or_load(other, "toy/b-v0", cfg, path=info1["path"])
    wide = Batch(torch.randn(600, 5), torch.randn(600, 1), torch.randn(600), torch.randn(600, 5), torch.zeros(600))
    with pytest.raises(ValueError, match="dims"):
        fit_or_load(wide, "toy/a-v0", cfg, path=info1["path"])


def test_a_shipped_ensemble_is_checked_on_the_local_data_and_used_instead_of_a_fit(tmp_path, monkeypatch):
    from engine import dynamics

    cfg = replace(SMALL, max_epochs=15)
    data = toy_system(1500, seed=5)
    fitted, info = fit_or_load(data, "toy/a-v0", cfg, cache_dir=tmp_path / "made", progress=False)
    shipped_dir = tmp_path / "shipped"
    shipped_dir.mkdir()
    name = f"toy_a-v0-{dynamics.config_hash(cfg)}.pt"
    (shipped_dir / name).write_bytes((tmp_path / "made" / info["path"].split("/")[-1]).read_bytes())
    monkeypatch.setattr(dynamics, "SHIPPED_DIR", shipped_dir)
    assert dynamics.shipped_ensemble("toy/a-v0", cfg) == shipped_dir / name
    # Other bytes from the same system (as another CPU would generate): no fit, the shipped one after a check.
    local = toy_system(1500, seed=6)
    monkeypatch.setattr(EnsembleDynamics, "fit", lambda *a, **k: pytest.fail("fitted instead of using the shipped one"))
    dyn, got = fit_or_load(local, "toy/a-v0", cfg, cache_dir=tmp_path / "cache", progress=False)
    assert got["reused"] and got["shipped"] == name
    assert got["check_mse"] <= dynamics.SHIPPED_TOLERANCE * got["dynamics/holdout_mse"]
    assert torch.equal(dyn.model.layers[0].weight, fitted.model.layers[0].weight)
    assert (tmp_path / "cache").is_dir() and fit_or_load(local, "toy/a-v0", cfg, cache_dir=tmp_path / "cache")[1][
        "reused"
    ]  # now in the cache
    # Data the shipped model does not fit (another system): a warning, and a fit.
    monkeypatch.undo()
    monkeypatch.setattr(dynamics, "SHIPPED_DIR", shipped_dir)
    wrong = Batch(local.obs, local.act, local.rew * -3.0 + 2.0, local.obs - local.next_obs, local.terminal)
    with pytest.warns(UserWarning, match="fitting a new one"):
        _, refit = fit_or_load(wrong, "toy/a-v0", cfg, cache_dir=tmp_path / "cache2", progress=False)
    assert not refit["reused"] and "shipped" not in refit


def test_bad_data_rejected():
    dyn = EnsembleDynamics(3, 1, SMALL)
    data = toy_system(600, seed=5)
    bad = Batch(data.obs.clone(), data.act, data.rew, data.next_obs, data.terminal)
    bad.obs[10, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        dyn.fit(bad, progress=False)
    with pytest.raises(ValueError, match="do not match the ensemble"):
        dyn.fit(Batch(torch.randn(600, 4), data.act, data.rew, torch.randn(600, 4), data.terminal), progress=False)
    with pytest.raises(ValueError, match="num_elites"):
        EnsembleDynamics(3, 1, DynamicsConfig(num_members=3, num_elites=4))
    with pytest.raises(ValueError, match="not a readable simloop dynamics checkpoint"):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".pt") as f:
            f.write(b"garbage")
            f.flush()
            EnsembleDynamics.load(f.name)


def test_fit_or_load_path_reloads_identical_predictions_and_refuses_changed_data(tmp_path):
    """``--dynamics PATH``: the ensemble saved by a fit comes back through ``fit_or_load(path=...)``
    with the same predictions and elites and without training; the same dataset id with other
    content (hash) is refused."""
    cfg = DynamicsConfig(**{**SMALL.__dict__, "max_epochs": 2})
    data = toy_system(650, seed=8)
    trained, info = fit_or_load(data, "toy/a-v0", cfg, cache_dir=tmp_path / "cache", progress=False)
    again, info2 = fit_or_load(data, "toy/a-v0", cfg, cache_dir=tmp_path / "elsewhere", path=info["path"])
    assert info2["path"] == info["path"] and not (tmp_path / "elsewhere").exists()
    x = trained.model.normalize(data.obs[:33], data.act[:33])
    for a, b in zip(trained.model(x), again.model(x)):
        assert torch.equal(a, b)  # same weights, same normaliser, same code: bit-identical
    assert torch.equal(trained.elites, again.elites)
    changed = Batch(data.obs, data.act, data.rew + 1.0, data.next_obs, data.terminal)
    with pytest.raises(ValueError, match="hash"):
        fit_or_load(changed, "toy/a-v0", cfg, path=info["path"])


def test_decay_in_optimiser_takes_the_steps_of_decay_in_loss():
    """``train_step`` (decay applied by Adam's weight_decay per layer) follows plain Adam on the full
    loss with the decay term, step for step."""
    torch.manual_seed(3)
    cfg = DynamicsConfig(**{**SMALL.__dict__, "weight_decays": (0.3, 0.2, 0.1)})  # large: visible if dropped
    fast = EnsembleDynamics(3, 1, cfg)
    ref = EnsembleDynamics(3, 1, cfg)
    ref.model.load_state_dict(fast.model.state_dict())
    opt, ref_opt = fast.make_optimizer(), torch.optim.Adam(ref.model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        x, y = torch.randn(3, 17, 4, generator=g), torch.randn(3, 17, 4, generator=g)
        fast.train_step(opt, x, y)
        loss, _ = ref.loss(x, y)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
    for (name, a), b in zip(fast.model.named_parameters(), ref.model.parameters()):
        # The same gradient summed in another order: float32 rounding, amplified by Adam's
        # normalisation over 5 steps of lr 1e-3, stays far below one step (1e-3).
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# Wiring of fit's model selection: the elites are the lowest-holdout-MSE members, and each member leaves fit with
# the weights of its own best epoch. Expectations come from quantities recorded or recomputed here, not from the
# initial weights, so the tests hold whatever the initialisation (they never use the global torch RNG).
# ---------------------------------------------------------------------------------------------------------------


def _holdout_rows(n: int, cfg: DynamicsConfig) -> torch.Tensor:
    """fit's holdout split, reproduced: the first min(int(n * ratio), max_holdout) indices of a randperm drawn from a
    generator seeded with cfg.seed."""
    num_holdout = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
    return torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))[:num_holdout]


def _member_mse(dyn: EnsembleDynamics, data: Batch, rows: torch.Tensor) -> torch.Tensor:
    """Per-member MSE of the predicted mean of [delta obs, reward] on ``rows``, in float64, computed here."""
    with torch.no_grad():
        mean, _ = dyn.model(dyn.model.normalize(data.obs[rows], data.act[rows]))
    target = torch.cat([data.next_obs[rows] - data.obs[rows], data.rew[rows, None]], -1)
    return (mean.double() - target.double()).pow(2).mean((1, 2))


def test_elites_are_exactly_the_lowest_holdout_mse_members(monkeypatch):
    """Five members, two elites; members 0 and 2 are held at their initial weights throughout (reset after every
    training step), so they are the worst by construction. The elites must be the two members with the lowest
    holdout MSE, recomputed here on the reproduced holdout split: neither the first two members (0 contains a
    frozen one) nor the two worst (0 and 2) can pass."""
    cfg = replace(TINY_DYN, num_members=5, num_elites=2, max_epochs=3, batch_size=32, seed=3)
    data = toy_system(401, seed=11)
    dyn = EnsembleDynamics(3, 1, cfg)
    frozen = [0, 2]
    init = {k: v.clone() for k, v in dyn.model.state_dict().items() if k.startswith("layers.")}
    train_step, holdout_mse = dyn.train_step, dyn.holdout_mse
    evaluated = []

    def frozen_step(opt, x, y):
        train_step(opt, x, y)
        with torch.no_grad():
            for k, v in dyn.model.state_dict().items():  # state_dict tensors share the parameters' storage
                if k in init:
                    v[frozen] = init[k][frozen]

    def recording_holdout_mse(x, y):
        evaluated.append(x.clone())
        return holdout_mse(x, y)

    monkeypatch.setattr(dyn, "train_step", frozen_step)
    monkeypatch.setattr(dyn, "holdout_mse", recording_holdout_mse)
    metrics = dyn.fit(data, progress=False)

    hold = _holdout_rows(len(data), dyn.cfg)
    # fit evaluated on exactly that split (same elementwise normalisation of the same rows: bit-identical).
    assert all(torch.equal(x, dyn.model.normalize(data.obs[hold], data.act[hold])) for x in evaluated)
    mse = _member_mse(dyn, data, hold)
    order = torch.argsort(mse)
    expected = order[:2].sort().values.tolist()
    assert dyn.elites.tolist() == expected, (mse, dyn.elites)
    # Not vacuous: the frozen members are the two worst, the answer is not the first two members, and the 2nd and
    # 3rd best differ by far more than float32 rounding (1e-6 relative), so the ranking is unambiguous.
    assert mse[frozen].min() > mse[[1, 3, 4]].max()
    assert expected != [0, 1] and set(expected).isdisjoint(frozen)
    assert mse[order[2]] - mse[order[1]] > 1e-4 * mse[order[1]]
    # The reported holdout MSE is the elites' mean (float32 in fit, float64 here: 1e-5 relative).
    assert metrics["dynamics/holdout_mse"] == pytest.approx(float(mse[expected].mean()), rel=1e-5)


def test_each_member_keeps_the_weights_of_its_best_epoch(monkeypatch):
    """Member 1's weights are spoiled (large noise) right after epoch 2, so its holdout MSE jumps and stays above its
    epoch-1 value, while members 0 and 2 keep improving through epoch 4. Recording the weights and per-member holdout
    MSE at every evaluation, each member must leave fit with the snapshot of its own best epoch, under fit's
    documented rule (a member's best moves only on a relative improvement above ``improvement``, 1%): member 1 its
    epoch-1 weights, bit for bit, although the others were saved later (a per-member, not whole-model, save)."""
    cfg = replace(TINY_DYN, max_epochs=4, batch_size=32, seed=4)
    data = toy_system(401, seed=12)
    dyn = EnsembleDynamics(3, 1, cfg)
    spoiled, spoil_epoch, last = 1, 2, cfg.max_epochs
    noise = torch.Generator().manual_seed(5)
    holdout_mse = dyn.holdout_mse
    snapshots, mses = [], []

    def recording_holdout_mse(x, y):
        call = len(mses)  # 0: before training, k: after epoch k, last + 1: fit's final evaluation
        if call == spoil_epoch:  # the member got worse during this epoch
            with torch.no_grad():
                for layer in dyn.model.layers:
                    layer.weight[spoiled] += torch.randn(layer.weight.shape[1:], generator=noise)
        mse = holdout_mse(x, y)
        if call <= last:
            snapshots.append({k: v.clone() for k, v in dyn.model.state_dict().items() if k.startswith("layers.")})
            mses.append(mse.clone())
        return mse

    monkeypatch.setattr(dyn, "holdout_mse", recording_holdout_mse)
    dyn.fit(data, progress=False)
    assert len(mses) == last + 1  # no early stop in 4 epochs (patience 5)

    best_epoch = []
    for e in range(cfg.num_members):
        best, at = mses[0][e], 0
        for epoch in range(1, last + 1):
            if (best - mses[epoch][e]) / best > cfg.improvement:
                best, at = mses[epoch][e], epoch
        best_epoch.append(at)
    # Not vacuous: the spoiled member's best is before the spoiling, the others' is the last epoch.
    assert best_epoch[spoiled] < spoil_epoch and all(best_epoch[e] == last for e in (0, 2)), (best_epoch, mses)
    final = {k: v for k, v in dyn.model.state_dict().items() if k.startswith("layers.")}
    for e, at in enumerate(best_epoch):
        for k, v in final.items():
            assert torch.equal(v[e], snapshots[at][k][e]), (e, at, k)
    assert not torch.equal(final["layers.0.weight"][spoiled], snapshots[last]["layers.0.weight"][spoiled])
    # And each member's holdout MSE is its best epoch's again: the same weights and inputs, recomputed here in
    # float64 against fit's float32 reduction (1e-5 relative covers float32 summation over 80 x 4 errors).
    hold = _holdout_rows(len(data), dyn.cfg)
    torch.testing.assert_close(
        _member_mse(dyn, data, hold),
        torch.stack([mses[at][e] for e, at in enumerate(best_epoch)]).double(),
        rtol=1e-5,
        atol=0,
    )


class _Killed(Exception):
    """Stands for the process being killed in the middle of a fit."""


def test_a_killed_fit_resumes_where_it_stopped_and_ends_as_the_uninterrupted_fit(tmp_path, monkeypatch):
    """fit_or_load keeps the fit's state beside the cache file after every epoch. A fit killed in its 5th epoch
    (its 3rd minibatch) and called again continues from the end of epoch 4 and ends with exactly the weights,
    elites and epoch count of a fit that was never interrupted; the state file is gone once the ensemble is saved.
    Early stopping is part of the resumed state: patience 1 with improvement 0.1 stops this fit by its own rule."""
    torch.set_num_threads(1)
    cfg = replace(TINY_DYN, max_epochs=12, batch_size=64, patience=1, improvement=0.1, seed=3)
    data = toy_system(1001, seed=5)
    whole, info = fit_or_load(data, "toy/whole-v0", cfg, cache_dir=tmp_path / "whole", progress=False)
    assert 5 < info["dynamics/epochs"] < 12  # stopped by the patience rule, after the kill point below

    steps_per_epoch = (1001 - 200) // 64
    calls, real_step = [0], EnsembleDynamics.train_step

    def killed_in_epoch_5(self, opt, x, y):
        calls[0] += 1
        if calls[0] == 4 * steps_per_epoch + 3:
            raise _Killed
        real_step(self, opt, x, y)

    monkeypatch.setattr(EnsembleDynamics, "train_step", killed_in_epoch_5)
    with pytest.raises(_Killed):
        fit_or_load(data, "toy/whole-v0", cfg, cache_dir=tmp_path / "resumed", progress=False)
    (state,) = (tmp_path / "resumed").glob("*.fit_state")
    assert torch.load(state, weights_only=True)["epoch"] == 4
    monkeypatch.setattr(EnsembleDynamics, "train_step", real_step)
    resumed, info_resumed = fit_or_load(data, "toy/whole-v0", cfg, cache_dir=tmp_path / "resumed", progress=False)
    assert not state.exists() and not info_resumed["reused"]
    assert info_resumed["dynamics/epochs"] == info["dynamics/epochs"]
    assert info_resumed["dynamics/holdout_mse"] == info["dynamics/holdout_mse"]
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_fit_state_of_another_fit_is_refused_and_kept(tmp_path):
    """A state file saved for other data or another config is not silently used or overwritten."""
    torch.set_num_threads(1)
    data = toy_system(401, seed=2)
    state = tmp_path / "fit_state"
    EnsembleDynamics(3, 1, replace(TINY_DYN, max_epochs=1, seed=0)).fit(data, False, state, state_key="a")
    saved = state.read_bytes()
    with pytest.raises(ValueError, match="saved for another fit.*key 'a'.*key 'b'"):
        EnsembleDynamics(3, 1, replace(TINY_DYN, seed=0)).fit(data, False, state, state_key="b")
    with pytest.raises(ValueError, match="4 members"):
        other = replace(TINY_DYN, num_members=4, num_elites=2, seed=0)
        EnsembleDynamics(3, 1, other).fit(data, False, state, state_key="a")
    assert state.read_bytes() == saved
