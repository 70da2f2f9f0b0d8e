"""What a defence costs the defender: utility of the defended answers on labelled data."""
from __future__ import annotations

import numpy as np

from rsec.checks import check_labels
from rsec.stealing.defences import check_posteriors


def defender_utility(posterior: np.ndarray, defended: np.ndarray,
                     labels: np.ndarray) -> dict[str, float]:
  """Utility figures of defended posteriors y~ [N, K] against the true ones y [N, K].

  Returns accuracy (argmax y~ vs labels), undefended_accuracy (argmax y), accuracy_loss
  (their difference), flip_rate (share of rows whose argmax changed), mean_l1
  (||y~ - y||_1) and mean_kl (KL(y~ || y) in nats, y floored at 1e-12 so answers that
  zero classes out stay finite).
  """
  y = check_posteriors("posterior", posterior)
  yt = check_posteriors("defended", defended, y.shape[1])
  if yt.shape != y.shape:
    raise ValueError(f"defended has shape {yt.shape} but posterior has {y.shape}")
  check_labels("labels", np.asarray(labels), y.shape[1], len(y))
  acc = float(np.mean(yt.argmax(1) == labels))
  acc0 = float(np.mean(y.argmax(1) == labels))
  with np.errstate(divide="ignore", invalid="ignore"):
    kl = np.where(yt > 0, yt * (np.log(np.maximum(yt, 1e-30)) - np.log(np.maximum(y, 1e-12))), 0)
  return {"accuracy": acc, "undefended_accuracy": acc0, "accuracy_loss": acc0 - acc,
          "flip_rate": float(np.mean(yt.argmax(1) != y.argmax(1))),
          "mean_l1": float(np.mean(np.abs(yt - y).sum(1))),
          "mean_kl": float(np.mean(kl.sum(1)))}
