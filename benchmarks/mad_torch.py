"""MAD as the reference method computes it (Orekondy et al., ICLR 2020, "Prediction
Poisoning"): PyTorch, one query at a time, with explicit autograd Jacobians.

The peer that benchmarks/defences.py times rsec's closed-form MAD against. Per query:
one surrogate forward at batch size 1, K calls of `torch.autograd.grad` (one per class k,
of log p_k with respect to the weight and bias of the surrogate's last nn.Linear) to build
G [K, D], then for every simplex vertex y* the line search alpha = min(1, eps /
||y* - y||_1), y~ = (1 - alpha) y + alpha y*, and the objective
||G^T y~ / |G^T y~| - G^T y / |G^T y| ||^2 (the normalised one rsec uses), keeping the best.
The loop over vertices is a Python loop, as in the reference code.

Where this differs from the reference's `bb_mad` (on purpose, so both libraries solve the
same problem): G also holds the bias gradient (the reference keeps the weight's only), and
every vertex is scored after its line search (the reference scores the raw vertices, by
default with the un-normalised objective, then line-searches the winner). It also leaves
out the reference's per-query bookkeeping (final objective values, constraint checks, the
query log), so it is, if anything, faster than the original.
"""
from __future__ import annotations

import numpy as np


def last_linear(model):
  """The last nn.Linear of `model` (the layer MAD differentiates with respect to)."""
  from torch import nn
  linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
  if not linears:
    raise ValueError("the surrogate has no nn.Linear layer")
  return linears[-1]


def jacobian(surrogate, x1):
  """G [K, D]: row k = d log p_k / d (last weight, last bias), flattened; D = K * H + K.

  x1: one image [1, C, H, W]. The graph of a single forward is kept (retain_graph) and
  walked back once per class, as the reference does.
  """
  import torch
  layer = last_linear(surrogate)
  log_p = torch.log_softmax(surrogate(x1), dim=1)[0]
  rows = []
  for k in range(log_p.shape[0]):
    gw, gb = torch.autograd.grad(log_p[k], (layer.weight, layer.bias), retain_graph=True)
    rows.append(torch.cat([gw.reshape(-1), gb.reshape(-1)]))
  return torch.stack(rows)


def objective(y_tilde, y, g):
  """||u/|u| - v/|v|||^2 with u = G^T y~, v = G^T y (y~, y [K]; G [K, D]) -> scalar."""
  u, v = g.T @ y_tilde, g.T @ y
  return ((u / u.norm() - v / v.norm()) ** 2).sum()


def best_vertex(y, g, eps: float):
  """The line-searched vertex with the largest objective: (y~ [K], objective scalar).

  Ties keep the lower class index (strict >), like jnp.argmax in rsec.
  """
  import torch
  best, best_obj = None, -float("inf")
  for k in range(y.shape[0]):
    star = torch.zeros_like(y)
    star[k] = 1.0
    alpha = min(1.0, eps / max(float((star - y).abs().sum()), 1e-12))
    cand = (1.0 - alpha) * y + alpha * star
    obj = float(objective(cand, y, g))
    if obj > best_obj:
      best, best_obj = cand, obj
  return best, best_obj


class ReferenceMAD:
  """The defended victim, end to end: images [B, C, H, W] (torch, NCHW) in, MAD answers
  out. The victim's posteriors come from one batched no-grad forward (as in the reference
  code); the defence then runs query by query."""

  def __init__(self, victim, surrogate, eps: float = 0.5):
    self.victim, self.surrogate, self.eps = victim.eval(), surrogate.eval(), float(eps)

  def __call__(self, x):
    """-> (y~ [B, K] float32 NumPy, best objective [B] float64 NumPy)."""
    import torch
    with torch.no_grad():
      y = torch.softmax(self.victim(x), dim=1)
    answers, objs = [], []
    for i in range(x.shape[0]):
      g = jacobian(self.surrogate, x[i:i + 1])
      y_tilde, obj = best_vertex(y[i], g, self.eps)
      answers.append(y_tilde.detach())
      objs.append(obj)
    return torch.stack(answers).numpy(), np.asarray(objs)
