"""Shared fixture: a tiny MLP trained for a second on synthetic 8x8 images; and the
hypothesis profile of the attack tests."""
from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import pytest
from hypothesis import settings

from tests.attacks.models import NUM_CLASSES, SHAPE, make_data, mlp_apply, mlp_init

# The attack tests' hypothesis examples are the same on every run, in CI as anywhere
# (derandomized: a seed from each test's code, no example database), so a red CI run
# reproduces and a green one is not luck. RSEC_HYPOTHESIS=explore draws new examples each
# run (and shrinks failures through the local database) to look for bugs. Tests take it
# with settings(settings.get_profile("rsec-attacks"), max_examples=...).
if os.environ.get("RSEC_HYPOTHESIS", "ci") == "explore":
  settings.register_profile("rsec-attacks", deadline=None)
else:
  settings.register_profile("rsec-attacks", derandomize=True, database=None, deadline=None,
                            print_blob=True)


class Trained(NamedTuple):
  logits_fn: object   # images [B, 8, 8, 1] -> logits [B, 5]
  x: jax.Array        # test images [N, 8, 8, 1] in [0, 1]
  y: jax.Array        # labels [N] int32
  clean_accuracy: float


@pytest.fixture(scope="session")
def trained() -> Trained:
  key = jax.random.key(42)
  kp, ktr, kte, ki = jax.random.split(key, 4)
  prototypes = jax.random.uniform(kp, (NUM_CLASSES,) + SHAPE, minval=0.2, maxval=0.8)
  xtr, ytr = make_data(ktr, 512, prototypes)
  xte, yte = make_data(kte, 128, prototypes)
  params = mlp_init(ki)
  opt = optax.adam(1e-2)

  @jax.jit
  def train(params):
    def step(carry, _):
      p, s = carry
      g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          mlp_apply(p, xtr), ytr).mean())(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=200)
    return params

  params = train(params)
  logits_fn = jax.tree_util.Partial(mlp_apply, params)
  acc = float(jnp.mean(jnp.argmax(logits_fn(xte), 1) == yte))
  return Trained(logits_fn, xte, yte, acc)

