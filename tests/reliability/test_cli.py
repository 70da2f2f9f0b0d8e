"""Every entry point's command line refuses bad invocations cleanly.

For each `experiments/*.py` that ends in `cfg_lib.cli_main` and each way a command line
goes wrong (no --workdir, a stray positional argument, an override of the wrong type,
an override of a key the config lacks, a workdir that cannot be written), the process
must exit with status 2 and print exactly one line, `error: ...`, naming the problem:
no traceback, no usage dump, and nothing written into the workdir.

The entry points run in this process (`run_entry_point`: the module's `__main__` block
through runpy, with absl's global flags cleaned up after each call), so the 40 cases do
not pay a Python + JAX start-up each; `test_in_process_runs_match_real_processes` checks
the two ways agree on one entry point.
"""
import glob
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, cli_flag_names, run_entry_point, untrained_classifier_workdir

UNWRITABLE = "/proc/rsec_cli_cannot_write_here"  # root can chmod past 0o500, not /proc

# Entry point -> the arguments it needs to get as far as its own workdir (the ones that
# serve or attack a classifier restore it first); "{clf}" is an untrained one.
ENTRY_POINTS = {
    "train_classifier": (),
    "attack_eval": ("--config.classifier_workdir={clf}",),
    "train_vaegan": (),
    # Its preset's eval.batch_size (250) does not divide by the 4 test devices.
    "robustness_generalization": ("--config.eval.batch_size=200",),
    "context_sensitivity": (),
    "train_remover": (),
    "serve_victim": ("--config.classifier_workdir={clf}",),
    "defence_utility": (),
    "model_stealing": (),
    "reverse_engineering": (),
}

# kind -> (argv given the workdir and the entry point's own arguments, what the error
# line must hold, absl-reported?)
KINDS = {
    "missing --workdir": (lambda w, extra: [*extra], "--workdir is required", True),
    "stray positional argument": (lambda w, extra: [f"--workdir={w}", *extra, "stray"],
                                  "unexpected arguments: ['stray']", True),
    "wrongly typed override": (lambda w, extra: [f"--workdir={w}", *extra, "--config.seed=abc"],
                               "--config.seed=abc: invalid literal for int()", True),
    "unknown key": (lambda w, extra: [f"--workdir={w}", *extra, "--config.bogus_key=1"],
                    "unknown config key 'config.bogus_key': config has no field 'bogus_key'",
                    False),
    "unwritable workdir": (lambda w, extra: [f"--workdir={UNWRITABLE}", *extra],
                           f"--workdir {UNWRITABLE!r} is not a writable directory", False),
}


@pytest.fixture(scope="module")
def classifier_workdir(tmp_path_factory):
  return untrained_classifier_workdir(str(tmp_path_factory.mktemp("cli_classifier")))


def _snapshot(d):
  return {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(d, "**"), recursive=True)}


def test_every_entry_point_is_covered():
  """A new entry point (the model-stealing ones as they land) must join ENTRY_POINTS."""
  found = set()
  for path in glob.glob(os.path.join(ROOT, "experiments", "*.py")):
    with open(path) as f:
      if "cli_main(" in f.read():
        found.add(os.path.basename(path)[:-3])
  assert found == set(ENTRY_POINTS)


CASES = [pytest.param(entry, kind, id=f"{entry}: {kind}")
         for entry in ENTRY_POINTS for kind in KINDS]


@pytest.mark.parametrize("entry,kind", CASES)
def test_bad_command_line_exits_2_with_one_error_line(entry, kind, tmp_path, capsys,
                                                      classifier_workdir):
  make_argv, message, _ = KINDS[kind]
  extra = [a.format(clf=classifier_workdir) for a in ENTRY_POINTS[entry]]
  workdir = tmp_path / "out"
  before = _snapshot(classifier_workdir)
  code, err = run_entry_point(entry, make_argv(workdir, extra), capsys)
  assert "Traceback" not in err, err[-3000:]
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1, (code, err[-3000:])
  assert lines[0].startswith("error: ") and message in lines[0], lines[0]
  assert not workdir.exists() and not os.path.exists(UNWRITABLE)
  assert _snapshot(classifier_workdir) == before  # the classifier it read is untouched


def test_a_good_override_still_reaches_the_workdir(tmp_path, capsys):
  """The runner really parses overrides: a well-typed one gets past the flags, so the run
  stops only at the unwritable workdir (the failure kinds above are not a parse artefact)."""
  code, err = run_entry_point("train_classifier",
                              [f"--workdir={UNWRITABLE}", "--config.seed=3"], capsys)
  assert code == 2 and "is not a writable directory" in err, err[-2000:]
  # And the flags it defined are gone again: a second run in this process defines them anew.
  assert not cli_flag_names()
  code, err = run_entry_point("train_classifier",
                              [f"--workdir={UNWRITABLE}", "--config.seed=-1"], capsys)
  assert code == 2 and "config.seed must be >= 0" in err, err[-2000:]


def test_in_process_runs_match_real_processes(tmp_path, capsys):
  """The failure kinds on train_classifier: the same exit status and the same last
  stderr line in a real process as in `run_entry_point` (whatever cli_main does today).
  One kind per path an error takes (absl's usage error, absl's flag parsing, the override
  key check, run_cli); a missing --workdir takes the stray argument's."""
  argvs = {kind: make_argv(tmp_path / kind.replace(" ", "_"), [])
           for kind, (make_argv, _, _) in KINDS.items() if kind != "missing --workdir"}
  procs = {kind: subprocess.Popen([sys.executable, "-m", "experiments.train_classifier", *a],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
           for kind, a in argvs.items()}
  try:
    for kind, proc in procs.items():
      _, real_err = proc.communicate(timeout=120)
      code, err = run_entry_point("train_classifier", argvs[kind], capsys)
      assert (code, err.strip().splitlines()[-1]) == (
          proc.returncode, real_err.strip().splitlines()[-1]), kind
      assert "Traceback" not in real_err, (kind, real_err[-2000:])
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_importing_an_entry_point_starts_no_jax_backend():
  """--jax_distributed must run before any backend exists, so no entry point may start
  one at import (a module-level jnp constant did)."""
  import subprocess
  import sys
  from tests.helpers import ROOT
  entries = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "experiments"))
                   if f.endswith(".py") and f != "__init__.py")
  code = ("import importlib, jax._src.xla_bridge as xb\n"
          f"for e in {entries!r}:\n"
          "  importlib.import_module('experiments.' + e)\n"
          "  assert not xb._backends, e\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
