"""The model zoo: MNIST-NET's attributes on FONTS, generated as stacks, stored as a table.

Attributes (value names; `zoo.attributes` in the config may narrow each to a subset):
  act, drop, pool, ks, conv, fc   the network's (rsec.reverse.zoo_net)
  opt                             sgd | adam | rmsprop
  bs                              an index into the configured batch sizes
  split                           which of three disjoint thirds of the training set:
                                  a b c ab ac bc abc (the paper's 7 values)
  size                            all | half | quarter of that subset
  ens                             no | yes: yes is the average of 2-3 members that share
                                  every other attribute (replicas from other seeds)
  params                          bin of the plain model's parameter count (8 bins at the
                                  quantiles over all architectures of the configured grid)

`plan(spec)` draws the trained models (seeded); stack s of the plan trains in one
`run_loop` call (`zoo_train`), a cell of a resumable `rsec.grid` (checkpointed once, when
it finishes), and stores every model's parameters, attributes, test accuracy and
posteriors on the zoo's query images in `cells/<stack>/models.npz`. `load(workdir)`
gathers the table (`Zoo`): the kept models (test accuracy >= `min_accuracy`, no diverged
step) and the ensembles built from kept replicas.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any

import jax
import numpy as np

from rsec import grid, io
from rsec.reverse import zoo_lanes, zoo_net, zoo_train
from rsec.training.checkpoint import Checkpointer
from rsec.training.loop import IndexSetSampler, run_loop

SPLITS = ("a", "b", "c", "ab", "ac", "bc", "abc")
SIZES = {"all": 1.0, "half": 0.5, "quarter": 0.25}
TRAIN_ATTRIBUTES = ("opt", "bs", "split", "size")
ATTRIBUTES = tuple(zoo_net.ARCH_ATTRIBUTES) + TRAIN_ATTRIBUTES + ("ens", "params")
NUM_PARAM_BINS = 8


def attribute_values(name: str, batch_sizes: tuple[int, ...]) -> tuple:
  """All values attribute `name` can take (ValueError for an unknown attribute)."""
  table = dict(zoo_net.ARCH_ATTRIBUTES, opt=zoo_train.OPTIMIZERS, bs=tuple(batch_sizes),
               split=SPLITS, size=tuple(SIZES), ens=("no", "yes"),
               params=tuple(range(NUM_PARAM_BINS)))
  if name not in table:
    raise ValueError(f"unknown zoo attribute {name!r}; expected one of {list(table)}")
  return table[name]


@dataclasses.dataclass(frozen=True)
class ZooSpec:
  """Everything that defines a zoo (config primitives; configs/reverse_engineering.py)."""
  train: zoo_train.TrainSpec
  models: int = 1000            # trained models (ensemble members included)
  ensemble_groups: int = 100    # of them: groups of 3 replicas (one ensemble each)
  stack_size: int = 128
  min_accuracy: float = 0.9
  seed: int = 0
  values: tuple = ()            # ((attribute, (allowed values...)), ...); () = all

  def allowed(self, name: str) -> tuple:
    """The indices of attribute `name`'s values this zoo draws from."""
    every = attribute_values(name, self.train.batch_sizes)
    chosen = dict(self.values).get(name)
    if chosen is None:
      return tuple(range(len(every)))
    names = [str(v) for v in every]
    return tuple(names.index(str(v)) for v in chosen)


def check_values(values: dict, batch_sizes: tuple[int, ...]) -> tuple:
  """ValueError for an unknown attribute, an unknown value or an empty choice; returns
  the normalised ((attribute, values), ...)."""
  out = []
  for name, chosen in sorted(values.items()):
    if name in ("ens", "params"):
      raise ValueError(f"zoo attribute {name!r} is derived, not drawn; it cannot be narrowed")
    every = [str(v) for v in attribute_values(name, batch_sizes)]
    chosen = tuple(chosen) if isinstance(chosen, (tuple, list)) else (chosen,)
    bad = [v for v in chosen if str(v) not in every]
    if bad or not chosen:
      raise ValueError(f"zoo attribute {name!r} has no value(s) {bad or '(none given)'}; "
                       f"expected a non-empty subset of {every}")
    out.append((name, tuple(str(v) for v in chosen)))
  return tuple(out)


