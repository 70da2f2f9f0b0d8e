"""Query pools, rewards and the random / adaptive query strategies (model stealing, part 2)."""
import numpy as np
import pytest

from configs.train_classifier import data_config
from rsec.stealing import rewards
from rsec.stealing.knockoff import KnockoffSpec, OnlineKnockoff
from rsec.stealing.query_sets import NATURAL_CHARACTERS, POOLS, build_pool
from rsec.stealing.strategies import (HierarchyBandit, collect, collect_adaptive,
                                      collect_random, targets_from_outputs)
from rsec.stealing.victim import Victim

import jax

DATA = data_config(1, 1)


@pytest.fixture(scope="module")
def pools():
  return {name: build_pool(name, 200, 3, DATA) for name in POOLS.names()}


def test_every_pool_is_valid_and_seeded(pools):
  for name, pool in pools.items():
    assert pool.images.shape == (200, 28, 28, 1) and pool.images.dtype == np.float32, name
    assert pool.images.min() >= 0 and pool.images.max() <= 1, name
    assert len(pool.parent) == len(pool.fine_names) and pool.fine.max() < len(pool.parent)
    assert pool.parent.max() + 1 == len(pool.coarse_names), name
  again = build_pool("natural", 200, 3, DATA)
  other = build_pool("natural", 200, 4, DATA)
  np.testing.assert_array_equal(again.images, pools["natural"].images)
  assert not np.array_equal(other.images, pools["natural"].images)


def test_natural_hierarchy_and_disjoint_variant(pools):
  nat, dis = pools["natural"], pools["natural_disjoint"]
  assert nat.coarse_names == ("upper", "lower", "digit")
  assert "".join(nat.fine_names) == NATURAL_CHARACTERS
  assert not set(DATA.characters) & set(dis.fine_names)
  for pool in (nat, dis):
    for leaf, ch in enumerate(pool.fine_names):
      kind = 0 if ch.isupper() else 1 if ch.islower() else 2
      assert pool.parent[leaf] == kind


def test_same_pool_never_holds_a_victim_training_image(pools):
  from rsec.data.sources import load_classification
  d = data_config(400, 1)
  train = load_classification(d, 0).train["image"]
  same = pools["same"].images
  dist = np.abs(same.reshape(len(same), 1, -1) - train.reshape(1, len(train), -1)).max(-1)
  assert dist.min() > 1e-3


def test_unknown_pool_is_refused():
  with pytest.raises(ValueError, match="query set"):
    build_pool("imagenet", 10, 0, DATA)


def test_rewards_are_finite_on_one_hot_rounded_and_constant_answers():
  k = 10
  one_hot = np.eye(k)[[0, 0, 3, 3]]
  rounded = np.round(np.full((4, k), 0.1) + np.eye(k)[[1, 2, 3, 4]] * 0.05, 1)
  assert np.allclose(rewards.certainty(one_hot), 1.0)
  assert np.allclose(rewards.certainty(np.full((2, k), 1 / k)), 0.0)
  huge = np.where(np.eye(k, dtype=bool)[[5, 6, 7, 8]], 1e4, -1e4)   # confident and wrong
  loss = rewards.loss(one_hot, huge)
  assert np.all(np.isfinite(loss)) and loss.min() > 1e3
  for name in rewards.REWARDS:
    tracker = rewards.RewardTracker(name, k, window=3)
    for y in (one_hot, one_hot, targets_from_outputs(rounded, "rounded")):
      r = tracker(y, huge)
      assert r.shape == (4,) and np.all(np.isfinite(r)), name
  # Identical answers: no spread in the history, so the z-normalised reward is 0, not NaN.
  tracker = rewards.RewardTracker("all", k)
  assert np.array_equal(tracker(one_hot[:1].repeat(4, 0), np.zeros((4, k))), np.zeros(4))
  with pytest.raises(ValueError, match="reward"):
    rewards.RewardTracker("entropy", k)
  with pytest.raises(ValueError, match="logits"):
    rewards.RewardTracker("loss", k)(one_hot, None)


def test_targets_from_outputs():
  out = np.array([[0.33, 0.33, 0.33, 0.0], [0.5, 0.2, 0.2, 0.1]], np.float32)
  t = targets_from_outputs(out, "rounded")
  np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(targets_from_outputs(out, "probs", "argmax"),
                                np.eye(4, dtype=np.float32)[[0, 0]])
  with pytest.raises(ValueError, match="ranking"):
    targets_from_outputs(np.argsort(-out, 1), "ranking")
  with pytest.raises(ValueError, match="labels"):
    targets_from_outputs(out, "probs", "hard")


def _victim(paper_cnn, **kw):
  return Victim(paper_cnn[1], (28, 28, 1), chunk=64, **kw)


