"""Does a code change move what trains? Runs the kill harness's three small trainings
(train_classifier, train_vaegan: the stacked VAE-GANs, train_remover: its GAN pairs) with
this checkout and with another checkout of rsec (e.g. `git worktree add /tmp/old COMMIT`),
on one CPU device, and compares every checkpoint array, metrics.jsonl row, TensorBoard
scalar and results.json value (timings aside).

python -m benchmarks.loop_parity --reference_tree /tmp/old
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

from tests.reliability import kill_harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--reference_tree", required=True, help="another checkout of rsec")
  args = p.parse_args()
  tmp = tempfile.mkdtemp(prefix="rsec_parity_")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  for name, target in (("classifier", kill_harness.CLASSIFIER),
                       ("vaegan", kill_harness.VAEGAN), ("remover", kill_harness.REMOVER)):
    dirs = []
    for tree in (args.reference_tree, ROOT):
      workdir = os.path.join(tmp, name, "reference" if tree != ROOT else "this")
      cache = None if target.entry == "train_remover" else os.path.join(tmp, "cache")
      done = subprocess.run(target.command(workdir, cache), cwd=tree, env=env,
                            capture_output=True, text=True)
      if done.returncode:
        raise SystemExit(f"{name} failed in {tree}: {done.stderr[-2000:]}")
      dirs.append(workdir)
    diffs = kill_harness.compare(*dirs, target)
    print(f"{name}: " + ("bit-identical" if not diffs else "; ".join(diffs)), flush=True)


if __name__ == "__main__":
  main()