def param_bin_edges(spec: ZooSpec) -> np.ndarray:
  """Inner edges [NUM_PARAM_BINS - 1] of the parameter-count bins: quantiles over every
  architecture of the zoo's grid (each counted once)."""
  names = list(zoo_net.ARCH_ATTRIBUTES)
  counts = [zoo_net.param_count(spec.train.net, dict(zip(names, combo)))
            for combo in itertools.product(*(spec.allowed(n) for n in names))]
  return np.quantile(np.asarray(counts, np.float64),
                     np.linspace(0, 1, NUM_PARAM_BINS + 1)[1:-1])


def plan(spec: ZooSpec) -> dict[str, np.ndarray]:
  """The trained models: {attribute: int [models]} (indices; no 'ens' / 'params'),
  'group' [models] (the replica group, -1 for none) and 'seed' [models] (init seeds).

  The first 3 * ensemble_groups models are the replica groups (three models that differ
  only in their initialisation), the rest independent draws; then all are shuffled.
  """
  rng = np.random.default_rng([spec.seed, 17])
  n, g = spec.models, spec.ensemble_groups
  if 3 * g > n:
    raise ValueError(f"zoo.ensemble_groups={g} needs {3 * g} models, more than zoo.models={n}")
  drawn = {name: rng.choice(spec.allowed(name), size=n - 2 * g)
           for name in tuple(zoo_net.ARCH_ATTRIBUTES) + TRAIN_ATTRIBUTES}
  rows = np.concatenate([np.repeat(np.arange(g), 3), np.arange(g, n - 2 * g)])
  out = {name: v[rows].astype(np.int32) for name, v in drawn.items()}
  out["group"] = np.where(np.arange(n) < 3 * g, rows, -1).astype(np.int32)
  out["seed"] = np.arange(n, dtype=np.int32)
  order = rng.permutation(n)
  return {k: v[order] for k, v in out.items()}


def training_rows(split: int, size: int, num_train: int, seed: int) -> np.ndarray:
  """Row indices of training subset (split, size): the union of the split's thirds of
  the training set, permuted (seeded), its first `size` share."""
  parts = np.array_split(np.arange(num_train), 3)
  union = np.concatenate([parts["abc".index(c)] for c in SPLITS[split]])
  perm = np.random.default_rng([seed, 23, split]).permutation(union)
  return np.sort(perm[:int(round(len(perm) * list(SIZES.values())[size]))])


def stack_cells(spec: ZooSpec, models: dict[str, np.ndarray]) -> list[dict]:
  """Grid cells: consecutive plan models of one batch size, at most stack_size each (a
  stack's sampler reads its batch size, so no rows are computed for nothing)."""
  cells = []
  for b in sorted(set(models["bs"].tolist())):
    idx = np.flatnonzero(models["bs"] == b)
    for s in range(0, len(idx), spec.stack_size):
      cells.append({"bs": int(b), "first": int(idx[s]), "stack": len(cells)})
  return cells


def stack_members(spec: ZooSpec, models: dict, cell: dict) -> np.ndarray:
  idx = np.flatnonzero(models["bs"] == cell["bs"])
  pos = int(np.flatnonzero(idx == cell["first"])[0])
  return idx[pos:pos + spec.stack_size]


