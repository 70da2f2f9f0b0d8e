"""Grids skip finished cells and resume after a crash."""
import pytest

from rsec.grid import cell_name, run_grid


def test_rerun_skips_finished_cells_and_resumes_after_a_crash(tmp_path):
  cells = [{"mode": m, "n": n} for m in ("normal", "adversarial") for n in (10, 20)]
  calls = []

  def crashing(cell, cell_dir):
    calls.append(cell_name(cell))
    if len(calls) == 3:
      raise KeyboardInterrupt("pre-empted")
    return {"error": cell["n"] / 100}

  with pytest.raises(KeyboardInterrupt):
    run_grid(str(tmp_path), cells, crashing, progress=False)
  assert calls == ["mode=normal,n=10", "mode=normal,n=20", "mode=adversarial,n=10"]

  calls.clear()
  rows = run_grid(str(tmp_path), cells, lambda c, d: (calls.append(cell_name(c)) or
                                                      {"error": c["n"] / 100}), progress=False)
  assert calls == ["mode=adversarial,n=10", "mode=adversarial,n=20"]
  assert [r["error"] for r in rows] == [0.1, 0.2, 0.1, 0.2]
  assert rows[0] == {"mode": "normal", "n": 10, "error": 0.1}


def test_bad_cells():
  with pytest.raises(ValueError, match="duplicates"):
    run_grid("/tmp/unused", [{"a": 1}, {"a": 1}], lambda c, d: {}, progress=False)
  with pytest.raises(ValueError, match="primitives"):
    cell_name({"a": [1, 2]})
  with pytest.raises(ValueError, match="must not contain"):
    cell_name({"a": "x/y"})
