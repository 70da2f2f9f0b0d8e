"""Ports rsec's paper classifier (flax) into an equivalent PyTorch module, weights included."""
from __future__ import annotations

import numpy as np


def torch_paper_classifier(variables, num_classes: int = 10, image_size: int = 28):
  """A torch.nn.Sequential computing the same function as rsec's PaperClassifier (eval mode).

  Inputs are NCHW in torch; flax flattens NHWC features, so the first dense layer's rows
  are permuted from (h, w, c) to (c, h, w) order.
  """
  import torch
  from torch import nn
  p, s = variables["params"], variables["batch_stats"]
  convs = sorted(k for k in p if k.startswith("PatchConv"))
  bns = sorted((k for k in p if k.startswith("BatchNorm")), key=lambda k: int(k.split("_")[1]))
  dense = sorted(k for k in p if k.startswith("Dense"))
  layers, in_c, size = [], 1, image_size
  for i, name in enumerate(convs):
    w = np.asarray(p[name]["kernel"])  # [kh, kw, in, out]
    conv = nn.Conv2d(in_c, w.shape[-1], 4, 2, 1, bias=False)
    conv.weight.data = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
    layers += [conv, _bn(nn.BatchNorm2d, p[bns[i]], s[bns[i]]), nn.ReLU()]
    in_c, size = w.shape[-1], (size + 2 - 4) // 2 + 1
  w = np.asarray(p[dense[0]]["kernel"])  # [(h w c), hidden]
  hidden = w.shape[1]
  w = w.reshape(size, size, in_c, hidden).transpose(2, 0, 1, 3).reshape(-1, hidden)
  fc = nn.Linear(w.shape[0], hidden, bias=False)
  fc.weight.data = torch.from_numpy(w.T.copy())
  out = nn.Linear(hidden, num_classes)
  out.weight.data = torch.from_numpy(np.asarray(p[dense[1]]["kernel"]).T.copy())
  out.bias.data = torch.from_numpy(np.asarray(p[dense[1]]["bias"]).copy())
  layers += [nn.Flatten(), fc, _bn(nn.BatchNorm1d, p[bns[-1]], s[bns[-1]]), nn.ReLU(), out]
  return nn.Sequential(*layers).eval()


def _bn(cls, params, stats):
  import torch
  bn = cls(params["scale"].shape[0], eps=1e-5)
  bn.weight.data = torch.from_numpy(np.asarray(params["scale"]).copy())
  bn.bias.data = torch.from_numpy(np.asarray(params["bias"]).copy())
  bn.running_mean.data = torch.from_numpy(np.asarray(stats["mean"]).copy())
  bn.running_var.data = torch.from_numpy(np.asarray(stats["var"]).copy())
  return bn
