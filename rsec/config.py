"""Config helpers: validation with full key names, JSON round trips, the CLI boundary.

Configs are `ml_collections.ConfigDict`s of primitives. `config_flags` already rejects
unknown override keys and values of the wrong type; `check` adds ranges and choices and
names the full key (e.g. `config.training.batch_size`) in its `ValueError`.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Callable, Iterable, Sequence

import ml_collections


def get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    if part not in node:
      raise ValueError(f"config.{dotted} is missing")
    node = node[part]
  return node


def check(config: ml_collections.ConfigDict, dotted: str, *, type_: type | tuple = None,
          low: float | None = None, high: float | None = None,
          choices: Iterable[Any] | None = None, low_exclusive: bool = False) -> Any:
  """Checks one config value and returns it; ValueError names `config.<dotted>`."""
  v = get(config, dotted)
  name = f"config.{dotted}"
  if type_ is not None:
    types = type_ if isinstance(type_, tuple) else (type_,)
    if float in types and isinstance(v, int) and not isinstance(v, bool):
      v = float(v)
    if isinstance(v, bool) and bool not in types or not isinstance(v, types):
      raise ValueError(f"{name} must be of type {'/'.join(t.__name__ for t in types)}, "
                       f"got {v!r}")
  if isinstance(v, float) and not math.isfinite(v):
    raise ValueError(f"{name} must be finite, got {v}")
  if low is not None and (v < low or (low_exclusive and v == low)):
    raise ValueError(f"{name} must be {'>' if low_exclusive else '>='} {low}, got {v!r}")
  if high is not None and v > high:
    raise ValueError(f"{name} must be <= {high}, got {v!r}")
  if choices is not None and v not in list(choices):
    raise ValueError(f"{name} must be one of {sorted(choices)}, got {v!r}")
  return v


def to_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
  """Inverse of `to_json` (tuples come back as tuples where the JSON holds lists)."""
  return ml_collections.ConfigDict(_tuples(json.loads(text)))


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
  """Dotted keys whose values differ between two nested dicts (or ConfigDicts)."""
  old = old.to_dict() if isinstance(old, ml_collections.ConfigDict) else old
  new = new.to_dict() if isinstance(new, ml_collections.ConfigDict) else new
  if not (isinstance(old, dict) and isinstance(new, dict)):
    return [] if _tuples(old) == _tuples(new) else [prefix.rstrip(".") or "<root>"]
  out = []
  for k in sorted(set(old) | set(new)):
    if k not in old or k not in new:
      out.append(prefix + k)
    else:
      out += changed_keys(old[k], new[k], prefix + k + ".")
  return out


def check_same_run(workdir: str, config: ml_collections.ConfigDict,
                   ignore: tuple[str, ...] = ("progress",)) -> None:
  """ValueError if `workdir` holds a run whose config.json differs from `config` (outside
  the `ignore` prefixes): a rerun resumes finished work, which must not come from another
  configuration. Called before anything is written."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  diff = [k for k in changed_keys(old, json.loads(to_json(config)))
          if not any(k == p or k.startswith(p + ".") for p in ignore)]
  if diff:
    raise ValueError(f"--workdir {workdir!r} holds a run with another config (changed: "
                     f"{', '.join(diff[:8])}{', ...' if len(diff) > 8 else ''}); resume it "
                     f"with its own config or use a new workdir")


def _tuples(o):
  if isinstance(o, dict):
    return {k: _tuples(v) for k, v in o.items()}
  if isinstance(o, list):
    return tuple(_tuples(v) for v in o)
  return o


