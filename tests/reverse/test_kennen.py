"""kennen metamodels and splits on small synthetic zoos."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.reverse import kennen, splits, zoo_net

NET = zoo_net.NetSpec(input_shape=(8, 8, 1), num_classes=4, width=4, hidden=8)


def test_encode_output_modes():
  p = np.asarray([[[0.1, 0.6, 0.3, 0.0], [0.25, 0.25, 0.4, 0.1]]], np.float32)   # [1, 2, 4]
  np.testing.assert_allclose(kennen.encode(p, "score"),
                             1 + np.log(np.maximum(p, 1e-6)).reshape(1, -1) / np.log(1e6),
                             rtol=1e-6, atol=1e-6)
  assert kennen.encode(p, "score").min() == 0.0 and kennen.encode(p, "score").max() <= 1.0
  np.testing.assert_array_equal(kennen.encode(p, "label"), [[0, 1, 0, 0, 0, 0, 1, 0]])
  # Rank positions / (K - 1): first row order 1, 2, 0, 3; ties keep index order.
  np.testing.assert_allclose(kennen.encode(p, "ranking"),
                             [[2 / 3, 0, 1 / 3, 1, 1 / 3, 2 / 3, 0, 1]])
  with pytest.raises(ValueError, match="output mode"):
    kennen.encode(p, "logits")


def test_metamodel_learns_attributes_from_features():
  rng = np.random.default_rng(0)
  labels = np.stack([rng.integers(0, 3, 400), rng.integers(0, 2, 400)], 1)
  f = np.concatenate([np.eye(3)[labels[:, 0]], np.eye(2)[labels[:, 1]],
                      rng.normal(size=(400, 4))], 1).astype(np.float32)
  f += rng.normal(scale=0.3, size=f.shape).astype(np.float32)
  spec = kennen.MetaSpec(hidden=(32,), steps=300, batch_size=32, learning_rate=3e-3)
  params = kennen.train_metamodel(spec, f[:300], labels[:300], (3, 2), (True, False),
                                  key=jax.random.key(0))
  pred = kennen.predict(params, f[300:], (3, 2))
  assert np.mean(pred[:, 0] == labels[300:, 0]) > 0.9
  assert np.mean(pred[:, 1] == labels[300:, 1]) < 0.8   # unscored: never trained
  with pytest.raises(ValueError, match=r"labels of attribute 0 must lie in \[0, 3\)"):
    kennen.train_metamodel(spec, f, labels + 3, (3, 2), (True, True), key=jax.random.key(0))


def _zoo(m=6, seed=0):
  rng = np.random.default_rng(seed)
  arch = {n: jnp.asarray(rng.integers(0, len(v), m), jnp.int32)
          for n, v in zoo_net.ARCH_ATTRIBUTES.items()}
  params = jax.vmap(lambda k, a: zoo_net.init_params(NET, k, a))(
      jax.random.split(jax.random.key(seed), m), arch)
  return {"params": params, "arch": arch}


def test_mixture_probs_average_members():
  v = _zoo(3)
  x = jax.random.uniform(jax.random.key(1), (5,) + NET.input_shape)
  members = jnp.asarray([[0, -1, -1], [1, 2, -1]])
  weights = jnp.asarray([[1.0, 0, 0], [0.5, 0.5, 0]])
  p = kennen.mixture_probs(v, members, weights, x)
  one = lambda i: jax.nn.softmax(zoo_net.apply(jax.tree.map(lambda a: a[i], v), x), -1)
  np.testing.assert_allclose(p[0], one(0), atol=1e-6)
  np.testing.assert_allclose(p[1], (one(1) + one(2)) / 2, atol=1e-6)


def test_kennen_i_crafts_inputs_that_make_the_zoo_answer_targets():
  v = _zoo(6)
  members = np.stack([np.arange(6), -np.ones(6, int), -np.ones(6, int)], 1)
  weights = np.stack([np.ones(6), np.zeros(6), np.zeros(6)], 1).astype(np.float32)
  targets = np.asarray([[0, 1, 0, 1, 0, 1], [3, 3, 2, 2, 1, 1]])
  x0 = np.full((2,) + NET.input_shape, 0.5, np.float32)

  def hits(x):
    p = kennen.mixture_probs(v, jnp.asarray(members), jnp.asarray(weights), jnp.asarray(x))
    return float(np.mean(np.asarray(p.argmax(-1)).T == targets))
  x = kennen.craft_inputs(v, members, weights, targets, x0, steps=60, step_size=0.05,
                          key=jax.random.key(0))
  assert x.shape == x0.shape and x.min() >= 0 and x.max() <= 1
  assert hits(x) > hits(x0) and hits(x) >= 0.5
  table = kennen.label_table(np.asarray([0, 0, 1, 3]), np.asarray([1, 1, 0, 1]), 2, 4)
  np.testing.assert_array_equal(table, [1, 0, 1, 1])   # label 2 unseen: the common value


def _joint_case():
  """8 single zoo models (their activation is the label), 3 grey queries, a small MLP."""
  v = _zoo(8)
  members = np.stack([np.arange(8), -np.ones(8, int), -np.ones(8, int)], 1)
  weights = np.stack([np.ones(8), np.zeros(8), np.zeros(8)], 1).astype(np.float32)
  labels = np.asarray(v["arch"]["act"])[:, None]
  q0 = np.full((3,) + NET.input_shape, 0.5, np.float32)
  params = kennen.init_mlp(jax.random.key(0), (3 * 4, 16, 4))
  return v, members, weights, labels, q0, params


def test_kennen_io_moves_queries_and_metamodel_inside_the_box():
  v, members, weights, labels, q0, params = _joint_case()
  spec = kennen.MetaSpec(hidden=(16,), steps=8, batch_size=4, learning_rate=1e-2)
  q, p = kennen.train_joint(spec, v, members, weights, labels, q0, params, (4,), (True,),
                            key=jax.random.key(0))
  assert q.shape == q0.shape and q.min() >= 0 and q.max() <= 1
  assert np.abs(q - q0).max() > 1e-3
  assert np.abs(np.asarray(p[0]["w"]) - np.asarray(params[0]["w"])).max() > 1e-4


def test_kennen_io_moves_the_queries_at_their_own_learning_rate():
  v, members, weights, labels, q0, params = _joint_case()
  spec = kennen.MetaSpec(hidden=(16,), steps=8, batch_size=4, learning_rate=1e-4)

  def moved(**kw):
    q, _ = kennen.train_joint(spec, v, members, weights, labels, q0, params, (4,), (True,),
                              key=jax.random.key(0), **kw)
    return np.abs(q - q0).max()
  same, fast = moved(), moved(query_learning_rate=1e-2)
  assert fast > 10 * same
  with pytest.raises(ValueError, match="query_learning_rate"):
    moved(query_learning_rate=0.0)


def test_splits_hold_values_out_and_refuse_unanswerable_ones():
  rng = np.random.default_rng(0)
  n = 300
  attrs = {"conv": rng.integers(0, 3, n), "fc": rng.integers(0, 3, n),
           "opt": rng.integers(0, 3, n), "bs": rng.integers(0, 3, n),
           "size": rng.integers(0, 3, n)}
  values = {"conv": (2, 3, 4), "fc": (2, 3, 4), "opt": ("sgd", "adam", "rmsprop"),
            "bs": (16, 32, 64), "size": ("all", "half", "quarter")}
  r = splits.make_split("R", attrs, values, test_share=0.2, seed=0)
  assert len(r.test) == 60 and not set(r.train) & set(r.test) and all(r.scored)
  e = splits.make_split("E-conv-fc", attrs, values, test_share=0.2, seed=0)
  assert np.all(attrs["conv"][e.train] != 2) and np.all(attrs["fc"][e.train] != 2)
  assert np.all((attrs["conv"][e.test] == 2) | (attrs["fc"][e.test] == 2))
  assert e.scored == (False, False, True, True, True)
  eb = splits.make_split("E-opt-bs", attrs, values, test_share=0.2, seed=0)
  assert np.all(attrs["bs"][eb.train] != 2)   # 'largest' batch size held out
  attrs["size"] = np.where(attrs["conv"] == 2, 2, 0)   # quarter-size models: only conv=4
  with pytest.raises(ValueError, match=r"no training models with size=\['quarter'\]"):
    splits.make_split("E-conv", attrs, values, test_share=0.2, seed=0)
  with pytest.raises(ValueError, match="split"):
    splits.make_split("E-width", attrs, values, test_share=0.2, seed=0)
  assert splits.chance(np.asarray([0, 0, 1]), np.asarray([0, 1, 1, 1])) == 0.25
