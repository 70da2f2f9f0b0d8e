"""Small builders shared by test files (and by the processes some tests launch).

A module rather than fixtures: `tests/reliability/multihost_worker.py` runs outside
pytest, and the bad-input walks build their inputs inside case tables at import time.
"""
import os
import sys

import jax
import numpy as np

from rsec.models.classifiers import make_model
from rsec.training.state import create_train_state, make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def squares_data(n=400, seed=0):
  """Ten classes, each a bright square at its own place: learnable in a few steps.

  Returns {'image': float32 [n, 16, 16, 1] in [0, 1], 'label': int32 [n]}.
  """
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 10, n).astype(np.int32)
  x = rng.random((n, 16, 16, 1)).astype(np.float32) * 0.2
  for i, c in enumerate(y):
    r, q = divmod(int(c), 5)
    x[i, 2 + 6 * r:6 + 6 * r, 1 + 3 * q:3 + 3 * q] = 1.0
  return {"image": x, "label": y}


def small_state(model="paper_classifier", lr=0.01, seed=0):
  """A fresh 10-class TrainState for 16 x 16 x 1 images (not replicated)."""
  m = make_model(model, 10)
  tx = make_optimizer(lr, 4, lr_decay=0.95, b1=0.5, b2=0.9, weight_decay=1e-4)
  return create_train_state(m, tx, jax.random.key(seed), (1, 16, 16, 1))


def host_params(state):
  """The parameters of a (possibly replicated) TrainState as host NumPy arrays."""
  return jax.tree.map(np.asarray, jax.device_get(state.params))


def untrained_classifier_workdir(workdir, model="mlp"):
  """A train_classifier workdir (config.json, one checkpoint) holding an untrained model.

  For entry points that restore a classifier before they touch their own workdir, when a
  test needs them to get that far but not to classify anything well. Returns workdir.
  """
  from configs.train_classifier import get_config
  from rsec import config as cfg_lib
  from rsec.training.checkpoint import Checkpointer
  from rsec.training.classifier import build_state, checkpoint_meta
  c = get_config("quick")
  c.model.name = model
  shape = (c.data.size, c.data.size, 1)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(cfg_lib.to_json(c))
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), checkpoint_meta(c, 10, shape))
  try:
    ckpt.save(build_state(c, 10, shape, 1))
  finally:
    ckpt.close()
  return workdir


def cli_flag_names():
  """The absl flags cli_main defines (--config, its overrides, --workdir)."""
  from absl import flags
  return [name for name in flags.FLAGS
          if name in ("config", "workdir", "jax_distributed", "coordinator", "num_processes",
                      "process_id") or name.startswith("config.")]


def run_entry_point(entry: str, args: list[str], capsys) -> tuple[int, str]:
  """Runs `python -m experiments.<entry> *args` in this process: (exit status, stderr).

  capsys is pytest's fixture (what it captured before the call is dropped).
  cli_main defines its flags on absl's global FLAGS at each call and app.run parses
  them, so the flags it defined are deleted afterwards and FLAGS left unparsed; logging
  levels and handlers app.run changes are put back. An exception that escapes is printed
  as the interpreter would (a traceback on stderr, status 1).
  """
  import logging
  import runpy
  import traceback
  import warnings
  from absl import command_name, flags
  from absl import logging as absl_logging
  saved_argv, saved_cwd = sys.argv, os.getcwd()
  saved_handlers, saved_level = list(logging.root.handlers), logging.root.level
  saved_verbosity = absl_logging.get_verbosity()
  saved_rename = command_name.make_process_name_useful
  command_name.make_process_name_useful = lambda: None  # keep pytest's process name
  capsys.readouterr()
  try:
    os.chdir(ROOT)  # the default --config paths are relative to the repository root
    sys.argv = [os.path.join(ROOT, "experiments", f"{entry}.py"), *args]
    with warnings.catch_warnings():
      # runpy warns when the entry point was imported already (by a test): it runs a
      # fresh copy as __main__, as `python -m` would, and leaves the imported one alone.
      warnings.filterwarnings("ignore", r".* found in sys\.modules after import", RuntimeWarning)
      # ml_collections loads --config files with the deprecated importlib load_module().
      warnings.filterwarnings("ignore", r"the load_module\(\) method", DeprecationWarning)
      runpy.run_module(f"experiments.{entry}", run_name="__main__", alter_sys=True)
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if isinstance(e.code, str):
      print(e.code, file=sys.stderr)
  except Exception:  # noqa: BLE001 -- what a real process would show
    traceback.print_exc()
    code = 1
  finally:
    sys.argv = saved_argv
    os.chdir(saved_cwd)
    command_name.make_process_name_useful = saved_rename
    for name in cli_flag_names():
      delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
    for h in logging.root.handlers[:]:
      if h not in saved_handlers:
        logging.root.removeHandler(h)
    logging.root.setLevel(saved_level)
    absl_logging.set_verbosity(saved_verbosity)
  return code, capsys.readouterr().err
