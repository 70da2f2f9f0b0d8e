"""Experiment grids that survive pre-emption: finished cells are skipped on a rerun.

Each cell (a dict of primitives, e.g. {"mode": "normal", "train_size": 500, "seed": 0})
runs in its own folder `<workdir>/cells/<name>`; its `results.json`, written atomically
when the cell finishes, marks it done. A rerun skips done cells and resumes the
unfinished one from its own checkpoints (the cell function receives its folder).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from tqdm.auto import tqdm

from rsec import io


def cell_name(cell: Mapping[str, Any]) -> str:
  """'mode=normal,seed=0,train_size=500' (sorted keys; a stable folder name)."""
  for k, v in cell.items():
    if not isinstance(v, (str, int, float, bool)):
      raise ValueError(f"grid cell values must be primitives; {k}={v!r} is a "
                       f"{type(v).__name__}")
    if isinstance(v, str) and ("/" in v or "," in v or "=" in v):
      raise ValueError(f"grid cell value {k}={v!r} must not contain '/', ',' or '='")
  return ",".join(f"{k}={cell[k]}" for k in sorted(cell))


def run_grid(workdir: str, cells: Sequence[Mapping[str, Any]],
             run_cell: Callable[[Mapping[str, Any], str], Mapping[str, Any]] | None = None, *,
             stack_by: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
             run_stack: Callable[[list, str], Sequence[Mapping[str, Any]]] | None = None,
             progress: bool = True, desc: str = "grid") -> list[dict[str, Any]]:
  """Runs `run_cell(cell, cell_dir) -> results` for every cell not finished yet.

  Or, to train several cells as one stack of models (one compiled call under `vmap`):
  `stack_by(cell)` -> the keys that define a stack (a dict of primitives, e.g. the
  architecture), and `run_stack(cells, stack_dir) -> [results per cell]` runs the
  unfinished cells of one stack together in `<workdir>/stacks/<name>` (its checkpoints
  resume there); each cell's results still land in its own `cells/<name>/results.json`.
  Returns one dict per cell (in the given order): the cell's keys plus its results.
  """
  if (run_cell is None) == (run_stack is None) or (run_stack is None) != (stack_by is None):
    raise ValueError("run_grid needs either run_cell, or stack_by and run_stack")
  if run_stack is not None:
    return _run_stacks(workdir, cells, stack_by, run_stack, progress, desc)
  names = [cell_name(c) for c in cells]
  if len(set(names)) != len(names):
    raise ValueError("grid cells must be distinct; got duplicates: "
                     f"{sorted({n for n in names if names.count(n) > 1})}")
  out = []
  bar = tqdm(total=len(cells), desc=desc, disable=not progress, dynamic_ncols=True)
  for cell, name in zip(cells, names):
    cell_dir = os.path.join(workdir, "cells", name)
    done = os.path.join(cell_dir, "results.json")
    if os.path.exists(done):
      results = io.read_json(done)
    else:
      io.prepare_workdir(cell_dir)
      results = dict(run_cell(cell, cell_dir))
      if io.is_chief():
        io.write_json_atomic(done, results)
    out.append({**cell, **results})
    bar.update(1)
  bar.close()
  return out


def _run_stacks(workdir, cells, stack_by, run_stack, progress, desc):
  names = [cell_name(c) for c in cells]
  if len(set(names)) != len(names):
    raise ValueError("grid cells must be distinct; got duplicates: "
                     f"{sorted({n for n in names if names.count(n) > 1})}")
  done = {n: os.path.join(workdir, "cells", n, "results.json") for n in names}
  stacks: dict[str, list[int]] = {}
  for i, (cell, name) in enumerate(zip(cells, names)):
    if not os.path.exists(done[name]):
      stacks.setdefault(cell_name(stack_by(cell)), []).append(i)
  bar = tqdm(total=len(cells), initial=len(cells) - sum(map(len, stacks.values())),
             desc=desc, disable=not progress, dynamic_ncols=True)
  for stack, members in stacks.items():
    stack_dir = os.path.join(workdir, "stacks", stack)
    io.prepare_workdir(stack_dir)
    results = list(run_stack([cells[i] for i in members], stack_dir))
    if len(results) != len(members):
      raise ValueError(f"run_stack returned {len(results)} results for {len(members)} cells "
                       f"of stack {stack!r}")
    for i, r in zip(members, results):
      io.prepare_workdir(os.path.dirname(done[names[i]]))
      if io.is_chief():
        io.write_json_atomic(done[names[i]], dict(r))
    bar.update(len(members))
  bar.close()
  return [{**cell, **io.read_json(done[name])} for cell, name in zip(cells, names)]
