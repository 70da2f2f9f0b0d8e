"""Prediction defences: pure, batched maps from a posterior to a perturbed posterior.

A `Defence` is `apply(aux, y [B, K], x [B, ...], keys [B]) -> y~ [B, K]`: `y` the victim's
posterior, `x` the queried images (MAD's surrogate and Adaptive Misinformation read them),
`keys` one PRNG key per row (randomised defences draw from them only, so a row's answer
does not depend on the rest of its batch), `aux` a pytree of arrays the defence reads
(a surrogate's variables). Every defence returns a valid distribution per row: non-negative,
summing to 1 (to 1e-6), finite for every valid input, one-hot rows included.

Per-row keys (`query_keys`) come from the defence's key and either the query's *content*
(a hash of the image's float32 bits: repeating a query repeats its answer, so averaging
repeated queries gains an attacker nothing) or its *index* in the victim's query stream
(repeats get fresh noise). Either way the answer for a row is the same however a stream
is cut into batches or padded across devices.

Baselines here: `none`, `rounding`, `topk`, `label`, `high_confidence`, `reverse_sigmoid`,
`logit_noise`, `simplex_noise`. MAD and its variants: `rsec.stealing.mad`; Adaptive
Misinformation: `rsec.stealing.misinformation`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rsec.checks import check_choice, check_finite_scalar, check_positive_int
from rsec.registry import Registry
from rsec.stealing import outputs

KEY_MODES = ("content", "index")


class AuxModel(NamedTuple):
  """A model a defence runs besides the victim: flax-style `apply_fn(variables, x,
  train=False) -> logits [B, K]` and its `variables` (a pytree)."""
  apply_fn: Callable
  variables: Any


class Defence(NamedTuple):
  """A registered defence with its settings bound (see the module docstring)."""
  name: str
  apply: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
  aux: Any = None
  randomised: bool = False
  needs_images: bool = False


class DefenceContext(NamedTuple):
  """What a defence factory may need to know about the victim it protects."""
  num_classes: int
  input_shape: tuple[int, ...] | None = None   # one image, e.g. (28, 28, 1)
  model_name: str | None = None                # the victim's architecture (MAD's surrogate)


DEFENCES: Registry[Callable[..., Defence]] = Registry("defence")


# --- helpers shared by the defences ---------------------------------------------------

def line_search(y: jax.Array, target: jax.Array, eps: float) -> jax.Array:
  """The point on the segment y -> target at L1 distance min(eps, ||target - y||_1) from y.

  y [..., K], target [..., K] (broadcasting); alpha = eps / ||target - y||_1 clamped to
  [0, 1], y~ = (1 - alpha) y + alpha target: a distribution whenever both ends are.
  """
  dist = jnp.sum(jnp.abs(target - y), axis=-1, keepdims=True)
  alpha = jnp.clip(eps / jnp.maximum(dist, 1e-12), 0.0, 1.0)
  return (1.0 - alpha) * y + alpha * target


def content_hash(x: jax.Array) -> jax.Array:
  """uint32 [B]: a hash of each row's float32 bits (a fixed random odd weight per pixel,
  summed mod 2^32 and mixed). Integer arithmetic: the same on every device and layout."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32).reshape(x.shape[0], -1)
  w = jax.random.bits(jax.random.key(0x5EC), (bits.shape[1],), jnp.uint32) | jnp.uint32(1)
  h = jnp.sum(bits * w, axis=1, dtype=jnp.uint32)
  for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):  # murmur3's finaliser
    h = (h ^ (h >> shift)) * jnp.uint32(mult)
  return h ^ (h >> 16)


def query_keys(key: jax.Array, x: jax.Array, mode: str = "content",
               indices: jax.Array | None = None) -> jax.Array:
  """One PRNG key per row [B]: `fold_in(key, content_hash(x))` or `fold_in(key, index)`."""
  data = content_hash(x) if mode == "content" else indices.astype(jnp.uint32)
  return jax.vmap(lambda d: jax.random.fold_in(key, d))(data)