def train_stack(spec: ZooSpec, models: dict, members: np.ndarray, data: dict,
                queries: np.ndarray, cell_dir: str, *, progress: bool = True,
                compile_cache: dict | None = None) -> dict[str, Any]:
  """Trains plan models `members` (one batch size) as one stack and stores them.

  data: 'train' and 'test' dicts of 'image' [N, H, W, C] and integer 'label' [N].
  Writes `cell_dir/models.npz`: 'index' [M] (plan rows), 'a/<attribute>' [M] (value
  indices; 'a/group', 'a/seed' too), 'accuracy' [M], 'skipped' [M], 'probs' [M, Q, K]
  (posteriors on `queries`), and the parameters as 'p/<path>'.
  """
  arch = {k: models[k][members] for k in tuple(zoo_net.ARCH_ATTRIBUTES) + ("opt", "bs")}
  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(spec.seed), s))(
      models["seed"][members])
  state = zoo_train.init_stack(spec.train, keys, arch)
  n_train = len(data["train"]["label"])
  sets = [training_rows(int(models["split"][m]), int(models["size"][m]), n_train, spec.seed)
          for m in members]
  batch = spec.train.batch_sizes[int(arch["bs"][0])]
  sampler = IndexSetSampler(sets, batch, seed=spec.seed)
  ckpt = Checkpointer(os.path.join(cell_dir, "checkpoints"),
                      {"kind": "zoo_stack", "layout": "models last",
                       "members": [int(m) for m in members]})
  state, stats = run_loop(zoo_lanes.to_lanes(state), zoo_train.make_stack_step(spec.train),
                          data["train"], sampler,
                          key=jax.random.key(spec.seed + 1), num_steps=spec.train.steps,
                          steps_per_call=10, checkpointer=ckpt,
                          checkpoint_every=spec.train.steps, log_every=spec.train.steps,
                          progress=progress, desc=f"zoo stack (batch {batch})",
                          compile_cache=compile_cache)
  state = zoo_lanes.from_lanes(state)
  test = data["test"]
  pred = zoo_train.stack_probs(state.variables, test["image"]).argmax(-1)
  accuracy = np.mean(pred == test["label"][None], axis=1)
  arrays = {"index": members.astype(np.int32), "accuracy": accuracy.astype(np.float32),
            "skipped": np.asarray(state.skipped, np.int32),
            "probs": zoo_train.stack_probs(state.variables, queries).astype(np.float32)}
  arrays.update({f"a/{k}": v[members] for k, v in models.items()})
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    arrays["p/" + "/".join(k.key for k in path)] = np.asarray(leaf)
  if io.is_chief():
    io.save_npz_atomic(os.path.join(cell_dir, "models.npz"), arrays)
  return {"models": len(members), "seconds": stats.seconds,
          "mean_accuracy": float(accuracy.mean())}


def build(spec: ZooSpec, data: dict, queries: np.ndarray, workdir: str, *,
          progress: bool = True) -> list[dict]:
  """Trains every stack not finished yet (`rsec.grid`; a rerun resumes)."""
  models = plan(spec)
  cache: dict = {}
  def run_cell(cell, cell_dir):
    return train_stack(spec, models, stack_members(spec, models, cell), data, queries,
                       cell_dir, progress=progress, compile_cache=cache)
  return grid.run_grid(workdir, stack_cells(spec, models), run_cell, progress=progress,
                       desc="zoo stacks")


# ------------------------------------------------------------------------- the table

@dataclasses.dataclass
class Zoo:
  """The kept zoo as a table of N models (singles, then ensembles).

  attributes: {name: int [N]} value indices for every name of ATTRIBUTES.
  members: int [N, 3] rows of `params` (the trained singles kept), -1 padded;
  weights [N, 3] (1/count per member). accuracy [N]: FONTS test accuracy (ensembles:
  the mean of their members' accuracies; the ensemble's own is not measured). probs
  [N, Q, K]: posteriors on the zoo's query images (ensembles: the members' mean).
  params: the kept singles' parameters (leaves [U, ...]); arch: {name: int [U]}.
  dropped: counts of trained models dropped ('accuracy', 'diverged').
  """
  attributes: dict[str, np.ndarray]
  members: np.ndarray
  weights: np.ndarray
  accuracy: np.ndarray
  probs: np.ndarray
  params: Any
  arch: dict[str, np.ndarray]
  dropped: dict[str, int]
  trained: int

  def __len__(self) -> int:
    return len(self.accuracy)

  def member_variables(self, rows: np.ndarray) -> dict:
    """Stacked variables ({'params', 'arch'}, leaves [len(rows), ...]) of singles `rows`."""
    return {"params": jax.tree.map(lambda a: a[rows], self.params),
            "arch": {k: v[rows] for k, v in self.arch.items()}}

  def logits_fn(self, index: int):
    """Model `index` alone as a plain `logits_fn(x [B, H, W, C]) -> [B, K]` (an
    ensemble: log of its members' mean posterior)."""
    rows = self.members[index][self.members[index] >= 0]
    variables = [jax.tree.map(np.asarray, self.member_variables(np.asarray([r])))
                 for r in rows]
    single = [jax.tree.map(lambda a: a[0], v) for v in variables]

    @jax.jit
    def logits(x):
      p = sum(jax.nn.softmax(zoo_net.apply(v, x), -1) for v in single) / len(single)
      return jax.numpy.log(jax.numpy.maximum(p, 1e-30))
    return logits


