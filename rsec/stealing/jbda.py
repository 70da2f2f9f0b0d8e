"""Jacobian-based dataset augmentation (Papernot et al., 2017) and its JB-self / JB-top-k
variants (as in the Prediction Poisoning paper), crafted on the attack engine.

A stream starts from a seed set (a few images per class from the attacker's own data) and
grows in rounds: train a substitute on everything answered so far, step every image of
the set once along the sign of a gradient of the substitute, query the victim on the new
images, append them. Each step is `run_attack` with one sign step of size lambda in the
pixel parametrisation (so images are clipped to [0, 1] in pixel space: the public code
clips mean/std-normalised inputs to [0, 1] instead), with the variant's objective:

| variant | new images per image and round | objective ascended | labels |
| --- | --- | --- | --- |
| `jbda` | 1 | the substitute's probability of the victim's top class (Papernot's J_F[O(x)]) | argmax |
| `jbself` | 1 | the substitute's cross-entropy on the victim's answer (away from what it learnt) | soft |
| `jbtopk` | k | the log-probability of each of the substitute's k most likely other classes (targeted) | soft |

lambda flips sign every tau rounds (Papernot's periodic step size). The round's substitute
is retrained **from scratch** on the grown set (for `round_steps` steps): a warm-started
substitute would carry the order of earlier rounds into later ones, which is the flaw the
knockoff protocol avoids too. The stolen model evaluated at a budget B is trained from
scratch on the stream's first B images like every knockoff (`rsec.stealing.knockoff`).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rsec import parallel
from rsec.attacks.engine import run_attack
from rsec.attacks.params import pixel
from rsec.attacks.steps import STEPS
from rsec.checks import check_choice, check_finite_scalar, check_positive_int
from rsec.stealing.knockoff import KnockoffSpec, train_stack
from rsec.stealing.strategies import Stream, ask, queries_left, targets_from_outputs

VARIANTS = ("jbda", "jbself", "jbtopk")
VARIANT_LABELS = {"jbda": "argmax", "jbself": "soft", "jbtopk": "soft"}


@functools.partial(jax.jit, static_argnames=("apply_fn", "variant", "k"))
def jacobian_step(apply_fn, variables, x: jax.Array, targets: jax.Array, lam: jax.Array,
                  variant: str, k: int = 1) -> jax.Array:
  """The new images of one augmentation round: [B, ...] (jbda, jbself) or [k * B, ...]
  (jbtopk, target-major). x [B, ...] in [0, 1]; targets [B, K] the victim's answers as
  training targets; lam the signed step size (pixels)."""
  logits_fn = lambda z: apply_fn(variables, z, train=False)
  y = targets.argmax(-1)
  direction = jnp.sign(lam)

  def craft(loss, target=None):
    _, x_new, _ = run_attack(
        logits_fn, jax.random.key(0), x, y, pixel(0.0, 1.0), norm="linf", eps=jnp.abs(lam),
        step=STEPS.get("sign")("linf", 1, {"step_size": jnp.abs(lam)}), loss=loss, steps=1,
        init="zero", select="last", targets=None if target is None else target[None])
    return x_new

  if variant == "jbda":
    return craft(lambda logits, y_, t: direction * jnp.take_along_axis(
        jax.nn.softmax(logits), y_[:, None], 1)[:, 0])
  if variant == "jbself":
    return craft(lambda logits, y_, t: direction * -jnp.sum(
        targets * jax.nn.log_softmax(logits), -1))
  # jbtopk: the substitute's k most likely classes after its top one.
  order = jnp.argsort(-logits_fn(x), axis=-1)[:, 1:k + 1]
  outs = [craft(lambda logits, y_, t: direction * jnp.take_along_axis(
      jax.nn.log_softmax(logits), t[:, None], 1)[:, 0], order[:, j]) for j in range(k)]
  return jnp.concatenate(outs)


def seed_set(images: np.ndarray, labels: np.ndarray, per_class: int) -> np.ndarray:
  """Indices of the first `per_class` images of every class (ValueError if empty or a
  class has fewer)."""
  per_class = check_positive_int("seeds_per_class", per_class, minimum=0)
  if per_class == 0 or len(images) == 0:
    raise ValueError("JBDA needs a non-empty seed set (seeds_per_class >= 1)")
  picks = []
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)[:per_class]
    if len(rows) < per_class:
      raise ValueError(f"the seed pool has {len(rows)} images of class {c}, fewer than "
                       f"seeds_per_class={per_class}")
    picks.append(rows)
  return np.sort(np.concatenate(picks))


def collect_jbda(victim, seeds: np.ndarray, budget: int, variant: str, spec: KnockoffSpec, *,
                 lam: float = 0.1, tau: int = 3, k: int = 3, round_steps: int = 300,
                 key: jax.Array, progress: bool = False) -> tuple[Stream, np.ndarray]:
  """Grows a JBDA-family stream from `seeds` [S, ...] to `budget` images (the seeds count).

  Returns (Stream with order = arange(budget), the images [budget, ...] themselves)."""
  check_choice("jbda variant", variant, VARIANTS)
  budget = check_positive_int("budget", budget)
  lam = check_finite_scalar("lam", lam, low=0.0, low_inclusive=False)
  tau = check_positive_int("tau", tau)
  k = check_positive_int("k", k)
  if len(seeds) == 0:
    raise ValueError("JBDA needs a non-empty seed set")
  left = queries_left(victim)
  if left is not None and budget > left:
    raise ValueError(f"budget {budget} is larger than the victim's remaining {left} queries")
  labels = VARIANT_LABELS[variant]
  targets_from_outputs(np.ones((1, victim.num_classes)), victim.output_mode, labels)
  x = np.asarray(seeds[:budget], np.float32)
  outs = ask(victim, x, 1)
  bar = tqdm(total=budget, initial=len(x), desc=variant, disable=not progress, leave=False)
  rnd, compiled = 0, {}   # rounds of one batch size compile their training once
  while len(x) < budget:
    y = targets_from_outputs(outs, victim.output_mode, labels)
    devices = parallel.data_mesh().devices.size
    batch = min(spec.batch_size, len(x) - len(x) % devices)
    round_spec = dataclasses.replace(spec, steps=round_steps, batch_size=batch,
                                     eval_every=round_steps)
    idx = np.arange(len(x))
    apply_fn, variables, _ = train_stack(
        round_spec, victim.num_classes, {"image": x, "label": y}, [idx], [idx[:0]],
        [jax.random.fold_in(key, 2 * rnd)], key=jax.random.fold_in(key, 2 * rnd + 1),
        progress=False, desc=f"{variant} round {rnd}", compile_cache=compiled)
    one = jax.tree.map(lambda a: a[0], variables)
    signed = lam * (-1.0 if (rnd // tau) % 2 else 1.0)
    new = np.asarray(jacobian_step(apply_fn, one, jnp.asarray(x), jnp.asarray(y),
                                   jnp.float32(signed), variant, k))
    new = new[:budget - len(x)]
    outs = np.concatenate([outs, ask(victim, new, 1)])
    x = np.concatenate([x, new])
    bar.update(len(new))
    rnd += 1
  bar.close()
  return Stream(np.arange(budget), outs, victim.output_mode, budget), x