def run_cli(main: Callable[[], Any]) -> None:
  """Runs an entry point's body; a ValueError exits with its message, not a traceback.

  Library INFO logs (orbax's checkpoint chatter) are hidden unless `-v 1` is given.
  """
  from absl import logging as absl_logging
  if absl_logging.get_verbosity() <= absl_logging.INFO and "-v" not in " ".join(sys.argv):
    absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    main()
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """'path/to/file.py[:preset]' -> the file's get_config(preset) (as config_flags does)."""
  import importlib.util
  import os
  path, _, preset = spec.partition(":")
  if not os.path.exists(path):
    raise ValueError(f"--config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location("_rsec_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


def check_override_keys(argv: list[str], default_config: str) -> None:
  """ValueError naming the full key of any `--config.a.b=v` override the config lacks.

  (config_flags would fail later with a bare KeyError traceback.)
  """
  spec = default_config
  for a in argv:
    if a.startswith("--config="):
      spec = a.split("=", 1)[1]
  overrides = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--config.")]
  if not overrides and spec == default_config:
    return
  config = load_config_file(spec)  # also reports a missing file or an unknown preset
  for key in overrides:
    node = config
    for i, part in enumerate(key.split(".")[1:]):
      if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
        known = sorted(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
        where = ".".join(key.split(".")[:i + 1])
        raise ValueError(f"unknown config key {key!r}: {where} has no field {part!r}"
                         + (f"; known fields: {known}" if known else ""))
      node = node[part]


def init_distributed(enabled: bool, coordinator: str = "", num_processes: int = 0,
                     process_id: int = -1) -> None:
  """Joins a multi-process JAX run; call before anything creates a JAX backend.

  enabled False: nothing (one process). Otherwise `jax.distributed.initialize`: with an
  explicit `coordinator` ('host:port'), `num_processes` and `process_id`, or, when
  `coordinator` is '', auto-detected from the cluster's environment (SLURM, TPU pods,
  Open MPI, ...). Cross-process collectives on CPU go over gloo.
  """
  if not enabled:
    return
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"--coordinator={coordinator!r} needs --num_processes >= 1 and "
                       f"0 <= --process_id < num_processes, got {num_processes} and "
                       f"{process_id}")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  else:
    jax.distributed.initialize()


def _env_int(name: str, default: int) -> int:
  value = os.environ.get(name, "")
  try:
    return int(value) if value else default
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def cli_main(run: Callable[[ml_collections.ConfigDict, str], Any], default_config: str,
             headline: Sequence[str] = ()) -> None:
  """The whole `__main__` of an entry point: `--config`, `--workdir`, then `run(config, dir)`.

  Flags are defined here, not at import, so entry points can be imported side by side
  (tests, other experiments). Multi-host: `--jax_distributed` (or RSEC_JAX_INIT=1) joins
  `jax.distributed` before the run (`init_distributed`; `--coordinator`,
  `--num_processes`, `--process_id`, or RSEC_COORDINATOR / RSEC_NUM_PROCESSES /
  RSEC_PROCESS_ID; auto-detection on SLURM / TPU when no coordinator is given). The run
  ends with one line naming `<workdir>/report.md` and the `headline` results.
  """
  from absl import app, flags
  from ml_collections import config_flags

  def fail(message) -> None:
    """Usage errors as every other refusal: one `error:` line, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)

  try:
    check_override_keys(sys.argv[1:], default_config)
    env = dict(num_processes=_env_int("RSEC_NUM_PROCESSES", 0),
               process_id=_env_int("RSEC_PROCESS_ID", -1))
  except ValueError as e:
    fail(e)
  config = config_flags.DEFINE_config_file("config", default_config)
  workdir = flags.DEFINE_string("workdir", None, "Output directory (a rerun resumes).")
  dist = flags.DEFINE_bool("jax_distributed", os.environ.get("RSEC_JAX_INIT", "") not in
                           ("", "0"), "Join jax.distributed first (env RSEC_JAX_INIT=1).")
  coordinator = flags.DEFINE_string("coordinator", os.environ.get("RSEC_COORDINATOR", ""),
                                    "host:port of process 0 ('' = auto-detect).")
  nproc = flags.DEFINE_integer("num_processes", env["num_processes"], "With --coordinator.")
  pid = flags.DEFINE_integer("process_id", env["process_id"], "With --coordinator.")

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:  # a wrongly typed override, an unknown flag
      fail(e)

  def body():
    init_distributed(dist.value, coordinator.value, nproc.value, pid.value)
    results = run(config.value, workdir.value)
    report = os.path.join(workdir.value, "report.md")
    if os.path.exists(report):
      shown = [f"{k}={_short(v)}" for k in headline
               if (v := _lookup(results, k)) is not None]
      print(f"report: {report}" + (f" ({', '.join(shown)})" if shown else ""))

  def main(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments: {argv[1:]}")
    if workdir.value is None:
      fail("--workdir is required")
    run_cli(body)
  app.run(main, flags_parser=parse)


def _lookup(results: Any, key: str) -> Any:
  """results['a']['b'] for key 'a.b' (None when absent)."""
  for part in key.split("."):
    if not isinstance(results, dict) or part not in results:
      return None
    results = results[part]
  return results


def _short(v) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)
