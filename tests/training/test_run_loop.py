"""The one loop's stack features: per-model index sets under vmap, soft-label targets,
held-out selection of the best parameters per stacked model (and its resume)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.training import stack as stack_lib
from rsec.training.checkpoint import Checkpointer
from rsec.training.metrics import MetricWriter
from rsec.training.loop import (EpochSampler, Evaluator, IndexSetSampler, NonFiniteError,
                                fit, run_loop)
from rsec.training.steps import make_train_step
from tests.helpers import host_params, small_state, squares_data


class _Row:
  """Model m's rows of a stack sampler: what that model alone would have read."""

  def __init__(self, sampler, m):
    self.sampler, self.m = sampler, m

  def indices(self, step):
    return self.sampler.indices(step)[self.m]


def _sets():
  return [np.arange(0, 200), np.arange(100, 400)]   # different, overlapping subsets


def test_stack_trains_each_model_like_alone():
  data = squares_data()
  sampler = IndexSetSampler(_sets(), 40, seed=5)
  states = [small_state(seed=0), small_state(seed=1)]
  stacked, stats = run_loop(stack_lib.stack(states), stack_lib.vmap_step(make_train_step()),
                            data, sampler, key=jax.random.key(0), num_steps=10,
                            steps_per_call=4, progress=False)
  assert stats.steps_run == 10 and stack_lib.num_models(stacked.params) == 2
  for m, st in enumerate(states):
    alone, _ = run_loop(st, make_train_step(), data, _Row(sampler, m),
                        key=jax.random.key(0), num_steps=10, steps_per_call=4,
                        progress=False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=2e-3),
                 host_params(alone), stack_lib.unstack(host_params(stacked), m))
  # (vmapped kernels add in another order: float rounding, which Adam's normalisation
  # amplifies to ~1e-4 on near-zero gradients; models trained apart differ by > 0.1)
  # the two models did not train alike: different data and initialisations
  a, b = (stack_lib.unstack(host_params(stacked), m) for m in range(2))
  assert max(float(np.max(np.abs(x - y))) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b))) > 0.1


def test_index_set_sampler_reads_each_set_and_is_deterministic():
  s = IndexSetSampler(_sets(), 40, seed=5)
  idx = np.stack([s.indices(t) for t in range(20)])
  assert idx.shape == (20, 2, 40)
  assert np.all(idx[:, 0] < 200) and np.all(idx[:, 1] >= 100)
  assert sorted(idx[:5, 0].ravel()) == list(range(200))       # one epoch of set 0
  np.testing.assert_array_equal(idx[7], IndexSetSampler(_sets(), 40, seed=5).indices(7))
  with pytest.raises(ValueError, match="batch_size=300"):
    IndexSetSampler(_sets(), 300, seed=0)


def test_soft_targets_train_like_integer_labels():
  data = squares_data()
  soft = dict(data, label=np.eye(10, dtype=np.float32)[data["label"]])
  kw = dict(key=jax.random.key(1), batch_size=40, num_steps=8, progress=False)
  a, _ = fit(small_state(), data, **kw)
  b, _ = fit(small_state(), soft, **kw)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
               host_params(a), host_params(b))
  with pytest.raises(ValueError, match=r"data\['label'\] must be integer classes"):
    fit(small_state(), dict(data, label=data["label"].astype(np.float32)), **kw)


def _stack_evaluator(data, history):
  """Held-out accuracy of each stacked model on rows 300..399 (recorded in `history`)."""
  x, y = jnp.asarray(data["image"][300:]), jnp.asarray(data["label"][300:])

  def fn(state):
    logits = jax.vmap(lambda v: state.apply_fn(v, x, train=False))(state.variables)
    score = jnp.mean(jnp.argmax(logits, -1) == y, axis=-1)
    history.append(np.asarray(score))
    return {"score": score}
  return Evaluator(fn, every=3, models=2)


