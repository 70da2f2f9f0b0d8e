"""Kill a real training subprocess with SIGKILL, restart it, compare with an uninterrupted run.

One harness for every training that goes through the one loop: a `Target` names the
entry point, its overrides, the part whose checkpoints and log the kills watch, and how to
read a finished run. Used by tests/reliability/test_kill_resume.py (the classifier, a few
kills), the VAE-GAN and remover resume tests, and benchmarks/kill_resume.py (20 kills).

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

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Callable

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


@dataclasses.dataclass(frozen=True)
class Target:
  """A training entry point to kill. `part` is the folder (under the workdir) holding the
  watched `checkpoints/` and `metrics.jsonl` ('' for the workdir itself); `read` returns
  (every checkpoint array, metrics.jsonl rows, TensorBoard scalars) of a finished run."""
  entry: str
  config: str
  overrides: tuple[str, ...]
  read: Callable[[str], tuple[dict, list, list]]
  checkpoints: str = "checkpoints"
  metrics: str = "metrics.jsonl"
  timing: tuple[str, ...] = TIMING_RESULTS

  def command(self, workdir: str, cache_dir: str | None) -> list[str]:
    cache = [f"--config.data.cache_dir={cache_dir}"] if cache_dir else []
    return [sys.executable, "-m", f"experiments.{self.entry}", f"--config={self.config}",
            f"--workdir={workdir}", *cache, *self.overrides]


def _arrays(tree) -> dict:
  import jax
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


def _logs(directory: str) -> tuple[list, list]:
  """metrics.jsonl rows and TensorBoard scalars (step, tag, value) of a log folder."""
  from tensorboardX.proto import event_pb2
  from rsec.training.metrics import read_event_records
  rows = [json.loads(l) for l in open(os.path.join(directory, "metrics.jsonl"))]
  tb = os.path.join(directory, "tensorboard")
  scalars = [(ev.step, v.tag, v.simple_value) for name in sorted(os.listdir(tb))
             for ev in map(event_pb2.Event.FromString,
                           read_event_records(os.path.join(tb, name)))
             for v in ev.summary.value]
  return rows, scalars


def _read_classifier(workdir: str):
  from rsec.training.classifier import restore_classifier
  state, _ = restore_classifier(workdir)
  return (_arrays(state.checkpoint_tree()), *_logs(workdir))


def _read_vaegan(workdir: str):
  from rsec.manifold import learned
  state, _ = learned.restore_vaegan(workdir)
  return (_arrays(state.checkpoint_tree()), *_logs(workdir))


REMOVER_PARTS = ("classifier_mask", "classifier_eval", "inpainter", "mask_generator")


def _read_remover(workdir: str):
  from rsec.context.train_remover import load_remover
  models, _ = load_remover(workdir)
  arrays = {f"{n}{k}": v for n, m in models.items() if m is not None
            for k, v in _arrays(m.checkpoint_tree()).items()}
  rows, scalars = [], []
  for part in REMOVER_PARTS:
    r, t = _logs(os.path.join(workdir, "logs", part))
    rows += [dict(x, part=part) for x in r]
    scalars += [(part, *x) for x in t]
  return arrays, rows, scalars


CLASSIFIER = Target("train_classifier", "configs/train_classifier.py:quick", OVERRIDES,
                    _read_classifier)
VAEGAN = Target("train_vaegan", "configs/train_vaegan.py:quick", (
    "--config.data.train_size=200", "--config.data.test_size=40",
    "--config.model.latent_dim=3", "--config.model.channels=(4,4,4)",
    "--config.model.disc_channels=(4,4,4)", "--config.training.batch_size=4",
    "--config.training.epochs=8", "--config.training.steps_per_call=2",
    "--config.training.checkpoint_every=4", "--config.training.log_every=6",
    "--config.eval.batch_size=20", "--config.eval.num_images=2", "--config.progress=False",
), _read_vaegan, timing=("train_seconds", "seconds_per_step"))
REMOVER = Target("train_remover", "configs/train_remover.py:quick", (
    "--config.data.train_size=128", "--config.data.test_size=64",
    *(f"--config.{p}.{k}={v}" for p in ("classifier_mask", "classifier_eval")
      for k, v in (("steps", 10), ("batch_size", 32), ("model", "mlp"))),
    "--config.classifier_mask.augment=0.5",
    *(f"--config.{p}.{k}={v}" for p in ("inpainter", "mask_generator")
      for k, v in (("steps", 24), ("batch_size", 16), ("steps_per_call", 2),
                   ("checkpoint_every", 4), ("channels", "(8,8,8)"),
                   ("d_channels", "(8,8,8)"))),
    "--config.progress=False",
), _read_remover, checkpoints="checkpoints/mask_generator",
    metrics="logs/mask_generator/metrics.jsonl",
    timing=tuple(f"{p}_seconds" for p in ("data", "classifier", "inpainter", "mask_generator",
                                          "eval")))


def _env(killed: bool = False) -> dict:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, the same for every run
  if killed:
    # A process that may be SIGKILLed reads the shared persistent compilation cache but
    # never writes it: jax writes an entry in place, so a kill mid-write would leave a
    # truncated entry that crashes (segfaults) the next process that reads it.
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1e9"
  return env


def run_to_end(workdir: str, cache_dir: str | None, target: Target = CLASSIFIER) -> None:
  subprocess.run(target.command(workdir, cache_dir), cwd=ROOT, env=_env(), check=True,
                 capture_output=True, timeout=600)


def _checkpoint_steps(directory: str) -> list[int]:
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) \
      if os.path.isdir(directory) else []


def _write_started_after(directory: str, t0: float) -> bool:
  """A save in progress that this process began (a tmp dir younger than the process)."""
  if not os.path.isdir(directory):
    return False
  for n in os.listdir(directory):
    if ".orbax-checkpoint-tmp" in n:
      try:
        if os.stat(os.path.join(directory, n)).st_mtime >= t0:
          return True
      except FileNotFoundError:  # renamed into place as we looked
        pass
  return False


def _inode(path: str) -> int | None:
  try:
    return os.stat(path).st_ino
  except FileNotFoundError:
    return None


def _logged_past(path: str, step: int, stale_inode: int | None) -> bool:
  """This process logged a step after `step`. Rows a killed process left behind do not
  count: a resuming run first rewrites metrics.jsonl (truncate_after, a new inode)."""
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


def _phase(ckpt: str, metrics: str, t0: float, restored: int, stale_inode: int | None) -> str:
  if _write_started_after(ckpt, t0):
    return "checkpoint write"
  return "training" if _logged_past(metrics, restored, stale_inode) else "startup"


def run_with_kills(workdir: str, cache_dir: str | None, kills: int, seed: int = 0,
                   log=print, target: Target = CLASSIFIER,
                   aims: tuple[str, ...] = PHASES) -> list[str]:
  """Runs training, SIGKILLing it `kills` times, aiming at `aims` (PHASES names) in turn.
  Returns where each kill landed (a PHASES name, as observed at the kill)."""
  rng = random.Random(seed)
  ckpt, metrics = (os.path.join(workdir, target.checkpoints),
                   os.path.join(workdir, target.metrics))
  landed = []
  while True:
    restored = (_checkpoint_steps(ckpt) or [0])[-1]
    stale = _inode(metrics)
    t0 = time.time() - 0.01  # mtime resolution: a write this process starts is newer
    proc = subprocess.Popen(target.command(workdir, cache_dir), cwd=ROOT,
                            env=_env(killed=True), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    if len(landed) >= kills:
      _, err = proc.communicate(timeout=600)
      if proc.returncode != 0:
        raise RuntimeError(f"final run failed ({proc.returncode}): {err.decode()[-2000:]}")
      return landed
    aim = aims[len(landed) % len(aims)]
    deadline = time.time() + 300
    strike_at = time.time() + rng.uniform(0.0, 2.0)
    while proc.poll() is None and time.time() < deadline:
      if aim == "startup" and time.time() >= strike_at:
        break
      # Right after a save of this process has finished, in the few steps before the
      # next one (saves take longer than 4 training steps here, so a random delay would
      # mostly land in a write).
      if (aim == "training" and _logged_past(metrics, restored, stale)
          and (_checkpoint_steps(ckpt) or [0])[-1] > restored
          and not _write_started_after(ckpt, t0)):
        break
      if aim == "checkpoint write" and _write_started_after(ckpt, t0):
        break
      time.sleep(0.002)
    how = _phase(ckpt, metrics, t0, restored, stale)
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


def compare(ref_dir: str, killed_dir: str, target: Target = CLASSIFIER) -> list[str]:
  """Differences between two finished runs (empty when bit-identical): every checkpoint
  array, every metrics.jsonl row, every results.json key but the target's timing fields,
  every TensorBoard scalar (step, tag, value)."""
  pa, ra, ta = target.read(ref_dir)
  pb, rb, tb = target.read(killed_dir)
  diffs = [k for k in sorted(set(pa) | set(pb))
           if k not in pa or k not in pb or not np.array_equal(pa[k], pb[k])]
  if ra != rb:
    diffs.append("metrics.jsonl rows differ")
  xa, xb = (json.load(open(os.path.join(d, "results.json"))) for d in (ref_dir, killed_dir))
  for k in sorted(set(xa) | set(xb)):
    if k not in target.timing and xa.get(k) != xb.get(k):
      diffs.append(f"results.json {k}: {xa.get(k)!r} vs {xb.get(k)!r}")
  if ta != tb:
    diffs.append("TensorBoard scalars differ")
  return diffs
