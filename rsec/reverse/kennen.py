"""kennen metamodels (Oh et al., ICLR 2018): a black box's attributes from its outputs.

- kennen-o: an MLP on a model's outputs on n fixed queries (concatenated), one softmax
  head per attribute; trained on the training zoo through `run_loop` (`train_metamodel`).
- kennen-i: one crafted input per attribute whose top-1 label encodes the attribute,
  optimised through the training zoo on the attack engine (`craft_inputs`: the inputs are
  the batch of `run_attack`, the whole training zoo sits inside its `logits_fn`); the
  label is read through a label -> value table learnt on the training zoo.
- kennen-io: queries and metamodel trained jointly (`train_joint`, a `run_loop` step
  whose state holds the metamodel and the query images, and whose batches are zoo models).

Outputs a metamodel reads (`encode`, from posteriors [N, n, K]): 'score' (the posterior,
fed as `score_features`: log-probabilities clipped at 1e-6 and mapped to [0, 1], which
spreads the near-0 and near-1 scores of confident models; raw probabilities scored 8
points lower on the quick zoo), 'ranking' (each class's rank position / (K - 1), from the
black box's class order) and 'label' (one-hot top-1), as rsec.stealing.outputs returns them.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rsec.attacks.engine import run_attack
from rsec.attacks.params import pixel
from rsec.attacks.steps import STEPS
from rsec.checks import check_choice, check_positive_int
from rsec.reverse import zoo_lanes
from rsec.stealing import outputs
from rsec.training.loop import EpochSampler, run_loop

OUTPUTS = ("score", "ranking", "label")


SCORE_FLOOR = 1e-6


def score_features(p: jax.Array) -> jax.Array:
  """1 + log(max(p, 1e-6)) / log(1e6): posteriors as features in [0, 1] (differentiable)."""
  return 1.0 + jnp.log(jnp.maximum(p, SCORE_FLOOR)) / np.log(1.0 / SCORE_FLOOR)


def encode(probs: np.ndarray, mode: str) -> np.ndarray:
  """Features [N, n * K] of posteriors [N, n, K] as a black box answering `mode` shows them."""
  check_choice("output mode", mode, OUTPUTS)
  p = jnp.asarray(probs, jnp.float32)
  k = p.shape[-1]
  if mode == "ranking":
    order = outputs.ranking(p.reshape(-1, k))
    f = jnp.argsort(order, axis=-1).astype(jnp.float32) / (k - 1)   # rank of each class
  elif mode == "label":
    f = outputs.one_hot_argmax(p.reshape(-1, k))
  else:
    f = score_features(p)
  return np.asarray(f).reshape(p.shape[0], -1)


# ------------------------------------------------------------------------ the metamodel

@dataclasses.dataclass(frozen=True)
class MetaSpec:
  hidden: tuple[int, ...] = (256, 256)
  steps: int = 2000
  batch_size: int = 64
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4

  @classmethod
  def from_config(cls, c) -> "MetaSpec":
    return cls(hidden=tuple(c.hidden), steps=c.steps, batch_size=c.batch_size,
               learning_rate=c.learning_rate, weight_decay=c.weight_decay)


def init_mlp(key: jax.Array, dims: Sequence[int]) -> list:
  keys = jax.random.split(key, len(dims) - 1)
  return [{"w": jax.random.normal(k, (a, b), jnp.float32) * jnp.sqrt(2.0 / a),
           "b": jnp.zeros((b,), jnp.float32)} for k, a, b in zip(keys, dims[:-1], dims[1:])]


def mlp(params: list, f: jax.Array) -> jax.Array:
  """Logits [B, sum(heads)] of features f [B, D] (ReLU hidden layers)."""
  h = f
  for layer in params[:-1]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
  return h @ params[-1]["w"] + params[-1]["b"]


def head_loss(logits: jax.Array, labels: jax.Array, heads: tuple[int, ...],
              scored: tuple[bool, ...]) -> jax.Array:
  """Sum over scored attributes of the mean cross-entropy of each head; labels [B, A]."""
  total, off = 0.0, 0
  for a, (v, s) in enumerate(zip(heads, scored)):
    if s:
      total = total + optax.softmax_cross_entropy_with_integer_labels(
          logits[:, off:off + v], labels[:, a]).mean()
    off += v
  return total


def head_predictions(logits: np.ndarray, heads: tuple[int, ...]) -> np.ndarray:
  """Predicted value indices [B, A] from logits [B, sum(heads)]."""
  offs = np.cumsum((0,) + tuple(heads))
  return np.stack([np.argmax(logits[:, a:b], -1) for a, b in zip(offs[:-1], offs[1:])], 1)


@struct.dataclass
class MetaState:
  """A trained thing that is not a classifier: `params` (any pytree) and Adam's state."""
  step: jax.Array
  params: Any
  opt_state: Any

  def checkpoint_tree(self) -> dict:
    return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

  def replace_tree(self, tree: dict) -> "MetaState":
    return self.replace(**tree)


def _adam(spec: MetaSpec):
  return optax.adamw(optax.cosine_decay_schedule(spec.learning_rate, max(1, spec.steps)),
                     weight_decay=spec.weight_decay)