def test_random_stream_prefixes_nest_and_budget_is_charged(paper_cnn, pools):
  pool = pools["natural"]
  v = _victim(paper_cnn, budget=150)
  long = collect_random(v, pool, 150, seed=1, batch=64)
  assert v.queries_used == 150 and len(set(long.order)) == 150
  short = collect_random(_victim(paper_cnn), pool, 40, seed=1, batch=16)
  np.testing.assert_array_equal(short.order, long.order[:40])
  np.testing.assert_allclose(short.outputs, long.outputs[:40], atol=1e-6)


def test_bad_stream_requests_are_refused_before_any_query(paper_cnn, pools):
  pool = pools["noise"]
  v = _victim(paper_cnn, budget=50)
  with pytest.raises(ValueError, match="larger than the 'noise' query pool"):
    collect_random(v, pool, 201, seed=0)
  with pytest.raises(ValueError, match="answers only 50 more"):
    collect_random(v, pool, 60, seed=0)
  with pytest.raises(ValueError, match="answers only 50 more"):
    collect_random(v, pool, 30, seed=0, repeats=2)
  ranking = _victim(paper_cnn, output_mode="ranking")
  with pytest.raises(ValueError, match="output mode 'ranking'"):
    collect_random(ranking, pool, 10, seed=0)
  with pytest.raises(ValueError, match="strategy"):
    collect("greedy", v, pool, 10, 0)
  assert v.queries_used == 0 and ranking.queries_used == 0


def test_repeated_queries_average_only_fresh_noise(paper_cnn, pools):
  """The defence-aware attacker: with index keys repeats get fresh noise (the average moves
  toward the posterior); with content keys repeating a query repeats its answer."""
  pool = pools["same"]
  errors = {}
  for key_mode in ("content", "index"):
    v = _victim(paper_cnn, defence="logit_noise", defence_params={"sigma": 2.0},
                key_mode=key_mode)
    once = collect_random(v, pool, 64, seed=0, batch=64)
    v4 = _victim(paper_cnn, defence="logit_noise", defence_params={"sigma": 2.0},
                 key_mode=key_mode)
    avg = collect_random(v4, pool, 64, seed=0, batch=64, repeats=4)
    assert v4.queries_used == 256
    clean = _victim(paper_cnn).respond(pool.images[once.order])["posterior"]
    err = lambda s: np.abs(s.outputs - clean).sum(1).mean()
    errors[key_mode] = (err(once), err(avg))
    if key_mode == "content":
      np.testing.assert_allclose(avg.outputs, once.outputs, atol=1e-6)
  assert errors["index"][1] < 0.7 * errors["index"][0]


def test_bandit_learns_the_rewarded_branch_and_skips_exhausted_leaves():
  parent = np.array([0, 0, 1, 1, 2, 2])
  bandit = HierarchyBandit(parent, lr=0.5, seed=0)
  available = np.ones(6, bool)
  available[5] = False
  for _ in range(60):
    leaves = np.array([bandit.sample(available) for _ in range(32)])
    assert not np.any(leaves == 5)
    bandit.update(leaves, (leaves == 4).astype(float), available)
  pi_c, pi_f = bandit.policies(available)
  assert pi_c[2] > 0.8 and pi_f[4] == 1.0 and pi_f[5] == 0.0
  np.testing.assert_allclose([pi_f[:2].sum(), pi_f[2:4].sum()], 1.0)


def test_adaptive_stream_queries_in_batches_and_updates_its_knockoff(paper_cnn, pools):
  pool = pools["natural"]
  v = _victim(paper_cnn, budget=120, output_mode="rounded", output_params={"decimals": 1})
  spec = KnockoffSpec(batch_size=16, steps_per_call=2)
  learner = OnlineKnockoff(spec, 10, (28, 28, 1), jax.random.key(0), steps=3, total_steps=9)
  s = collect_adaptive(v, pool, 120, seed=0, learner=learner, reward="all", batch=32)
  assert v.queries_used == 120 and len(s.order) == 120 and len(set(s.order)) == 120
  assert len(v.log) == 4                        # ceil(120 / 32) query batches
  assert int(jax.device_get(learner.state.step)) == 9   # 3 steps after each batch but the last
  np.testing.assert_array_equal(pool.fine[s.order], s.leaves)
  again = collect_adaptive(_victim(paper_cnn, output_mode="rounded",
                                   output_params={"decimals": 1}), pool, 120, seed=0,
                           learner=OnlineKnockoff(spec, 10, (28, 28, 1), jax.random.key(0),
                                                  steps=3, total_steps=9),
                           reward="all", batch=32)
  np.testing.assert_array_equal(again.order, s.order)
