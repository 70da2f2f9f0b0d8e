"""Which queries a knockoff attacker sends: the random and the adaptive strategy.

Both turn a `QueryPool` into one seeded *stream* of pool indices and the victim's answers
to them; a budget B is the stream's first B queries (nested prefixes), so one collection
up to the largest budget serves every budget. Queries go out in batches of `batch`
through any object with the victim interface (`query(x) -> outputs`, `output_mode`,
`num_classes`: an in-process `Victim` or a `VictimClient`).

- random: a seeded permutation of the pool.
- adaptive (Orekondy et al., CVPR 2019): a gradient bandit over the pool's hierarchy.
  Each query walks root -> coarse node -> leaf with softmax policies over preferences
  H, then takes the leaf's next unused image (a seeded order per leaf; exhausted leaves
  are masked out). After each batch, the rewards (`rsec.stealing.rewards`) update H of
  every node on each query's path: H_a += lr * mean_i (1[a = a_i] - pi_a) (r_i - r_bar),
  with r_bar the mean of all earlier rewards; then the online knockoff (`learner`) takes
  its training steps on everything collected so far. So the knockoff is updated between
  batches, not refit after each query (ART), and its loss reward reads soft answers.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import numpy as np
from tqdm.auto import tqdm

from rsec.checks import check_choice, check_finite_scalar, check_positive_int
from rsec.stealing.query_sets import QueryPool
from rsec.stealing.rewards import RewardTracker

STRATEGIES = ("random", "adaptive")
LABEL_MODES = ("soft", "argmax")
USABLE_OUTPUTS = ("probs", "topk", "rounded", "label")


def targets_from_outputs(outputs: np.ndarray, output_mode: str, labels: str = "soft"
                         ) -> np.ndarray:
  """Training targets [B, K] float32 (probability rows) from a victim's outputs.

  probs / topk / label rows are distributions already; rounded rows are renormalised (an
  all-zero row cannot occur: the output mode makes it one-hot). `labels='argmax'` keeps
  only the top class (one-hot). A `ranking` victim gives no scores: ValueError.
  """
  check_choice("labels", labels, LABEL_MODES)
  if output_mode not in USABLE_OUTPUTS:
    raise ValueError(f"a knockoff attacker cannot train on output mode {output_mode!r} "
                     f"(no class scores); it needs one of {list(USABLE_OUTPUTS)}")
  y = np.maximum(np.asarray(outputs, np.float32), 0.0)
  if labels == "argmax":
    return np.eye(y.shape[1], dtype=np.float32)[y.argmax(1)]
  s = y.sum(1, keepdims=True)
  return np.where(s > 0, y / np.where(s > 0, s, 1.0), 1.0 / y.shape[1]).astype(np.float32)


def queries_left(victim: Any) -> int | None:
  """Images the victim still answers (None: unlimited), in-process or served."""
  if hasattr(victim, "budget") and not callable(victim.budget):
    return victim.budget.left
  return victim.budget().get("left")


@dataclasses.dataclass
class Stream:
  """A collected stream: pool indices [B] in query order, the victim's outputs [B, K] (or
  their mean over `repeats`), and, for the adaptive strategy, the leaf of each query."""
  order: np.ndarray
  outputs: np.ndarray
  output_mode: str
  queries: int            # images charged (B * repeats)
  leaves: np.ndarray | None = None


class Learner(Protocol):
  """The adaptive strategy's online knockoff."""
  def logits(self, x: np.ndarray) -> np.ndarray: ...
  def update(self, x: np.ndarray, targets: np.ndarray) -> None: ...


def check_stream_request(victim: Any, pool: QueryPool, budget: int, repeats: int = 1) -> None:
  """ValueError, before any query, unless the pool and the victim's budget hold `budget`
  queries (times `repeats`) and the victim answers with class scores."""
  budget = check_positive_int("budget", budget)
  repeats = check_positive_int("repeats", repeats)
  if budget > len(pool):
    raise ValueError(f"budget {budget} is larger than the {pool.name!r} query pool "
                     f"({len(pool)} images)")
  left = queries_left(victim)
  if left is not None and budget * repeats > left:
    raise ValueError(f"budget {budget} x {repeats} repeats needs {budget * repeats} queries; "
                     f"the victim answers only {left} more")
  targets_from_outputs(np.ones((1, victim.num_classes)), victim.output_mode)


def ask(victim: Any, x: np.ndarray, repeats: int) -> np.ndarray:
  """The victim's outputs for x, averaged over `repeats` identical queries (the
  defence-aware attacker against randomised defences)."""
  if repeats == 1:
    return np.asarray(victim.query(x), np.float32)
  return np.mean([np.asarray(victim.query(x), np.float32) for _ in range(repeats)], axis=0)


def collect_random(victim: Any, pool: QueryPool, budget: int, seed: int, *, batch: int = 500,
                   repeats: int = 1, progress: bool = False) -> Stream:
  """The first `budget` queries of the pool's permutation by `seed`."""
  check_stream_request(victim, pool, budget, repeats)
  batch = check_positive_int("batch", batch)
  order = np.random.default_rng([seed, 0x0DE7]).permutation(len(pool))[:budget]
  outs = [ask(victim, pool.images[order[i:i + batch]], repeats)
          for i in tqdm(range(0, budget, batch), desc=f"query {pool.name}",
                        disable=not progress, leave=False)]
  return Stream(order, np.concatenate(outs), victim.output_mode, budget * repeats)


