"""SIGKILL real training processes and restart them: every resumed run must end
bit-identical to an uninterrupted one (checkpoint arrays, metrics.jsonl, TensorBoard,
results.json but its timings). One harness (`kill_harness`) for every loop user."""
import pytest

from tests.reliability import kill_harness


@pytest.mark.slow
def test_killed_training_resumes_bit_identical(tmp_path):
  """The classifier, killed once in each phase (startup, training, a checkpoint write)."""
  cache = str(tmp_path / "cache")
  ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
  kill_harness.run_to_end(ref, cache)
  landed = kill_harness.run_with_kills(killed, cache, kills=3, seed=1)
  assert len(landed) == 3
  assert "training" in landed and "checkpoint write" in landed
  assert kill_harness.compare(ref, killed) == []


@pytest.mark.slow
def test_killed_vaegan_resumes_bit_identical(tmp_path):
  """The stacked VAE-GANs, killed while training after a checkpoint, rerun to the end.
  (The remover's GAN pairs: tests/context/test_train_remover.py.)"""
  target, cache = kill_harness.VAEGAN, str(tmp_path / "cache")
  ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
  kill_harness.run_to_end(ref, cache, target)
  landed = kill_harness.run_with_kills(killed, cache, kills=1, target=target,
                                       aims=("training",))
  assert landed == ["training"]
  assert kill_harness.compare(ref, killed, target) == []
