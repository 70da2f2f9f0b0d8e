r"""Serve a classifier as a defended black box on 127.0.0.1 (see rsec/stealing/server.py).

python -m experiments.serve_victim --config=configs/serve_victim.py \
    --config.classifier_workdir=workdirs/train_classifier --workdir=workdirs/victim \
    [--config.defence.name=mad --config.defence.eps=0.5] [--config.port=0]

Writes config.json, server.json (its address), budgets.json (per-key images answered;
a restarted server continues from it) and queries.jsonl into the workdir.
"""
from __future__ import annotations

import os

import numpy as np

from rsec import config as cfg_lib
from rsec import io
from rsec.stealing import server
from rsec.stealing.victim import victim_from_workdir


def run(c, workdir: str) -> None:
  cfg_lib.check(c, "classifier_workdir", type_=str)
  cfg_lib.check(c, "port", type_=int, low=0, high=65535)
  cfg_lib.check(c, "max_batch", type_=int, low=1)
  cfg_lib.check(c, "max_body_bytes", type_=int, low=1)
  cfg_lib.check(c, "seed", type_=int, low=0)
  keys = server.parse_api_keys(c.api_keys)
  victim = victim_from_workdir(c.classifier_workdir, defence=c.defence.to_dict(),
                               output=c.output.to_dict(), seed=c.seed, key_mode=c.key_mode,
                               chunk=c.chunk)
  io.prepare_workdir(workdir)
  cfg_lib.check_same_run(workdir, c, ignore=("port", "api_keys", "max_batch", "max_body_bytes",
                                             "log_images"))
  io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(c))
  victim.respond(np.zeros((1,) + victim.input_shape, np.float32))  # compile before serving
  app = server.make_app(victim, workdir, keys, max_batch=c.max_batch,
                        max_body_bytes=c.max_body_bytes, log_images=c.log_images)
  server.serve(app, workdir, c.port)


if __name__ == "__main__":
  cfg_lib.cli_main(run, "configs/serve_victim.py")
