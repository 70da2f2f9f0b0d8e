"""Training loop: compiles once, data-parallel, resumable, guarded, logged."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec import parallel
from rsec.training import steps as steps_lib
from rsec.training.checkpoint import Checkpointer
from rsec.training.loop import NonFiniteError, evaluate, fit
from rsec.training.metrics import MetricWriter, read_event_records
from tests.helpers import host_params, small_state, squares_data


def test_fit_learns_and_evaluate_pads_last_batch():
  data = squares_data()
  state, stats = fit(small_state(), data, key=jax.random.key(1), batch_size=40, num_steps=60,
                     progress=False)
  assert stats.steps_run == 60 and int(state.step) == 60
  full = evaluate(state, data["image"], data["label"], batch_size=40)
  part = evaluate(state, data["image"][:57], data["label"][:57], batch_size=40)
  assert full["accuracy"] > 0.9
  ref = float(np.mean(np.argmax(np.asarray(state.logits_fn()(data["image"][:57])), -1)
                      == data["label"][:57]))
  assert part["accuracy"] == pytest.approx(ref)


def test_multi_step_compiles_once():
  data = squares_data()
  mesh = parallel.data_mesh()
  step = chex.assert_max_traces(steps_lib.make_train_step(), n=1)
  multi = steps_lib.make_multi_step(step, mesh)
  state = parallel.replicate(small_state(), mesh)
  for s0 in range(0, 12, 4):
    idx = np.arange(s0 * 40, s0 * 40 + 160).reshape(4, 40) % 400
    batches = parallel.shard_batch({k: v[idx] for k, v in data.items()}, mesh, axis=1)
    steps = jnp.arange(s0, s0 + 4, dtype=jnp.int32)
    valid = steps < 10  # the last chunk is padded: same shape, no recompilation
    state, metrics = multi(state, batches, jax.random.key(0), steps, valid)
  assert int(state.step) == 10
  chex.clear_trace_counter()


def test_one_device_and_four_devices_agree():
  """Same global batch on 1 and 4 devices: the same training up to summation order.

  The cross-device reduction adds the per-device partial sums in another order than one
  device does, so values agree to float rounding, amplified a little by Adam's
  normalisation, not bit for bit.
  """
  assert jax.device_count() == 4, "tests run with 4 fake CPU devices (see conftest.py)"
  data = squares_data()
  out, preds = [], []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.data_mesh(devices)
    state, _ = fit(small_state(), data, key=jax.random.key(1), batch_size=40, num_steps=12,
                   mesh=mesh, progress=False)
    out.append(host_params(state))
    preds.append(np.argmax(np.asarray(state.logits_fn()(data["image"])), -1))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3), *out)
  assert np.mean(preds[0] == preds[1]) >= 0.99


def test_virtual_shards_one_and_four_devices_bit_identical():
  """Deterministic reductions (training.virtual_shards = 4): the same global batch on 1
  device (4 shards each) and on 4 devices (1 shard each) gives the same bits in every
  leaf of the parameters, BatchNorm statistics, Adam state and the per-step metrics."""
  assert jax.device_count() == 4, "tests run with 4 fake CPU devices (see conftest.py)"
  data = squares_data()
  out = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.data_mesh(devices)
    step = steps_lib.make_train_step(virtual_shards=4, mesh=mesh)
    multi = steps_lib.make_multi_step(step, mesh)
    state, metrics = parallel.replicate(small_state(), mesh), []
    for s0 in (0, 3):   # two scanned calls of three steps
      idx = np.arange(s0 * 40, s0 * 40 + 120).reshape(3, 40) % 400
      batches = parallel.shard_batch({k: v[idx] for k, v in data.items()}, mesh, axis=1)
      steps = jnp.arange(s0, s0 + 3, dtype=jnp.int32)
      state, m = multi(state, batches, jax.random.key(1), steps, jnp.ones(3, bool))
      metrics.append(m)
    out.append(jax.tree.map(np.asarray, jax.device_get((state.checkpoint_tree(), metrics))))
  one, four = (jax.tree_util.tree_flatten_with_path(o)[0] for o in out)
  assert len(one) == len(four) > 50
  for (path, a), (_, b) in zip(one, four):
    assert a.dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(path)
  assert int(out[0][0]["step"]) == 6 and np.all(out[0][1][1]["finite"] == 1)


def test_batch_not_divisible_by_devices():
  with pytest.raises(ValueError, match="batch_size=30 must be divisible by the number of devices"):
    fit(small_state(), squares_data(), key=jax.random.key(1), batch_size=30, num_steps=2,
        progress=False)


def test_resume_is_identical_to_uninterrupted(tmp_path):
  data, key = squares_data(), jax.random.key(3)
  kw = dict(key=key, batch_size=40, steps_per_call=3, progress=False, checkpoint_every=5)
  ref, _ = fit(small_state(), data, num_steps=16, **kw)
  d = str(tmp_path / "ck")
  ck = Checkpointer(d, {"model": "paper_classifier"})
  fit(small_state(), data, num_steps=10, checkpointer=ck, **kw)   # "killed" after step 10
  ck.close()
  ck = Checkpointer(d, {"model": "paper_classifier"})
  assert ck.latest_step() == 10
  resumed, stats = fit(small_state(seed=99), data, num_steps=16, checkpointer=ck, **kw)
  ck.close()
  assert stats.steps_run == 6
  jax.tree.map(np.testing.assert_array_equal, host_params(ref), host_params(resumed))


def test_checkpoint_of_another_model_is_refused(tmp_path):
  d = str(tmp_path / "ck")
  ck = Checkpointer(d, {"model": "paper_classifier"})
  fit(small_state(), squares_data(), key=jax.random.key(0), batch_size=40, num_steps=2,
      checkpointer=ck, progress=False)
  ck.close()
  ck = Checkpointer(d, {"model": "mlp"})
  with pytest.raises(ValueError, match="written with model='paper_classifier'"):
    fit(small_state("mlp"), squares_data(), key=jax.random.key(0), batch_size=40, num_steps=4,
        checkpointer=ck, progress=False)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  data = squares_data()
  d = str(tmp_path / "ck")
  ck = Checkpointer(d, {"model": "paper_classifier"})
  state, _ = fit(small_state(), data, key=jax.random.key(0), batch_size=40, num_steps=4,
                 checkpointer=ck, checkpoint_every=2, progress=False)
  good = host_params(state)
  bad = dict(data, image=data["image"].copy())
  bad["image"][:] = np.nan
  with pytest.raises(NonFiniteError, match=r"non-finite loss or gradients at step 4.*step 4"):
    fit(small_state(), bad, key=jax.random.key(0), batch_size=40, num_steps=8, checkpointer=ck,
        checkpoint_every=2, progress=False)
  assert ck.latest_step() == 4
  restored = ck.restore(small_state())
  ck.close()
  jax.tree.map(np.testing.assert_array_equal, good, host_params(restored))


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
  w = MetricWriter(str(tmp_path))
  for s in (10, 20, 30):
    w.write(s, {"train/loss": 1.0 / s})
  w.truncate_after(20)   # a resume from step 20: rows and events after it are dropped
  w.write(30, {"train/loss": 0.5})
  w.close()
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [10, 20, 30] and rows[-1]["train/loss"] == 0.5
  scalars = [x for f in sorted(os.listdir(tmp_path / "tensorboard"))
             for x in _read_event_scalars(tmp_path / "tensorboard" / f)]
  assert [(s, t) for s, t, _ in scalars] == [(10, "train/loss"), (20, "train/loss"),
                                              (30, "train/loss")]
  assert scalars[0][2] == pytest.approx(0.1) and scalars[-1][2] == pytest.approx(0.5)


def _read_event_scalars(path):
  """(step, tag, value) of every scalar in a TensorBoard event file, read without TF."""
  from tensorboardX.proto import event_pb2
  out = []
  for data in read_event_records(str(path)):
    ev = event_pb2.Event.FromString(data)
    out += [(ev.step, v.tag, v.simple_value) for v in ev.summary.value]
  return out


def test_corrupted_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  data = squares_data()
  d = str(tmp_path / "ck")
  ck = Checkpointer(d, {"model": "paper_classifier"}, max_to_keep=3)
  kw = dict(key=jax.random.key(0), batch_size=40, checkpointer=ck, checkpoint_every=2,
            progress=False)
  state2, _ = fit(small_state(), data, num_steps=2, **kw)
  fit(small_state(), data, num_steps=4, **kw)
  ck.close()
  # Truncate every data file of the step-4 checkpoint (a crash in the middle of a write).
  for root, _, files in os.walk(os.path.join(d, "4", "state")):
    for f in files:
      if f not in ("_METADATA", "commit_success.txt"):
        with open(os.path.join(root, f), "r+b") as fh:
          fh.truncate(max(0, os.path.getsize(os.path.join(root, f)) // 3))
  ck = Checkpointer(d, {"model": "paper_classifier"}, max_to_keep=3)
  restored = ck.restore(small_state())
  ck.close()
  assert int(restored.step) == 2
  jax.tree.map(np.testing.assert_array_equal, host_params(state2), host_params(restored))
  assert "checkpoint step 4" in caplog.text and "unreadable" in caplog.text
