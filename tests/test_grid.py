"""Grids skip finished cells and resume after a crash."""
import os

import pytest

from rsec import grid

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


def test_cells_run_as_stacks_and_resume(tmp_path):
  """Cells sharing an architecture run as one stack; finished stacks are skipped."""
  cells = [{"arch": a, "budget": b} for a in ("cnn", "mlp") for b in (100, 200)]
  calls = []

  def run_stack(members, stack_dir):
    calls.append((os.path.basename(stack_dir), [m["budget"] for m in members]))
    if members[0]["arch"] == "mlp" and len(calls) == 2 and fail[0]:
      raise RuntimeError("pre-empted")
    return [{"score": m["budget"] * (2 if m["arch"] == "cnn" else 3)} for m in members]

  fail = [True]
  with pytest.raises(RuntimeError, match="pre-empted"):
    grid.run_grid(str(tmp_path), cells, stack_by=lambda c: {"arch": c["arch"]},
                  run_stack=run_stack, progress=False)
  assert calls == [("arch=cnn", [100, 200]), ("arch=mlp", [100, 200])]
  fail[0] = False
  rows = grid.run_grid(str(tmp_path), cells, stack_by=lambda c: {"arch": c["arch"]},
                       run_stack=run_stack, progress=False)
  assert calls[2:] == [("arch=mlp", [100, 200])]             # the cnn stack was done
  assert [r["score"] for r in rows] == [200, 400, 300, 600]
  with pytest.raises(ValueError, match="either run_cell, or stack_by and run_stack"):
    grid.run_grid(str(tmp_path), cells, run_stack=run_stack)
