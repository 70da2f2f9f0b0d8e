"""Checkpoints that go bad on disk: fall back, repair, and never load a different model."""
import glob
import json
import os

import jax
import numpy as np
import pytest

from rsec.training.checkpoint import Checkpointer, restore_latest
from rsec.training.loop import fit
from rsec.training.metrics import MetricWriter, read_event_records
from tests.helpers import host_params as _params, small_state as _state, squares_data as _data

META = {"model": "paper_classifier"}
KW = dict(key=jax.random.key(0), batch_size=40, checkpoint_every=4, steps_per_call=2,
          progress=False)


def _train(d, num_steps, writer=None):
  ck = Checkpointer(d, META, max_to_keep=3)
  try:
    state, stats = fit(_state(), _data(), num_steps=num_steps, checkpointer=ck, writer=writer,
                       log_every=2, **KW)
  finally:
    ck.close()
  return state, stats


def _flip_a_byte(step_dir):
  """One flipped bit in the middle of the largest array file: still a readable file."""
  files = sorted(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True),
                 key=os.path.getsize)
  with open(files[-1], "r+b") as f:
    f.seek(os.path.getsize(files[-1]) // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 0x01]))


def _truncate(step_dir):
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    for f in files:
      if f not in ("_METADATA", "commit_success.txt"):
        with open(os.path.join(root, f), "r+b") as fh:
          fh.truncate(os.path.getsize(os.path.join(root, f)) // 3)


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte])
def test_a_damaged_final_checkpoint_is_rewritten_and_restores_the_final_model(tmp_path, damage,
                                                                             caplog):
  reference, _ = _train(str(tmp_path / "ref"), 8)
  d = str(tmp_path / "ck")
  _train(d, 8)
  damage(os.path.join(d, "8"))
  state, stats = _train(d, 8)          # resumes from step 4, trains 4 more, saves step 8 again
  assert stats.steps_run == 4
  assert "checkpoint step 8" in caplog.text
  ck = Checkpointer(d, META, max_to_keep=3)
  assert ck.all_steps() == [4, 8]
  final = ck.restore(_state(), drop_unreadable=False)
  ck.close()
  assert int(final.step) == 8
  jax.tree.map(np.testing.assert_array_equal, _params(reference), _params(final))


def test_a_finite_bit_flip_is_caught_by_the_digest(tmp_path, caplog):
  d = str(tmp_path / "ck")
  _train(d, 8)
  _flip_a_byte(os.path.join(d, "8"))
  ck = Checkpointer(d, META, max_to_keep=3)
  restored = ck.restore(_state(), drop_unreadable=False)
  assert ck.all_steps() == [4, 8]      # a read-only restore leaves the files alone
  ck.close()
  assert int(restored.step) == 4
  assert "do not match their saved digest" in caplog.text


def test_corrupted_metadata_falls_back(tmp_path, caplog):
  d = str(tmp_path / "ck")
  _train(d, 8)
  with open(os.path.join(d, "8", "meta", "metadata"), "w") as f:
    f.write("{ not json")
  ck = Checkpointer(d, META, max_to_keep=3)
  assert int(ck.restore(_state(), drop_unreadable=False).step) == 4
  ck.close()
  assert "unreadable metadata" in caplog.text
  restored = restore_latest(d, lambda meta: _state(), "classifier", "make it")
  assert int(restored.step) == 4


def test_a_mismatched_model_is_still_refused_not_skipped(tmp_path):
  d = str(tmp_path / "ck")
  _train(d, 4)
  with pytest.raises(ValueError, match="written with model='paper_classifier'"):
    Checkpointer(d, {"model": "mlp"}).restore(_state("mlp"))


def test_stale_temporary_checkpoints_are_removed_on_start(tmp_path):
  d = str(tmp_path / "ck")
  _train(d, 4)
  stale = os.path.join(d, "8.orbax-checkpoint-tmp-1234")
  os.makedirs(os.path.join(stale, "state"))
  Checkpointer(d, META).close()
  assert not os.path.exists(stale)
  assert os.path.isdir(os.path.join(d, "4"))


def _scalars(workdir):
  from tensorboardX.proto import event_pb2
  out = []
  for name in sorted(os.listdir(os.path.join(workdir, "tensorboard"))):
    for data in read_event_records(os.path.join(workdir, "tensorboard", name)):
      ev = event_pb2.Event.FromString(data)
      out += [(ev.step, v.tag, v.simple_value) for v in ev.summary.value]
  return out


def test_resumed_tensorboard_events_read_like_an_uninterrupted_run(tmp_path):
  ref = str(tmp_path / "ref")
  w = MetricWriter(ref)
  _train(os.path.join(ref, "ck"), 12, w)
  w.close()
  run = str(tmp_path / "run")
  w = MetricWriter(run)
  _train(os.path.join(run, "ck"), 6, w)   # stops after step 6, last checkpoint at step 4
  w.close()
  assert max(s for s, _, _ in _scalars(run)) == 6
  w = MetricWriter(run)
  _train(os.path.join(run, "ck"), 12, w)  # resumes from 4: steps 5-6 are logged again
  w.close()
  assert _scalars(run) == _scalars(ref)
  rows = lambda d: [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
  assert rows(run) == rows(ref)
