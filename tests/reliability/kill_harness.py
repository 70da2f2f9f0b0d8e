"""Kill a real training subprocess with SIGKILL, restart it, compare with an uninterrupted run.

Used by tests/reliability/test_kill_resume.py (a few kills) and
benchmarks/kill_resume.py (20 kills).

Kills aim at three phases in turn and are labelled by what was observed at the moment of
the kill, not by the aim:
- 'startup': the restarted process had not yet logged a step past the one it resumed
  from (importing, restoring, compiling);
- 'training': it had (its own metrics.jsonl, rewritten on resume, holds a row after its
  restored step);
- 'checkpoint write': an orbax temporary directory created after this process started
  existed (a save in progress). Directories left by an earlier killed write do not
  count (they predate the process, and the restarted process deletes them).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHASES = ("startup", "training", "checkpoint write")
TIMING_RESULTS = ("examples_per_second", "train_seconds")  # not compared: wall-clock figures

OVERRIDES = (
    "--config.data.train_size=2000", "--config.data.test_size=200",
    "--config.training.epochs=8", "--config.training.checkpoint_every=4",
    "--config.training.steps_per_call=2", "--config.training.log_every=8",
    "--config.eval.batch_size=100", "--config.progress=False",
)


def command(workdir: str, cache_dir: str) -> list[str]:
  return [sys.executable, "-m", "experiments.train_classifier",
          "--config=configs/train_classifier.py:quick", f"--workdir={workdir}",
          f"--config.data.cache_dir={cache_dir}", *OVERRIDES]


def _env() -> dict:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, the same for every run
  return env


def run_to_end(workdir: str, cache_dir: str) -> None:
  subprocess.run(command(workdir, cache_dir), cwd=ROOT, env=_env(), check=True,
                 capture_output=True, timeout=600)


def _checkpoint_steps(workdir: str) -> list[int]:
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _write_started_after(workdir: str, t0: float) -> bool:
  """A save in progress that this process began (a tmp dir younger than the process)."""
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return False
  for n in os.listdir(d):
    if ".orbax-checkpoint-tmp" in n:
      try:
        if os.stat(os.path.join(d, n)).st_mtime >= t0:
          return True
      except FileNotFoundError:  # renamed into place as we looked
        pass
  return False


def _inode(path: str) -> int | None:
  try:
    return os.stat(path).st_ino
  except FileNotFoundError:
    return None


def _logged_past(workdir: str, step: int, stale_inode: int | None) -> bool:
  """This process logged a step after `step`. Rows a killed process left behind do not
  count: a resuming run first rewrites metrics.jsonl (truncate_after, a new inode)."""
  path = os.path.join(workdir, "metrics.jsonl")
  inode = _inode(path)
  if inode is None or inode == stale_inode:
    return False
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)["step"] > step:
          return True
      except (ValueError, KeyError):  # a line being written
        pass
  return False


def _phase(workdir: str, t0: float, restored: int, stale_inode: int | None) -> str:
  if _write_started_after(workdir, t0):
    return "checkpoint write"
  return "training" if _logged_past(workdir, restored, stale_inode) else "startup"


def run_with_kills(workdir: str, cache_dir: str, kills: int, seed: int = 0,
                   log=print) -> list[str]:
  """Runs training, SIGKILLing it `kills` times, aiming at the PHASES in turn. Returns
  where each kill landed (a PHASES name, as observed at the kill)."""
  rng = random.Random(seed)
  landed = []
  while True:
    restored = (_checkpoint_steps(workdir) or [0])[-1]
    stale = _inode(os.path.join(workdir, "metrics.jsonl"))
    t0 = time.time() - 0.01  # mtime resolution: a write this process starts is newer
    proc = subprocess.Popen(command(workdir, cache_dir), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if len(landed) >= kills:
      _, err = proc.communicate(timeout=600)
      if proc.returncode != 0:
        raise RuntimeError(f"final run failed ({proc.returncode}): {err.decode()[-2000:]}")
      return landed
    aim = PHASES[len(landed) % len(PHASES)]
    deadline = time.time() + 300
    strike_at = time.time() + rng.uniform(0.0, 2.0)
    while proc.poll() is None and time.time() < deadline:
      if aim == "startup" and time.time() >= strike_at:
        break
      # Right after a save of this process has finished, in the few steps before the
      # next one (saves take longer than 4 training steps here, so a random delay would
      # mostly land in a write).
      if (aim == "training" and _logged_past(workdir, restored, stale)
          and (_checkpoint_steps(workdir) or [0])[-1] > restored
          and not _write_started_after(workdir, t0)):
        break
      if aim == "checkpoint write" and _write_started_after(workdir, t0):
        break
      time.sleep(0.002)
    how = _phase(workdir, t0, restored, stale)
    if proc.poll() is not None:  # finished before we struck: start over from scratch
      proc.communicate()
      log("run finished before the kill; restarting the whole attempt")
      _wipe(workdir)
      landed = []
      continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    landed.append(how)
    log(f"kill {len(landed)}/{kills} (aimed at {aim}): {how}, resumed from step {restored}")


def _wipe(workdir: str) -> None:
  import shutil
  shutil.rmtree(workdir, ignore_errors=True)


def final_state(workdir: str) -> tuple[dict, list[dict], dict, list]:
  """(every array of the final checkpoint: step, parameters, BatchNorm statistics and
  optimizer state; metrics.jsonl rows; results.json; TensorBoard scalars) of a run."""
  import jax
  from tensorboardX.proto import event_pb2
  from rsec.training.classifier import restore_classifier
  from rsec.training.metrics import read_event_records
  state, _ = restore_classifier(workdir)
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state.checkpoint_tree()))[0]
  arrays = {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  results = json.load(open(os.path.join(workdir, "results.json")))
  tb = os.path.join(workdir, "tensorboard")
  scalars = [(ev.step, v.tag, v.simple_value) for name in sorted(os.listdir(tb))
             for ev in map(event_pb2.Event.FromString,
                           read_event_records(os.path.join(tb, name)))
             for v in ev.summary.value]
  return arrays, rows, results, scalars


def compare(ref_dir: str, killed_dir: str) -> list[str]:
  """Differences between two finished runs (empty when bit-identical): every checkpoint
  array, every metrics.jsonl row, every results.json key but TIMING_RESULTS, every
  TensorBoard scalar (step, tag, value)."""
  pa, ra, xa, ta = final_state(ref_dir)
  pb, rb, xb, tb = final_state(killed_dir)
  diffs = [k for k in sorted(set(pa) | set(pb))
           if k not in pa or k not in pb or not np.array_equal(pa[k], pb[k])]
  if ra != rb:
    diffs.append("metrics.jsonl rows differ")
  for k in sorted(set(xa) | set(xb)):
    if k not in TIMING_RESULTS and xa.get(k) != xb.get(k):
      diffs.append(f"results.json {k}: {xa.get(k)!r} vs {xb.get(k)!r}")
  if ta != tb:
    diffs.append("TensorBoard scalars differ")
  return diffs