def check_posteriors(name: str, y: Any, num_classes: int | None = None,
                     atol: float = 1e-4) -> np.ndarray:
  """ValueError unless `y` is a float array [B, K] of finite, non-negative rows summing
  to 1 (within `atol`); returns it as float32 NumPy."""
  if isinstance(y, jax.core.Tracer):
    raise ValueError(f"{name} must be a concrete array, not a tracer: call "
                     f"defence.apply inside jit instead")
  a = np.asarray(y)
  if a.ndim != 2 or (num_classes is not None and a.shape[1] != num_classes):
    want = f"(batch, {num_classes})" if num_classes else "(batch, classes)"
    raise ValueError(f"{name} must have shape {want}, got {a.shape}")
  if not np.issubdtype(a.dtype, np.floating):
    raise ValueError(f"{name} must be a floating-point array, got dtype {a.dtype}")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} has non-finite entries (NaN or inf)")
  if a.size and a.min() < 0:
    raise ValueError(f"{name} has negative entries (min {a.min():.3g})")
  sums = a.sum(axis=1)
  if a.size and np.max(np.abs(sums - 1)) > atol:
    bad = int(np.argmax(np.abs(sums - 1)))
    raise ValueError(f"{name} rows must sum to 1 (within {atol}); row {bad} sums to "
                     f"{sums[bad]:.6g}")
  return a.astype(np.float32)


def check_aux_model(name: str, model: Any, num_classes: int,
                    input_shape: tuple[int, ...] | None) -> None:
  """ValueError unless `model` is an AuxModel mapping one image of `input_shape` to
  `num_classes` logits (checked by abstract evaluation: nothing runs)."""
  if not isinstance(model, AuxModel):
    raise ValueError(f"{name} must be an AuxModel(apply_fn, variables), got "
                     f"{type(model).__name__}")
  if input_shape is None:
    return
  try:
    out = jax.eval_shape(lambda v: model.apply_fn(
        v, jnp.zeros((1,) + tuple(input_shape)), train=False), model.variables)
  except Exception as e:  # noqa: BLE001 -- any tracing failure means a mismatched model
    raise ValueError(f"{name} does not accept images of shape {tuple(input_shape)}: "
                     f"{e}") from None
  if getattr(out, "shape", None) != (1, num_classes):
    raise ValueError(f"{name} must output {num_classes} classes (the victim's), got "
                     f"logits of shape {getattr(out, 'shape', (None,))[1:]}")


def _rowwise(fn: Callable[[jax.Array], jax.Array]) -> Callable:
  """A defence that reads only the posterior (no key, image or aux)."""
  return lambda aux, y, x, keys: outputs.renormalise(fn(y))


# --- baselines -------------------------------------------------------------------------

@DEFENCES.register("none")
def none(ctx: DefenceContext) -> Defence:
  del ctx
  return Defence("none", _rowwise(lambda y: y))


@DEFENCES.register("rounding")
def rounding(ctx: DefenceContext, decimals: int = 2) -> Defence:
  """Rounds to `decimals` decimals and renormalises (so the result is a distribution;
  the `rounded` output mode keeps the grid instead)."""
  del ctx
  d = check_positive_int("defence decimals", decimals, minimum=0)
  return Defence("rounding", _rowwise(lambda y: outputs.round_to(y, d)))


@DEFENCES.register("topk")
def topk(ctx: DefenceContext, k: int = 1) -> Defence:
  """Keeps the k largest entries of every row (not ART's single-row behaviour)."""
  k = check_positive_int("defence k", k)
  if k > ctx.num_classes:
    raise ValueError(f"defence k must lie in [1, {ctx.num_classes}] (the class count), got {k}")
  return Defence("topk", _rowwise(lambda y: outputs.top_k(y, k)))


@DEFENCES.register("label")
def label(ctx: DefenceContext) -> Defence:
  """One-hot argmax of every row (ART's `ClassLabels` one-hots a batch along the wrong
  axis; this is row-wise)."""
  del ctx
  return Defence("label", _rowwise(outputs.one_hot_argmax))


@DEFENCES.register("high_confidence")
def high_confidence(ctx: DefenceContext, cutoff: float = 0.25) -> Defence:
  """Zeroes entries below `cutoff` and renormalises (ART's `HighConfidence` does not
  renormalise); a row with no entry >= cutoff keeps its argmax alone."""
  del ctx
  c = check_finite_scalar("defence cutoff", cutoff, low=0.0, high=1.0)

  def fn(y):
    kept = jnp.where(y >= c, y, 0.0)
    return jnp.where(jnp.sum(kept, -1, keepdims=True) > 0, kept, outputs.one_hot_argmax(y))
  return Defence("high_confidence", _rowwise(fn))


@DEFENCES.register("reverse_sigmoid")
def reverse_sigmoid(ctx: DefenceContext, beta: float = 0.7, gamma: float = 0.2) -> Defence:
  """Lee et al. (2019): y~ ∝ y - beta (sigmoid(gamma logit(y)) - 1/2), clipped at 0.

  logit(y) is taken on y clamped to [2^-24, 1 - 2^-24] (the float32 resolution next to
  1), so one-hot rows stay finite (the prediction-poisoning code returns inf there; ART
  clamps at 1e-9 in float64, so confident rows differ from ART's by up to ~0.02).
  """
  del ctx
  b = check_finite_scalar("defence beta", beta, low=0.0)
  g = check_finite_scalar("defence gamma", gamma, low=0.0, low_inclusive=False)

  def fn(y):
    q = jnp.clip(y, 2.0 ** -24, 1.0 - 2.0 ** -24)
    return y - b * (jax.nn.sigmoid(g * (jnp.log(q) - jnp.log1p(-q))) - 0.5)
  return Defence("reverse_sigmoid", _rowwise(fn))


