"""Which rows of a global batch each host reads (`rsec.parallel.process_rows`).

One real process here: jax.process_count / process_index are stood in for, so the
multi-host split (and its refusal of a batch the hosts cannot share) runs without one.
"""
import jax
import numpy as np
import pytest

from rsec import parallel


def _as_process(monkeypatch, index, count):
  monkeypatch.setattr(jax, "process_count", lambda: count)
  monkeypatch.setattr(jax, "process_index", lambda: index)


def test_single_process_reads_every_row():
  assert jax.process_count() == 1
  assert parallel.process_rows(40) == slice(0, 40)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_hosts_read_disjoint_contiguous_rows_covering_the_batch(monkeypatch, count):
  batch = 12 * count
  seen = []
  for index in range(count):
    _as_process(monkeypatch, index, count)
    rows = np.arange(batch)[parallel.process_rows(batch)]
    assert len(rows) == batch // count and np.all(np.diff(rows) == 1)
    seen.append(rows)
  np.testing.assert_array_equal(np.concatenate(seen), np.arange(batch))  # in process order


@pytest.mark.parametrize("batch,count", [(10, 3), (40, 3), (7, 2), (2, 4)])
def test_batch_not_divisible_by_the_process_count(monkeypatch, batch, count):
  _as_process(monkeypatch, 0, count)
  with pytest.raises(ValueError, match=f"global batch {batch} must be divisible by the "
                                       f"process count {count}"):
    parallel.process_rows(batch)


@pytest.mark.parametrize("batch", [0, -4, 2.0, "8", True])
def test_batch_that_is_not_a_positive_int(batch):
  with pytest.raises(ValueError, match=r"global batch must be an integer >= 1, got"):
    parallel.process_rows(batch)
