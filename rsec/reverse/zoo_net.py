"""The zoo's masked super-network: one set of array shapes for every architecture.

MNIST-NET's attributes (Oh et al., ICLR 2018) become *data*, so models with different
attributes share array shapes and train side by side under one `vmap`:

| attribute | values | how it is data |
| --- | --- | --- |
| act | relu, elu, prelu, tanh | all four computed, one selected per model |
| drop | no, yes | dropout (rate `NetSpec.dropout`, the paper's 0.5) on the hidden dense layers where yes |
| pool | no, yes | 2x2 max-pooling vs stride-2 subsampling after conv 1 and 2 (equal shapes; no-pool is a stride-2 conv) |
| ks | 3, 5 | a 5x5 kernel whose outer ring is masked for 3 (initialised at the 3x3 fan-in) |
| conv | 2, 3, 4 | conv 3 and 4 (width to width) are skipped: identity where absent |
| fc | 2, 3, 4 | dense layers counted with the output layer; hidden 2 and 3 skipped |

A model is `variables = {'params': ..., 'arch': {name: int32 index}}`; `apply(variables,
x [B, H, W, C], train=False, rngs=None) -> logits [B, K]` is flax-style, so attacks, the
victim and MAD's surrogate take a zoo model like any classifier. `plain_apply` is the
same model written without masks (real 3x3 kernels, absent layers not computed): the
reference the tests hold the super-network to.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = ("relu", "elu", "prelu", "tanh")
ARCH_ATTRIBUTES = {"act": ACTIVATIONS, "drop": ("no", "yes"), "pool": ("no", "yes"),
                   "ks": (3, 5), "conv": (2, 3, 4), "fc": (2, 3, 4)}
MAX_CONV, MAX_FC, KERNEL = 4, 4, 5


@dataclasses.dataclass(frozen=True)
class NetSpec:
  """Widths of the super-network: `width` channels in every conv, `hidden` units in every
  hidden dense layer; inputs [H, W, C] with H, W divisible by 4."""
  input_shape: tuple[int, int, int] = (28, 28, 1)
  num_classes: int = 10
  width: int = 8
  hidden: int = 32
  dropout: float = 0.5   # rate where drop = yes

  @property
  def flat(self) -> int:
    h, w, _ = self.input_shape
    return (h // 4) * (w // 4) * self.width


def _value(name: str, arch: dict) -> Any:
  return ARCH_ATTRIBUTES[name][int(arch[name])]


def param_count(spec: NetSpec, arch: dict) -> int:
  """Trainable parameters a plain model of `arch` (indices, host ints) has."""
  ks, n_conv, n_fc = _value("ks", arch), _value("conv", arch), _value("fc", arch)
  prelu = _value("act", arch) == "prelu"
  c_in, c = spec.input_shape[2], spec.width
  n = ks * ks * c_in * c + c + (n_conv - 1) * (ks * ks * c * c + c)
  n += spec.flat * spec.hidden + spec.hidden + (n_fc - 2) * (spec.hidden ** 2 + spec.hidden)
  n += spec.hidden * spec.num_classes + spec.num_classes
  if prelu:   # one slope per channel of every activated layer
    n += n_conv * c + (n_fc - 1) * spec.hidden
  return int(n)


def _normal(key, shape, fan_in):
  return jax.random.normal(key, shape, jnp.float32) / jnp.sqrt(jnp.float32(fan_in))


def kernel_mask(ks: jax.Array) -> jax.Array:
  """[5, 5, 1, 1]: ones, with the outer ring zero where ks is index 0 (a 3x3 kernel)."""
  ring = np.zeros((KERNEL, KERNEL, 1, 1), np.float32)
  ring[1:-1, 1:-1] = 1.0
  return jnp.where(ks == 0, jnp.asarray(ring), 1.0)


def init_params(spec: NetSpec, key: jax.Array, arch: dict) -> dict:
  """Parameters of the super-network for one model (`arch`: int32 indices, traceable).

  Weights are N(0, gain / fan_in), conv fan-ins at the model's own kernel size (masked
  outside it); gain 2 (He) for ReLU and PReLU, 1 for ELU and tanh (and the logits);
  biases 0, PReLU slopes 0.25.
  """
  keys = jax.random.split(key, MAX_CONV + MAX_FC)
  c_in, c, h = spec.input_shape[2], spec.width, spec.hidden
  gain = jnp.where((arch["act"] == 0) | (arch["act"] == 2), 2.0, 1.0)
  area = jnp.where(arch["ks"] == 0, 9.0, 25.0) / gain
  mask = kernel_mask(arch["ks"])
  p = {}
  for i in range(MAX_CONV):
    cin = c_in if i == 0 else c
    p[f"conv{i}"] = {"w": _normal(keys[i], (KERNEL, KERNEL, cin, c), area * cin) * mask,
                     "b": jnp.zeros((c,), jnp.float32), "slope": jnp.full((c,), 0.25, jnp.float32)}
  dims = [spec.flat] + [h] * (MAX_FC - 1) + [spec.num_classes]
  for j in range(MAX_FC):
    fan_in = dims[j] / gain if j < MAX_FC - 1 else dims[j]
    p[f"fc{j}"] = {"w": _normal(keys[MAX_CONV + j], (dims[j], dims[j + 1]), fan_in),
                   "b": jnp.zeros((dims[j + 1],), jnp.float32)}
    if j < MAX_FC - 1:
      p[f"fc{j}"]["slope"] = jnp.full((dims[j + 1],), 0.25, jnp.float32)
  return p


def activate(z: jax.Array, act: jax.Array, slope: jax.Array) -> jax.Array:
  """The activation with index `act` (ACTIVATIONS), selected per model."""
  # Nested selects, not a gather over a stacked axis: cheap when `act` is batched by vmap.
  prelu = jnp.where(z >= 0, z, slope * z)
  return jnp.where(act == 0, jax.nn.relu(z), jnp.where(
      act == 1, jax.nn.elu(z), jnp.where(act == 2, prelu, jnp.tanh(z))))


def _conv(x, w, b):
  """'SAME' convolution as shifted slices and one matmul: under `vmap` over models a
  batched matmul, which XLA:CPU runs several times faster than a grouped convolution."""
  k, (h, wd) = w.shape[0], x.shape[1:3]
  pad = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  cols = jnp.concatenate([pad[:, i:i + h, j:j + wd, :] for i in range(k) for j in range(k)],
                         axis=-1)
  return cols @ w.reshape(-1, w.shape[-1]) + b


def downsample(z: jax.Array, pool: jax.Array) -> jax.Array:
  """2x2 max-pooling (pool = 1) or stride-2 subsampling (pool = 0) over the axes 1 and 2 of
  z [B, H, W, ...]: equal shapes. `pool` broadcasts against the trailing axes (a scalar
  for one model; [M] for a stack with the models last, `zoo_lanes`)."""
  # A reshape and max, not reduce_window: its gradient (select-and-scatter) is ~3x slower
  # on XLA:CPU under vmap.
  b, h, w = z.shape[:3]
  pooled = z.reshape((b, h // 2, 2, w // 2, 2) + z.shape[3:]).max(axis=(2, 4))
  return jnp.where(pool == 1, pooled, z[:, ::2, ::2])


def _dropout(h, rate, key):
  keep = 1.0 - rate
  return jnp.where(jax.random.bernoulli(key, keep, h.shape), h / keep, 0.0)


def apply(variables: dict, x: jax.Array, train: bool = False, rngs: dict | None = None,
          dropout: float = 0.5) -> jax.Array:
  """Logits [B, K] of one zoo model on images x [B, H, W, C] (flax-style signature).

  `variables`: {'params': init_params(...), 'arch': {name: int32 index}}; in training
  mode with drop = yes, dropout at rate `dropout` draws from rngs['dropout'].
  """
  p, arch = variables["params"], variables["arch"]
  mask = kernel_mask(arch["ks"])
  n_conv = jnp.asarray(ARCH_ATTRIBUTES["conv"])[arch["conv"]]
  n_fc = jnp.asarray(ARCH_ATTRIBUTES["fc"])[arch["fc"]]
  h = x.astype(jnp.float32)
  for i in range(MAX_CONV):
    z = activate(_conv(h, p[f"conv{i}"]["w"] * mask, p[f"conv{i}"]["b"]), arch["act"],
                 p[f"conv{i}"]["slope"])
    h = downsample(z, arch["pool"]) if i < 2 else jnp.where(i < n_conv, z, h)
  h = h.reshape(h.shape[0], -1)
  rate = dropout * arch["drop"].astype(jnp.float32)
  keys = (jax.random.split(rngs["dropout"], MAX_FC) if train and rngs is not None
          else [None] * MAX_FC)
  for j in range(MAX_FC - 1):
    z = activate(h @ p[f"fc{j}"]["w"] + p[f"fc{j}"]["b"], arch["act"], p[f"fc{j}"]["slope"])
    if keys[j] is not None:
      z = _dropout(z, rate, keys[j])
    h = z if j == 0 else jnp.where(j < n_fc - 1, z, h)
  return h @ p[f"fc{MAX_FC - 1}"]["w"] + p[f"fc{MAX_FC - 1}"]["b"]


# ------------------------------------------------------- the same model without masks

def plain_params(params: dict, arch: dict) -> dict:
  """The super-network's parameters as a plain model of `arch` holds them (host ints):
  3x3 kernels cut from the 5x5, absent layers and unused PReLU slopes dropped."""
  ks, n_conv, n_fc = _value("ks", arch), _value("conv", arch), _value("fc", arch)
  cut = slice(1, 4) if ks == 3 else slice(0, 5)
  out = {}
  for i in range(n_conv):
    q = params[f"conv{i}"]
    out[f"conv{i}"] = {"w": q["w"][cut, cut], "b": q["b"], "slope": q["slope"]}
  for j in list(range(n_fc - 1)) + [MAX_FC - 1]:
    out[f"fc{j}"] = dict(params[f"fc{j}"])
  return out


def plain_apply(params: dict, arch: dict, x: jax.Array, train: bool = False,
                key: jax.Array | None = None, dropout: float = 0.5) -> jax.Array:
  """The plain model of `arch` (host ints): only its own layers, unmasked kernels, the
  chosen activation and downsampling; params from `plain_params`. Dropout keys are drawn
  as `apply` draws them, so both agree in training mode too."""
  act, n_conv, n_fc = _value("act", arch), _value("conv", arch), _value("fc", arch)
  f = {"relu": lambda z, s: jax.nn.relu(z), "elu": lambda z, s: jax.nn.elu(z),
       "prelu": lambda z, s: jnp.where(z >= 0, z, s * z), "tanh": lambda z, s: jnp.tanh(z)}[act]
  h = x.astype(jnp.float32)
  for i in range(n_conv):
    z = f(_conv(h, params[f"conv{i}"]["w"], params[f"conv{i}"]["b"]), params[f"conv{i}"]["slope"])
    if i < 2:
      z = downsample(z, int(_value("pool", arch) == "yes"))
    h = z
  h = h.reshape(h.shape[0], -1)
  keys = jax.random.split(key, MAX_FC) if train and key is not None else [None] * MAX_FC
  for j in range(n_fc - 1):
    h = f(h @ params[f"fc{j}"]["w"] + params[f"fc{j}"]["b"], params[f"fc{j}"]["slope"])
    if keys[j] is not None and _value("drop", arch) == "yes":
      h = _dropout(h, dropout, keys[j])
  return h @ params[f"fc{MAX_FC - 1}"]["w"] + params[f"fc{MAX_FC - 1}"]["b"]