@DEFENCES.register("logit_noise")
def logit_noise(ctx: DefenceContext, sigma: float = 1.0) -> Defence:
  """softmax(log y + sigma * N(0, I)), log y floored at log(1e-30)."""
  del ctx
  s = check_finite_scalar("defence sigma", sigma, low=0.0)

  def apply(aux, y, x, keys):
    noise = jax.vmap(lambda k: jax.random.normal(k, y.shape[-1:]))(keys)
    return outputs.renormalise(jax.nn.softmax(jnp.log(jnp.maximum(y, 1e-30)) + s * noise))
  return Defence("logit_noise", apply, randomised=True)


@DEFENCES.register("simplex_noise")
def simplex_noise(ctx: DefenceContext, eps: float = 0.5) -> Defence:
  """Moves y towards a uniformly random point of the simplex (Dirichlet(1)) by L1
  distance min(eps, ||u - y||_1): random noise within the same utility budget as MAD."""
  del ctx
  e = check_finite_scalar("defence eps", eps, low=0.0)

  def apply(aux, y, x, keys):
    u = jax.vmap(lambda k: jax.random.dirichlet(k, jnp.ones(y.shape[-1:])))(keys)
    return outputs.renormalise(line_search(y, u.astype(y.dtype), e))
  return Defence("simplex_noise", apply, randomised=True)


def defence_settings(name: str) -> list[str]:
  """The settings (config primitives) defence `name` takes, e.g. ['eps', 'seed'] for MAD;
  model arguments (`surrogate`, `misinformation`) are not settings."""
  import inspect
  return [p for p in inspect.signature(DEFENCES.get(name)).parameters
          if p not in ("ctx", "surrogate", "misinformation")]


def make_defence(name: str, ctx: DefenceContext, **params) -> Defence:
  """The defence `name` with its settings (`params`) for the victim described by `ctx`.

  ValueError for an unknown name, a setting the defence does not take, or one out of
  range (before any compilation).
  """
  import inspect
  check_choice("defence", name, DEFENCES.names())
  if not isinstance(ctx, DefenceContext):
    raise ValueError(f"ctx must be a DefenceContext, got {type(ctx).__name__}")
  check_positive_int("num_classes", ctx.num_classes, minimum=2)
  factory = DEFENCES.get(name)
  takes = [p for p in inspect.signature(factory).parameters if p != "ctx"]
  extra = sorted(set(params) - set(takes))
  if extra:
    raise ValueError(f"defence {name!r} takes {takes or 'no settings'}, got {extra}")
  return factory(ctx, **params)


def defend(defence: Defence, y: Any, x: Any = None, *, key: jax.Array | None = None,
           key_mode: str = "content", indices: Any = None) -> jax.Array:
  """Applies `defence` to posteriors y [B, K] (validated) of images x [B, ...].

  The functional entry point for one's own code; `rsec.stealing.victim.Victim` does the
  same inside its compiled query function. `key` is the defence's key (default key(0));
  with key_mode 'content' and no images the rows of `y` are hashed instead, with
  'index' the rows are numbered by `indices` (default 0 ... B-1).
  """
  check_choice("key_mode", key_mode, KEY_MODES)
  y = jnp.asarray(check_posteriors("posteriors", y))
  if x is None:
    if defence.needs_images:
      raise ValueError(f"defence {defence.name!r} needs the images x [B, ...]")
    x = y
  x = jnp.asarray(x, jnp.float32)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"x has {x.shape[0]} rows but the posteriors have {y.shape[0]}")
  if key_mode == "index":
    indices = jnp.arange(len(y), dtype=jnp.uint32) if indices is None else jnp.asarray(indices)
  key = jax.random.key(0) if key is None else key
  return _jitted(defence.apply, key_mode)(defence.aux, y, x, key, indices)


_JITTED: dict = {}


def _jitted(apply: Callable, key_mode: str) -> Callable:
  if (apply, key_mode) not in _JITTED:
    _JITTED[apply, key_mode] = jax.jit(lambda aux, y, x, key, idx: apply(
        aux, y, x, query_keys(key, x, key_mode, idx)))
  return _JITTED[apply, key_mode]
