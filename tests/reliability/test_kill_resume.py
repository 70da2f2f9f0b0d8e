"""SIGKILL a real training process once in each phase (startup, training, a checkpoint
write it started): the resumed run must end bit-identical to an uninterrupted one."""
import pytest

from tests.reliability import kill_harness


@pytest.mark.slow
def test_killed_training_resumes_bit_identical(tmp_path):
  cache = str(tmp_path / "cache")
  ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
  kill_harness.run_to_end(ref, cache)
  landed = kill_harness.run_with_kills(killed, cache, kills=3, seed=1)
  assert len(landed) == 3
  assert "training" in landed and "checkpoint write" in landed
  assert kill_harness.compare(ref, killed) == []