def _guarded(state, loss, grads, tx):
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state)
  finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
      [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state), finite


@functools.cache
def _meta_step(spec: MetaSpec, heads: tuple, scored: tuple):
  tx = _adam(spec)

  def step(state, batch, key):
    del key
    loss, grads = jax.value_and_grad(
        lambda p: head_loss(mlp(p, batch["x"]), batch["y"], heads, scored))(state.params)
    state, finite = _guarded(state, loss, grads, tx)
    return state, {"loss": loss, "finite": finite.astype(jnp.float32)}
  return step


def check_labels(labels: np.ndarray, heads: tuple[int, ...], scored: tuple[bool, ...]):
  """ValueError unless labels [N, A] are value indices below each head's size."""
  del scored
  for a, v in enumerate(heads):
    if np.any(labels[:, a] >= v) or np.any(labels[:, a] < 0):
      raise ValueError(f"labels of attribute {a} must lie in [0, {v}), got "
                       f"{labels[:, a].min()}..{labels[:, a].max()}")


def train_metamodel(spec: MetaSpec, features: np.ndarray, labels: np.ndarray,
                    heads: tuple[int, ...], scored: tuple[bool, ...], *, key: jax.Array,
                    progress: bool = False, desc: str = "kennen-o") -> list:
  """kennen-o: an MLP from features [N, D] to attribute labels [N, A] (value indices),
  heads[a] values each; unscored heads get no loss. Returns the MLP's parameters."""
  check_labels(labels, heads, scored)
  params = init_mlp(key, (features.shape[1],) + spec.hidden + (sum(heads),))
  tx = _adam(spec)
  state = MetaState(jnp.zeros((), jnp.int32), params, tx.init(params))
  batch = min(spec.batch_size, len(features))
  batch -= batch % jax.device_count()
  state, _ = run_loop(state, _meta_step(spec, tuple(heads), tuple(scored)),
                      {"x": features.astype(np.float32), "y": labels.astype(np.int32)},
                      EpochSampler(len(features), batch, seed=0), key=key,
                      num_steps=spec.steps, steps_per_call=50, progress=progress, desc=desc)
  return jax.device_get(state.params)


def predict(params: list, features: np.ndarray, heads: tuple[int, ...]) -> np.ndarray:
  """Predicted value indices [N, A] of features [N, D]."""
  return head_predictions(np.asarray(jax.jit(mlp)(params, jnp.asarray(features))), heads)


# ----------------------------------------------------------------------- the zoo inside

def mixture_probs(variables: dict, members: jax.Array, weights: jax.Array, x: jax.Array
                  ) -> jax.Array:
  """Posteriors [N, B, K] of N zoo entries (members [N, 3] rows of the stacked
  `variables`, -1 padded; weights [N, 3]) on images x [B, ...]."""
  singles = zoo_lanes.shared_probs(zoo_lanes.to_lanes(variables["params"]),
                                   variables["arch"], x)                          # [U,B,K]
  return _mix(singles, members, weights)


def _mix(singles: jax.Array, members: jax.Array, weights: jax.Array) -> jax.Array:
  """Entries' posteriors [N, B, K] from their members' [U, B, K]."""
  return jnp.einsum("nm,nmbk->nbk", weights, singles[jnp.maximum(members, 0)])


def craft_inputs(variables: dict, members: np.ndarray, weights: np.ndarray,
                 targets: np.ndarray, x0: np.ndarray, *, steps: int, step_size: float,
                 key: jax.Array) -> np.ndarray:
  """kennen-i: A images [A, H, W, C] (from x0) so that training entry n answers class
  targets[a, n] on image a, as often as possible over the training zoo.

  One `run_attack` with the A images as its batch: `logits_fn` runs the whole training
  zoo (its U singles stacked in `variables`, mixed into entries), and the loss of image a
  is the mean log-likelihood of its targets over the entries. Pixel box [0, 1], no ball.
  """
  steps = check_positive_int("kennen-i steps", steps)
  a, n = targets.shape
  members, weights = jnp.asarray(members), jnp.asarray(weights)
  tgt = jnp.asarray(targets, jnp.int32)
  # The zoo in lanes layout once, outside the attack (a transpose inside it would let XLA
  # keep strided weights in the convolution loop).
  lanes = jax.jit(zoo_lanes.to_lanes)(variables["params"])

  def logits_fn(x):
    p = _mix(zoo_lanes.shared_probs(lanes, variables["arch"], x), members, weights)  # [N,A,K]
    return jnp.log(jnp.maximum(jnp.moveaxis(p, 0, 1), 1e-30)).reshape(x.shape[0], -1)

  def loss(logits, y, target):
    del y, target
    lp = logits.reshape(a, n, -1)
    return jnp.mean(jnp.take_along_axis(lp, tgt[..., None], -1)[..., 0], axis=1)

  rule = STEPS.get("adam")("linf", steps, {"step_size": step_size})
  attack = jax.jit(lambda kk, x: run_attack(
      logits_fn, kk, x, jnp.zeros((a,), jnp.int32), pixel(), norm="linf", eps=1.0, step=rule,
      loss=loss, steps=steps, select="max_loss")[1])
  return np.asarray(attack(key, jnp.asarray(x0, jnp.float32)))