class HierarchyBandit:
  """Softmax policies over a two-level tree (`parent[f]` = coarse node of leaf f) and
  their gradient-bandit updates (see the module docstring)."""

  def __init__(self, parent: np.ndarray, lr: float, seed: int):
    self.parent = np.asarray(parent, np.int64)
    self.num_coarse = int(self.parent.max()) + 1
    self.lr = check_finite_scalar("bandit lr", lr, low=0.0, low_inclusive=False)
    self.h_coarse = np.zeros(self.num_coarse)
    self.h_fine = np.zeros(len(self.parent))
    self.rng = np.random.default_rng([seed, 0xBA7D])
    self.baseline, self.seen = 0.0, 0

  def policies(self, available: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pi over coarse nodes [C] and, per leaf, pi(leaf | its coarse node) [F]; nodes with
    no available leaf get probability 0."""
    def softmax(h, mask):
      z = np.where(mask, h, -np.inf)
      z = np.exp(z - z[mask].max())
      return z / z.sum()
    open_coarse = np.bincount(self.parent[available], minlength=self.num_coarse) > 0
    pi_c = softmax(self.h_coarse, open_coarse)
    pi_f = np.zeros(len(self.parent))
    for c in np.flatnonzero(open_coarse):
      kids = (self.parent == c) & available
      pi_f[kids] = softmax(self.h_fine[kids], np.ones(kids.sum(), bool))
    return pi_c, pi_f

  def sample(self, available: np.ndarray) -> int:
    pi_c, pi_f = self.policies(available)
    c = self.rng.choice(self.num_coarse, p=pi_c)
    kids = np.flatnonzero(self.parent == c)
    return int(self.rng.choice(kids, p=pi_f[kids] / pi_f[kids].sum()))

  def update(self, leaves: np.ndarray, rewards: np.ndarray, available: np.ndarray) -> None:
    pi_c, pi_f = self.policies(available)
    adv = np.asarray(rewards, np.float64) - (self.baseline if self.seen else 0.0)
    g_c, g_f = np.zeros_like(self.h_coarse), np.zeros_like(self.h_fine)
    for leaf, a in zip(leaves, adv):
      c = self.parent[leaf]
      g_c -= a * pi_c
      g_c[c] += a
      kids = self.parent == c
      g_f[kids] -= a * pi_f[kids]
      g_f[leaf] += a
    self.h_coarse += self.lr * g_c / len(leaves)
    self.h_fine += self.lr * g_f / len(leaves)
    n = len(rewards)
    self.baseline = (self.baseline * self.seen + float(np.sum(rewards))) / (self.seen + n)
    self.seen += n


def collect_adaptive(victim: Any, pool: QueryPool, budget: int, seed: int, *, learner: Learner,
                     reward: str = "all", batch: int = 500, lr: float = 0.5,
                     window: int = 500, labels: str = "soft", repeats: int = 1,
                     progress: bool = False) -> Stream:
  """The adaptive strategy's first `budget` queries (see the module docstring); `labels`
  is how the attacker reads answers for its rewards and its online knockoff."""
  check_stream_request(victim, pool, budget, repeats)
  batch = check_positive_int("batch", batch)
  tracker = RewardTracker(reward, victim.num_classes, window)
  bandit = HierarchyBandit(pool.parent, lr, seed)
  rng = np.random.default_rng([seed, 0x1EAF])
  members = [list(rng.permutation(np.flatnonzero(pool.fine == f)))
             for f in range(len(pool.parent))]
  order, leaves, outs = [], [], []
  bar = tqdm(total=budget, desc=f"adaptive {pool.name}", disable=not progress, leave=False)
  while len(order) < budget:
    picks, picked_leaves = [], []
    for _ in range(min(batch, budget - len(order))):
      available = np.array([len(m) > 0 for m in members])
      leaf = bandit.sample(available)
      picks.append(members[leaf].pop())
      picked_leaves.append(leaf)
    x = pool.images[np.array(picks)]
    out = ask(victim, x, repeats)
    y = targets_from_outputs(out, victim.output_mode, labels)
    logits = learner.logits(x) if reward in ("loss", "all") else None
    available = np.array([len(m) > 0 for m in members])
    if available.any():
      bandit.update(np.array(picked_leaves), tracker(y, logits), available)
    order += picks
    leaves += picked_leaves
    outs.append(out)
    if len(order) < budget:
      ys = np.concatenate([targets_from_outputs(o, victim.output_mode, labels) for o in outs])
      learner.update(pool.images[np.array(order)], ys)
    bar.update(len(picks))
  bar.close()
  return Stream(np.array(order), np.concatenate(outs), victim.output_mode, budget * repeats,
                np.array(leaves))


def collect(strategy: str, victim: Any, pool: QueryPool, budget: int, seed: int, *,
            learner_factory: Callable[[], Learner] | None = None, **kwargs) -> Stream:
  """`collect_random` or `collect_adaptive` by name (the adaptive one builds its online
  knockoff with `learner_factory()`)."""
  check_choice("strategy", strategy, STRATEGIES)
  if strategy == "random":
    kwargs = {k: v for k, v in kwargs.items() if k in ("batch", "repeats", "progress")}
    return collect_random(victim, pool, budget, seed, **kwargs)
  if learner_factory is None:
    raise ValueError("the adaptive strategy needs a learner_factory (its online knockoff)")
  return collect_adaptive(victim, pool, budget, seed, learner=learner_factory(), **kwargs)
