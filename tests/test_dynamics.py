"""The dynamics ensemble: fits a known system, picks elites by holdout error, saves/reloads
exactly, and is reused (or refused) by fit_or_load."""

import pytest
import torch

from engine.buffer import Batch
from engine.dynamics import DynamicsConfig, EnsembleDynamics, fit_or_load

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
