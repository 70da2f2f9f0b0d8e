"""What a defence costs the defender: utility of the defended answers on labelled data."""
from __future__ import annotations

import numpy as np

from rsec.checks import check_labels
from rsec.stealing.defences import check_posteriors
from rsec.stealing.outputs import top1_share


def defender_utility(posterior: np.ndarray, defended: np.ndarray,
                     labels: np.ndarray) -> dict[str, float]:
  """Utility figures of defended posteriors y~ [N, K] against the true ones y [N, K].

  Returns accuracy (the label is the top-1 of y~), undefended_accuracy (of y),
  accuracy_loss (their difference), flip_rate (share of rows whose top-1 is no longer
  y's argmax), mean_l1 (||y~ - y||_1) and mean_kl (KL(y~ || y) in nats, y floored at
  1e-12 so answers that zero classes out stay finite).
  A top-1 tied with other classes (within `outputs.TIE_TOL`) counts as 1 / (tied
  classes) of a hit: a defence cannot keep the top-1 by serving a tie that only
  lowest-index tie-breaking resolves.
  """
  y = check_posteriors("posterior", posterior)
  yt = check_posteriors("defended", defended, y.shape[1])
  if yt.shape != y.shape:
    raise ValueError(f"defended has shape {yt.shape} but posterior has {y.shape}")
  check_labels("labels", np.asarray(labels), y.shape[1], len(y))
  acc = float(np.mean(top1_share(yt, labels)))
  acc0 = float(np.mean(top1_share(y, labels)))
  with np.errstate(divide="ignore", invalid="ignore"):
    kl = np.where(yt > 0, yt * (np.log(np.maximum(yt, 1e-30)) - np.log(np.maximum(y, 1e-12))), 0)
  return {"accuracy": acc, "undefended_accuracy": acc0, "accuracy_loss": acc0 - acc,
          "flip_rate": float(np.mean(1.0 - top1_share(yt, y.argmax(1)))),
          "mean_l1": float(np.mean(np.abs(yt - y).sum(1))),
          "mean_kl": float(np.mean(kl.sum(1)))}
