"""Rewards of the adaptive knockoff strategy (Orekondy et al., CVPR 2019, Sec. 4.1.2).

Pure, batched functions of the victim's answers y [B, K] (probability rows; one-hot and
rounded answers included, after `rsec.stealing.transfer.targets_from_outputs`):

- certainty: the top-2 margin y_(1) - y_(2) (in [0, 1]; 1 for a one-hot answer).
- diversity: sum_k max(0, y_k - mean_k), the answer's excess over the mean of the last
  answers (in [0, 1]).
- loss: the knockoff's soft cross-entropy on the answer, -sum_k y_k log softmax(z)_k, from
  the knockoff's logits z (finite for any finite logits: no log of a probability is taken).
- all: the mean of the three, each z-normalised by the mean and standard deviation of its
  own history (this batch included); a reward whose history has no spread contributes 0.

ART's version exponentiates outputs it assumes are logits, takes log(0) and divides by a
zero standard deviation (ART issue #1746); none of that can happen here (tested).
"""
from __future__ import annotations

import numpy as np

REWARDS = ("certainty", "diversity", "loss", "all")


def certainty(y: np.ndarray) -> np.ndarray:
  top2 = -np.sort(-np.asarray(y, np.float64), axis=-1)[:, :2]
  return top2[:, 0] - top2[:, 1]


def diversity(y: np.ndarray, mean: np.ndarray) -> np.ndarray:
  return np.maximum(0.0, np.asarray(y, np.float64) - np.asarray(mean, np.float64)[None]).sum(-1)


def loss(y: np.ndarray, logits: np.ndarray) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -(np.asarray(y, np.float64) * log_p).sum(-1)


def znormalise(r: np.ndarray, history: np.ndarray) -> np.ndarray:
  """(r - mean) / std over `history` (which includes r); 0 where the std is ~0."""
  mu, sd = float(np.mean(history)), float(np.std(history))
  return np.zeros_like(r) if sd < 1e-8 else (r - mu) / sd


class RewardTracker:
  """Computes a named reward for batches of answers, keeping what it needs across batches:
  the last `window` answers (diversity) and every reward's history (`all`)."""

  def __init__(self, name: str, num_classes: int, window: int = 500):
    from rsec.checks import check_choice, check_positive_int
    self.name = check_choice("reward", name, REWARDS)
    self.window = check_positive_int("reward window", window)
    self.recent = np.zeros((0, num_classes))
    self.history = {k: np.zeros(0) for k in REWARDS[:3]}

  def __call__(self, y: np.ndarray, logits: np.ndarray | None) -> np.ndarray:
    """Rewards [B] (float64, finite) of answers y [B, K]; `logits` [B, K] of the knockoff
    (needed for 'loss' and 'all')."""
    y = np.asarray(y, np.float64)
    mean = self.recent.mean(0) if len(self.recent) else np.full(y.shape[1], 1.0 / y.shape[1])
    parts = {"certainty": lambda: certainty(y), "diversity": lambda: diversity(y, mean),
             "loss": lambda: loss(y, logits)}
    if self.name in ("loss", "all") and logits is None:
      raise ValueError(f"reward {self.name!r} needs the knockoff's logits")
    wanted = REWARDS[:3] if self.name == "all" else (self.name,)
    raw = {k: parts[k]() for k in wanted}
    for k, v in raw.items():
      self.history[k] = np.concatenate([self.history[k], v])
    self.recent = np.concatenate([self.recent, y])[-self.window:]
    if self.name != "all":
      return raw[self.name]
    return np.mean([znormalise(raw[k], self.history[k]) for k in wanted], axis=0)
