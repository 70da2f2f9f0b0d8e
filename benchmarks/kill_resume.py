"""SIGKILL a training run 20 times (aiming in turn at startup, training and a checkpoint
write the process started), restart it each time, and check the result is bit-identical
to an uninterrupted run (every checkpoint array, metrics.jsonl, results.json but its
timing fields, TensorBoard scalars).

python -m benchmarks.kill_resume [--kills 20]
"""
from __future__ import annotations

import argparse
import json
import tempfile

from tests.reliability import kill_harness


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--kills", type=int, default=20)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  tmp = tempfile.mkdtemp(prefix="rsec_kill_")
  cache = f"{tmp}/cache"
  kill_harness.run_to_end(f"{tmp}/ref", cache)
  landed = kill_harness.run_with_kills(f"{tmp}/killed", cache, args.kills, args.seed)
  diffs = kill_harness.compare(f"{tmp}/ref", f"{tmp}/killed")
  print(json.dumps({
      "kills": len(landed),
      "landed": {phase: landed.count(phase) for phase in kill_harness.PHASES},
      "bit_identical": not diffs, "differences": diffs,
      "survived": f"{len(landed) if not diffs else 0}/{args.kills}"}, indent=2))


if __name__ == "__main__":
  main()
