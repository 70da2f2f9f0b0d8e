"""Atomic writes of results and reports (temp file + rename: never half-written)."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` so readers see either the old file or the whole new one."""
  _atomic(path, "w", lambda f: f.write(text))


def save_npz_atomic(path: str, arrays: dict) -> None:
  """np.savez of `arrays` to `path` (ending in .npz), atomically."""
  import numpy as np
  _atomic(path, "wb", lambda f: np.savez(f, **arrays))


def _atomic(path: str, mode: str, write) -> None:
  """Runs write(file) on a temp file beside `path`, fsyncs it and renames it onto `path`."""
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def prepare_workdir(path: str) -> str:
  """Creates `path` if needed and proves it writable; ValueError naming it otherwise."""
  try:
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"--workdir {path!r} is not a writable directory: {e.strerror or e}") from None
  return path


def write_json_atomic(path: str, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def finished_results(workdir: str, config_json: str) -> Any | None:
  """results.json of a run in `workdir` that finished with the same config, else None."""
  results, config = os.path.join(workdir, "results.json"), os.path.join(workdir, "config.json")
  if os.path.exists(results) and os.path.exists(config):
    with open(config) as f:
      if f.read() == config_json:
        return read_json(results)
  return None


def is_chief() -> bool:
  """Only process 0 writes reports and results in multi-host runs."""
  return jax.process_index() == 0


def _default(o):
  import numpy as np
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (np.floating,)):
    return float(o)
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(f"not JSON serialisable: {type(o)}")
