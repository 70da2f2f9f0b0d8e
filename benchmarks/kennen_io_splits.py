"""kennen-io vs kennen-o (scores, R split) over several R splits of one zoo.

python -m benchmarks.kennen_io_splits --zoo_workdir=DIR/zoo [--seeds 1 2 3] [--out OUT.json]

The zoo is a reverse-engineering quick run's (`experiments.reverse_engineering`,
WORKDIR/zoo). Each seed draws another R split and other metamodel keys: the study's
`config.seed` is set after the zoo is loaded (the zoo and its data stay those of seed 0),
and `Study.kennen_o` / `Study.kennen_io` run as the experiment runs them. One R test set
is 20% of the zoo (115 black boxes at quick), so one split's difference is noisy.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--zoo_workdir", required=True)
  ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
  ap.add_argument("--out", default="")
  args = ap.parse_args()

  from configs.reverse_engineering import get_config
  from rsec.studies import reverse_engineering as study_lib
  c = get_config("quick")
  c.zoo_workdir, c.progress = args.zoo_workdir, False
  study = study_lib.Study(c, args.zoo_workdir)
  study.build_zoo()   # a finished zoo: loads it, trains nothing
  n = c.kennen.n_queries
  rows = []
  for seed in args.seeds:
    study.c.seed = seed
    r = study.split("R")

    def mean_accuracy(pred):
      return float(np.mean([s["accuracy"] for s in study.scores(r, pred, "", "score", n)]))
    base, pred_o = study.kennen_o(r, "score", n)
    row = {"seed": seed, "kennen_o": mean_accuracy(pred_o),
           "kennen_io": mean_accuracy(study.kennen_io(r, base))}
    row["difference_points"] = 100 * (row["kennen_io"] - row["kennen_o"])
    rows.append(row)
    print(json.dumps(row), flush=True)
  diffs = [r["difference_points"] for r in rows]
  result = {"zoo_workdir": args.zoo_workdir, "splits": rows,
            "mean_difference_points": float(np.mean(diffs)),
            "std_difference_points": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0}
  print(json.dumps(result, indent=1))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
