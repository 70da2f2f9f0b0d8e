"""Serve a trained classifier as a defended black box over HTTP on 127.0.0.1.

  python -m experiments.serve_victim --config=configs/serve_victim.py \\
      --config.classifier_workdir=DIR --workdir=workdirs/victim [--config.defence.name=mad]

One preset (the server has no quick/paper distinction); `defence` holds the settings of
every defence and only those the named one takes are used.
"""
import ml_collections


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  if preset not in ("default", "quick", "paper"):
    raise ValueError(f"unknown preset {preset!r}; expected 'default'")
  c = ml_collections.ConfigDict()
  c.classifier_workdir = ""     # a train_classifier workdir (the victim)
  c.seed = 0                    # the defence's key: fold_in(key(seed), 1)
  c.key_mode = "content"        # per-row randomness from the image ('content') or its stream index
  c.defence = ml_collections.ConfigDict(dict(
      name="none",              # rsec.stealing.DEFENCES
      decimals=2,               # rounding
      k=1,                      # topk
      cutoff=0.25,              # high_confidence
      beta=0.7, gamma=0.2,      # reverse_sigmoid
      sigma=1.0,                # logit_noise
      eps=0.5,                  # simplex_noise, mad*: L1 utility budget
      seed=0,                   # mad*: the random surrogate's initialisation
      tau=0.5, nu=1000.0,       # adaptive_misinformation
      misinformation_workdir="",  # adaptive_misinformation: train_classifier, mode=misinformation
  ))
  c.output = ml_collections.ConfigDict(dict(mode="probs", k=1, decimals=2))
  c.api_keys = "attacker=10000"  # KEY=BUDGET (images), comma-separated
  c.port = 8470                 # 0: a free port (written to WORKDIR/server.json)
  c.max_batch = 1000            # images per request
  c.max_body_bytes = 64 << 20
  c.chunk = 250                 # rows per compiled call (rounded up to a device multiple)
  c.log_images = False          # also keep every queried image (WORKDIR/queries/)
  return c
