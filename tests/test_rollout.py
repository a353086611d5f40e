"""The rollout engine: fixed shapes, masks after termination, penalty against a hand
computation, and the model buffer."""

import pytest
import torch

from engine.batch import Batch
from engine.buffer import ReplayBuffer
from engine.rollout import RolloutConfig, RolloutEngine, rollout_metrics
from kernels import EnsembleParams, rollout_step


def make_engine(horizon, lam, low=None, high=None, seed=0):
    p = EnsembleParams.random(5, 11, 3, 64, num_layers=2, seed=seed, num_elites=3)
    w = torch.randn(11, 3, generator=torch.Generator().manual_seed(seed))
    policy = lambda o: torch.tanh(o @ w)  # noqa: E731 - a fixed deterministic policy
    gen = torch.Generator().manual_seed(seed + 1)
    return p, policy, RolloutEngine(p, policy, low, high, RolloutConfig(horizon, lam), gen)


def test_shapes_and_penalty_match_step_by_step_computation():
    p, policy, eng = make_engine(horizon=4, lam=0.5, seed=3)
    start = torch.randn(33, 11)
    tr = eng.rollout(start)
    assert tr.obs.shape == (4, 33, 11) and tr.act.shape == (4, 33, 3) and tr.rew.shape == (4, 33)
    assert tr.valid.all()  # no termination box: every row stays valid
    # Replay the same draws by hand: same generator seed, same order (noise then member per step).
    g = torch.Generator().manual_seed(4)
    obs = start
    for t in range(4):
        act = policy(obs)
        noise = torch.randn(33, 12, generator=g)
        member = p.elites[torch.randint(3, (33,), generator=g)]
        out = rollout_step(p, obs, act, noise, member, penalty_coef=0.0)
        torch.testing.assert_close(tr.obs[t], obs)
        torch.testing.assert_close(tr.next_obs[t], out.next_obs)
        # Penalised reward = unpenalised reward - lambda * max_e ||std_e||.
        torch.testing.assert_close(tr.rew[t], out.reward - 0.5 * out.uncertainty)
        obs = out.next_obs
    m = rollout_metrics(tr, 0.5)
    torch.testing.assert_close(m["rollout/penalty_mean"], 0.5 * tr.uncertainty.mean())


def test_rows_masked_after_termination_not_dropped():
    low = torch.full((11,), -1.5)
    high = torch.full((11,), 1.5)
    _, _, eng = make_engine(horizon=6, lam=0.0, low=low, high=high, seed=5)
    tr = eng.rollout(torch.randn(101, 11) * 0.5)
    assert tr.valid.shape == (6, 101)
    assert tr.terminal.any(), "the box is tight enough that some rows must terminate"
    for r in range(101):
        ended = False
        for t in range(6):
            assert bool(tr.valid[t, r]) == (not ended)
            ended = ended or bool(tr.terminal[t, r])
    batch, valid = tr.flat()
    buf = ReplayBuffer(10_000, 11, 3)
    buf.add(batch, mask=valid)
    assert len(buf) == int(tr.valid.sum())
    assert torch.equal(buf.data.terminal[: len(buf)].bool(), tr.terminal[tr.valid])


def test_bad_start_obs_and_config():
    _, _, eng = make_engine(horizon=2, lam=0.0)
    with pytest.raises(ValueError, match=r"expected \[N, 11\]"):
        eng.rollout(torch.randn(4, 17))
    with pytest.raises(ValueError, match="horizon"):
        RolloutConfig(horizon=0)
    with pytest.raises(ValueError, match="penalty_coef"):
        RolloutConfig(penalty_coef=-1.0)


def test_model_buffer_keeps_the_last_rollouts():
    buf = ReplayBuffer(7, 2, 1)
    for k in range(3):
        n = 4
        b = Batch(
            torch.full((n, 2), float(k)),
            torch.zeros(n, 1),
            torch.arange(n).float() + 10 * k,
            torch.zeros(n, 2),
            torch.zeros(n),
        )
        buf.add(b)
    assert len(buf) == 7
    # 12 rows written into 7 slots: the last 7 rows (k=1 rows 1..3, k=2 rows 0..3) remain.
    assert sorted(buf.data.rew.tolist()) == [11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0]
    with pytest.raises(ValueError, match="do not match the buffer"):
        buf.add(Batch(torch.zeros(1, 3), torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 3), torch.zeros(1)))
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, 2, 1).sample(1)


def _rows(buf: ReplayBuffer) -> list[float]:
    return buf.data.rew[: len(buf)].tolist()


def _batch(rew: torch.Tensor) -> Batch:
    """Transitions of a 1-dim obs and action told apart by their rewards."""
    n = len(rew)
    return Batch(torch.zeros(n, 1), torch.zeros(n, 1), rew, torch.zeros(n, 1), torch.zeros(n))


def test_buffer_state_loads_into_another_capacity():
    """A run resumed with a larger --total-steps gets a larger buffer: the saved rows must keep
    their order and the next row must land after them, not on top of the oldest one."""
    ring = ReplayBuffer(5, 1, 1)
    ring.add(_batch(torch.arange(4).float()))
    ring.add(_batch(torch.arange(4, 7).float()))
    assert _rows(ring) == [5.0, 6.0, 2.0, 3.0, 4.0] and ring.ptr == 2  # wrapped

    same = ReplayBuffer(5, 1, 1)
    same.load_state_dict(ring.state_dict())
    assert _rows(same) == _rows(ring) and same.ptr == ring.ptr  # layout kept: sampling continues exactly

    larger = ReplayBuffer(8, 1, 1)
    larger.load_state_dict(ring.state_dict())
    assert _rows(larger) == [2.0, 3.0, 4.0, 5.0, 6.0]
    larger.add(_batch(torch.tensor([7.0])))
    assert _rows(larger) == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]

    smaller = ReplayBuffer(3, 1, 1)
    smaller.load_state_dict(ring.state_dict())
    assert _rows(smaller) == [4.0, 5.0, 6.0] and smaller.ptr == 0

    unwrapped = ReplayBuffer(10, 1, 1)
    unwrapped.add(_batch(torch.arange(4).float()))
    grown = ReplayBuffer(20, 1, 1)
    grown.load_state_dict(unwrapped.state_dict())
    assert _rows(grown) == [0.0, 1.0, 2.0, 3.0] and grown.ptr == 4
    empty = ReplayBuffer(3, 1, 1)
    empty.load_state_dict(ReplayBuffer(5, 1, 1).state_dict())
    assert len(empty) == 0 and empty.ptr == 0