def label_table(labels: np.ndarray, values: np.ndarray, num_values: int,
                num_classes: int) -> np.ndarray:
  """[K] value read from each top-1 label: the training entries' most common value for
  that label (labels never seen: the overall most common value)."""
  counts = np.zeros((num_classes, num_values))
  np.add.at(counts, (labels, values), 1)
  fallback = np.bincount(values, minlength=num_values).argmax()
  return np.where(counts.sum(1) > 0, counts.argmax(1), fallback)


# --------------------------------------------------------------------------- kennen-io

def _joint_optimizer(spec: MetaSpec, query_learning_rate: float):
  """AdamW on the metamodel, Adam at its own rate on the query pixels: Adam's steps do not
  scale with the gradient, so one shared rate moves the queries by at most lr per step
  (3e-4 left them where kennen-o's queries were)."""
  queries = optax.adam(optax.cosine_decay_schedule(query_learning_rate, max(1, spec.steps)))
  return optax.multi_transform({"queries": queries, "mlp": _adam(spec)},
                               {"queries": "queries", "mlp": "mlp"})


@functools.cache
def _joint_step(spec: MetaSpec, heads: tuple, scored: tuple, query_learning_rate: float):
  tx = _joint_optimizer(spec, query_learning_rate)

  def step(state, batch, key):
    del key

    def objective(p):
      x = jnp.clip(p["queries"], 0.0, 1.0)
      w = batch["weights"]                                                # [B, 3]
      flat = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), batch["variables"])
      logits = zoo_lanes.apply(zoo_lanes.to_lanes(flat["params"]), flat["arch"],
                               jnp.broadcast_to(x, (w.size,) + x.shape))   # [3B, n, K]
      probs = jnp.einsum("bm,bmnk->bnk", w, jax.nn.softmax(logits, -1).reshape(
          w.shape + logits.shape[1:]))                                    # [B, n, K]
      f = score_features(probs).reshape(probs.shape[0], -1)
      return head_loss(mlp(p["mlp"], f), batch["y"], heads, scored)

    loss, grads = jax.value_and_grad(objective)(state.params)
    state, finite = _guarded(state, loss, grads, tx)
    return state, {"loss": loss, "finite": finite.astype(jnp.float32)}
  return step


def entry_variables(variables: dict, members: np.ndarray) -> dict:
  """Host arrays {'variables/...': [N, 3, ...]} of each entry's member slots (padding
  repeats the first member with weight 0), the data `train_joint` batches over."""
  rows = np.where(members >= 0, members, members[:, :1])
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    flat["/".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf)[rows]
  return flat


def train_joint(spec: MetaSpec, variables: dict, members: np.ndarray, weights: np.ndarray,
                labels: np.ndarray, queries: np.ndarray, mlp_params: list,
                heads: tuple[int, ...], scored: tuple[bool, ...], *, key: jax.Array,
                query_learning_rate: float | None = None,
                progress: bool = False) -> tuple[np.ndarray, list]:
  """kennen-io: the query images [n, H, W, C] and the score metamodel, optimised jointly
  (from `queries` and `mlp_params`, e.g. kennen-o's) on the training entries; the
  metamodel at `spec.learning_rate`, the query pixels at `query_learning_rate` (default:
  the same). Returns (queries in [0, 1], metamodel parameters)."""
  check_labels(labels, heads, scored)
  lr_q = spec.learning_rate if query_learning_rate is None else float(query_learning_rate)
  if not (np.isfinite(lr_q) and lr_q > 0):
    raise ValueError(f"query_learning_rate must be a positive number, got {query_learning_rate!r}")
  flat = entry_variables(variables, members)
  treedef = jax.tree.structure(variables)
  names = list(flat)
  data = {**{f"v{i}": flat[n] for i, n in enumerate(names)},
          "weights": weights.astype(np.float32), "y": labels.astype(np.int32)}
  inner = _joint_step(spec, tuple(heads), tuple(scored), lr_q)

  def step(state, batch, k):
    tree = jax.tree.unflatten(treedef, [batch[f"v{i}"] for i in range(len(names))])
    return inner(state, {"variables": tree, "weights": batch["weights"], "y": batch["y"]}, k)

  # Host copies: the loop donates the state's buffers, and the caller keeps its metamodel.
  params = {"queries": np.asarray(queries, np.float32), "mlp": jax.tree.map(np.array, mlp_params)}
  tx = _joint_optimizer(spec, lr_q)
  state = MetaState(jnp.zeros((), jnp.int32), params, tx.init(params))
  batch = min(spec.batch_size, len(labels))
  batch -= batch % jax.device_count()
  state, _ = run_loop(state, step, data, EpochSampler(len(labels), batch, seed=0), key=key,
                      num_steps=spec.steps, steps_per_call=10, progress=progress,
                      desc="kennen-io")
  p = jax.device_get(state.params)
  return np.clip(p["queries"], 0.0, 1.0), p["mlp"]