def _unflatten(arrays: dict) -> dict:
  tree: dict = {}
  for key, value in arrays.items():
    node = tree
    *path, leaf = key.split("/")[1:]
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def load(spec: ZooSpec, workdir: str) -> Zoo:
  """The kept zoo from a built workdir (ValueError if a stack is missing)."""
  models = plan(spec)
  parts = []
  for cell in stack_cells(spec, models):
    path = os.path.join(workdir, "cells", grid.cell_name(cell), "models.npz")
    if not os.path.exists(path):
      raise ValueError(f"zoo stack {grid.cell_name(cell)} is not built in {workdir} "
                       f"(run the zoo first)")
    with np.load(path) as f:
      parts.append({k: f[k] for k in f.files})
  cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  order = np.argsort(cat["index"])
  cat = {k: v[order] for k, v in cat.items()}
  diverged = cat["skipped"] > 0
  keep = (cat["accuracy"] >= spec.min_accuracy) & ~diverged
  kept = np.flatnonzero(keep)
  if not len(kept):
    raise ValueError(f"no model reached min_accuracy={spec.min_accuracy} without diverging "
                     f"(best test accuracy {cat['accuracy'].max():.3f}); train longer or "
                     f"lower the threshold")
  row_of = -np.ones(len(keep), np.int64)
  row_of[kept] = np.arange(len(kept))
  edges = param_bin_edges(spec)
  names = list(zoo_net.ARCH_ATTRIBUTES)
  bins = np.asarray([np.searchsorted(edges, zoo_net.param_count(
      spec.train.net, {n: models[n][i] for n in names}), side="right")
      for i in range(len(keep))], np.int32)
  base = {n: models[n] for n in names + list(TRAIN_ATTRIBUTES)}
  base["params"] = bins
  # Singles, then one ensemble per replica group with >= 2 kept members (2 or 3 of them).
  rng = np.random.default_rng([spec.seed, 29])
  members, attr_rows, ens = [[i, -1, -1] for i in kept], list(kept), [0] * len(kept)
  for g in range(spec.ensemble_groups):
    group = [i for i in np.flatnonzero(models["group"] == g) if keep[i]]
    if len(group) >= 2:
      take = group[:int(rng.integers(2, len(group) + 1))]
      members.append(take + [-1] * (3 - len(take)))
      attr_rows.append(take[0])
      ens.append(1)
  members = np.asarray(members, np.int64)
  rows = np.where(members >= 0, row_of[np.maximum(members, 0)], -1)
  count = (rows >= 0).sum(1, keepdims=True)
  weights = (rows >= 0) / count
  attributes = {n: base[n][attr_rows].astype(np.int32) for n in base}
  attributes["ens"] = np.asarray(ens, np.int32)
  probs_kept, acc_kept = cat["probs"][kept], cat["accuracy"][kept]
  safe = np.maximum(rows, 0)
  probs = np.einsum("nm,nmqk->nqk", weights, probs_kept[safe]).astype(np.float32)
  accuracy = np.sum(weights * acc_kept[safe], axis=1).astype(np.float32)
  params = _unflatten({k: v[kept] for k, v in cat.items() if k.startswith("p/")})
  arch = {n: models[n][kept] for n in names}
  return Zoo(attributes, rows, weights.astype(np.float32), accuracy, probs, params, arch,
             {"accuracy": int(np.sum(~keep & ~diverged)), "diverged": int(diverged.sum())},
             len(keep))