def test_evaluator_keeps_best_per_model_and_resumes(tmp_path):
  data = squares_data()
  sampler = IndexSetSampler([np.arange(0, 120), np.arange(0, 300)], 40, seed=2)
  step = stack_lib.vmap_step(make_train_step())
  init = lambda: stack_lib.stack([small_state(lr=0.05, seed=0), small_state(lr=0.05, seed=1)])
  kw = dict(key=jax.random.key(0), steps_per_call=2, progress=False)
  history = []
  writer = MetricWriter(str(tmp_path / "log"))
  ref, stats = run_loop(init(), step, data, sampler, num_steps=12, writer=writer, log_every=4,
                        evaluator=_stack_evaluator(data, history), **kw)
  writer.close()
  rows = [json.loads(l) for l in open(tmp_path / "log" / "metrics.jsonl")]
  assert [r["step"] for r in rows if "eval/score" in r] == [3, 6, 9, 12]
  # one row per step: train windows close at the first chunk end past a multiple of 4
  assert [r["step"] for r in rows] == [3, 5, 6, 8, 9, 12]
  scores = np.stack(history)                                   # [evaluations, models]
  assert scores.shape == (4, 2)                                # steps 3, 6, 9, 12
  best = jax.device_get(stats.best)
  np.testing.assert_array_equal(best.score, scores.max(0))
  np.testing.assert_array_equal(best.step, 3 * (np.argmax(scores, 0) + 1))
  # stopped after step 6 and resumed: the same selection, bit for bit
  ck = Checkpointer(str(tmp_path / "ck"), {"model": "stack"})
  run_loop(init(), step, data, sampler, num_steps=6, checkpointer=ck, checkpoint_every=3,
           evaluator=_stack_evaluator(data, []), **kw)
  ck.close()
  ck = Checkpointer(str(tmp_path / "ck"), {"model": "stack"})
  again, stats2 = run_loop(init(), step, data, sampler, num_steps=12, checkpointer=ck,
                           checkpoint_every=3, evaluator=_stack_evaluator(data, []), **kw)
  ck.close()
  assert stats2.steps_run == 6
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(stats.best),
               jax.device_get(stats2.best))
  jax.tree.map(np.testing.assert_array_equal, host_params(ref), host_params(again))


def test_growing_training_set_continues_the_state():
  """Rounds of JBDA / adaptive knockoffs: each round continues the state on more rows,
  exactly as one run whose sampler grows its set at the round boundaries."""
  data = squares_data()
  rounds = ((80, 4), (160, 8), (400, 12))                     # (rows, last step)
  samplers = [EpochSampler(n, 40, seed=r) for r, (n, _) in enumerate(rounds)]
  kw = dict(key=jax.random.key(3), steps_per_call=4, progress=False)
  state = small_state()
  for (n, end), sampler in zip(rounds, samplers):
    state, stats = run_loop(state, make_train_step(), {k: v[:n] for k, v in data.items()},
                            sampler, num_steps=end, **kw)
    assert stats.steps_run == 4 and int(state.step) == end

  class Growing:
    def indices(self, step):
      return samplers[min(step // 4, 2)].indices(step)
  once, _ = run_loop(small_state(), make_train_step(), data, Growing(), num_steps=12, **kw)
  jax.tree.map(np.testing.assert_array_equal, host_params(once), host_params(state))


def test_nonfinite_stacked_model_stops_the_run():
  data = squares_data()
  bad = dict(data, image=data["image"].copy())
  bad["image"][200:] = np.nan                                  # only model 1's rows
  sampler = IndexSetSampler([np.arange(0, 200), np.arange(200, 400)], 40, seed=0)
  with pytest.raises(NonFiniteError, match="non-finite loss or gradients at step 0"):
    run_loop(stack_lib.stack([small_state(), small_state(seed=1)]),
             stack_lib.vmap_step(make_train_step()), bad, sampler, key=jax.random.key(0),
             num_steps=4, progress=False)
