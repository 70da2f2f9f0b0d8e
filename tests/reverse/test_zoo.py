"""The zoo: its plan, training subsets, stacks built as a resumable grid, the loaded table."""
import os

import jax
import numpy as np
import pytest

from rsec.reverse import zoo as zoo_lib, zoo_net, zoo_train

NET = zoo_net.NetSpec(input_shape=(12, 12, 1), num_classes=4, width=4, hidden=8)


def _spec(**kw):
  train = zoo_train.TrainSpec(NET, batch_sizes=(8, 16, 32), steps=kw.pop("steps", 4))
  return zoo_lib.ZooSpec(train, **{"models": 24, "ensemble_groups": 3, "stack_size": 6,
                                   "min_accuracy": 0.0, **kw})


def test_plan_draws_replica_groups_and_is_seeded():
  spec = _spec()
  p, q = zoo_lib.plan(spec), zoo_lib.plan(spec)
  for k in p:
    np.testing.assert_array_equal(p[k], q[k])
  assert len(p["seed"]) == 24 and len(set(p["seed"].tolist())) == 24
  for g in range(3):
    rows = np.flatnonzero(p["group"] == g)
    assert len(rows) == 3
    for k in zoo_lib.ATTRIBUTES[:-2]:
      assert len(set(p[k][rows].tolist())) == 1, k   # replicas share every attribute
  other = zoo_lib.plan(_spec(seed=1))
  assert any(np.any(p[k] != other[k]) for k in ("act", "opt", "split"))
  with pytest.raises(ValueError, match="ensemble_groups"):
    zoo_lib.plan(_spec(ensemble_groups=9))


def test_narrowed_attributes_and_bad_values():
  values = zoo_lib.check_values({"act": ("relu", "tanh"), "bs": (16,)}, (8, 16, 32))
  p = zoo_lib.plan(_spec(values=values))
  assert set(p["act"].tolist()) <= {0, 3} and set(p["bs"].tolist()) == {1}
  with pytest.raises(ValueError, match="unknown zoo attribute 'width'"):
    zoo_lib.check_values({"width": (3,)}, (8, 16, 32))
  with pytest.raises(ValueError, match="'act' has no value"):
    zoo_lib.check_values({"act": ("swish",)}, (8, 16, 32))
  with pytest.raises(ValueError, match="derived"):
    zoo_lib.check_values({"params": (1,)}, (8, 16, 32))


def test_training_subsets_are_thirds_and_their_unions():
  a = zoo_lib.training_rows(0, 0, 300, 0)
  b = zoo_lib.training_rows(1, 0, 300, 0)
  abc = zoo_lib.training_rows(6, 0, 300, 0)
  assert len(a) == 100 and not set(a) & set(b) and len(abc) == 300
  ab_half = zoo_lib.training_rows(3, 1, 300, 0)
  assert len(ab_half) == 100 and set(ab_half) <= set(a) | set(b)
  assert len(zoo_lib.training_rows(0, 2, 300, 0)) == 25


def test_param_bins_cover_the_grid():
  edges = zoo_lib.param_bin_edges(_spec())
  assert edges.shape == (zoo_lib.NUM_PARAM_BINS - 1,) and np.all(np.diff(edges) >= 0)


def _data(n=240, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((n,) + NET.input_shape, np.float32)
  y = (x[:, :6].mean((1, 2, 3)) > x[:, 6:].mean((1, 2, 3))).astype(np.int32) * 2 + \
      (x[:, :, :6].mean((1, 2, 3)) > x[:, :, 6:].mean((1, 2, 3))).astype(np.int32)
  return {"image": x, "label": y}


def test_zoo_builds_resumes_and_loads_models_alone(tmp_path):
  spec = _spec()
  data = {"train": _data(), "test": _data(80, 1)}
  queries = _data(10, 2)["image"]
  rows = zoo_lib.build(spec, data, queries, str(tmp_path), progress=False)
  cells = zoo_lib.stack_cells(spec, zoo_lib.plan(spec))
  assert len(rows) == len(cells) and sum(r["models"] for r in rows) == 24
  stamps = {c: os.path.getmtime(os.path.join(tmp_path, "cells", c, "models.npz"))
            for c in os.listdir(tmp_path / "cells")}
  plan = zoo_lib.plan(spec)
  with np.load(tmp_path / "cells" / sorted(stamps)[0] / "models.npz") as f:
    for k in zoo_lib.ATTRIBUTES[:-2]:   # each model stored with its attributes
      np.testing.assert_array_equal(f[f"a/{k}"], plan[k][f["index"]])
  zoo_lib.build(spec, data, queries, str(tmp_path), progress=False)   # nothing to redo
  for c, t in stamps.items():
    assert os.path.getmtime(os.path.join(tmp_path, "cells", c, "models.npz")) == t
  z = zoo_lib.load(spec, str(tmp_path))
  singles = z.members[:, 1] < 0
  assert singles.sum() == 24 and (~singles).sum() == 3 and len(z) == 27
  for name in zoo_lib.ATTRIBUTES:
    assert z.attributes[name].shape == (27,)
  np.testing.assert_allclose(z.weights.sum(1), 1.0, rtol=1e-6)
  for i in (0, 5, 25):   # singles and an ensemble, alone as plain logits functions
    p = np.asarray(jax.nn.softmax(z.logits_fn(i)(queries), -1))
    np.testing.assert_allclose(p, z.probs[i], atol=1e-5)
  group = z.members[25][z.members[25] >= 0]
  for a in zoo_lib.ATTRIBUTES[:-2]:
    assert len(set(z.attributes[a][group].tolist()) | {z.attributes[a][25]}) == 1
  # Dropping below min_accuracy keeps only the accurate ones.
  threshold = float(np.median(z.accuracy[singles]))
  strict = zoo_lib.load(_spec(min_accuracy=threshold), str(tmp_path))
  kept = (strict.members[:, 1] < 0).sum()
  assert kept == (z.accuracy[singles] >= threshold).sum() and strict.dropped["accuracy"] == 24 - kept
  assert np.all(strict.accuracy[strict.members[:, 1] < 0] >= threshold)
  with pytest.raises(ValueError, match="no model reached"):
    zoo_lib.load(_spec(min_accuracy=1.0 + 1e-6), str(tmp_path))
  with pytest.raises(ValueError, match="not built"):
    zoo_lib.load(_spec(models=30), str(tmp_path))
