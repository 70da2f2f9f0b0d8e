"""Every bad input raises a ValueError naming the argument, before anything compiles."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rsec.attacks as A
from rsec.parallel import data_mesh
from tests.attacks.models import random_linear

F = random_linear(36)
X = jax.random.uniform(jax.random.key(0), (4, 6, 6, 1))
Y = jnp.array([0, 1, 2, 3], jnp.int32)
KEY = jax.random.key(0)


@pytest.mark.parametrize("make, match", [
    (lambda: A.pgd(-0.1), "eps"),
    (lambda: A.pgd(float("nan")), "eps"),
    (lambda: A.pgd(float("inf")), "eps"),
    (lambda: A.fgsm(-1.0), "eps"),
    (lambda: A.apgd_ce(-0.1), "eps"),
    (lambda: A.square(float("nan")), "eps"),
    (lambda: A.paper(-0.3), "eps"),
    (lambda: A.cw_l2(eps=-1.0), "eps"),
    (lambda: A.pgd(0.1, norm="l3"), "norm"),
    (lambda: A.apgd_ce(0.1, norm="l1"), "norm"),
    (lambda: A.square(0.1, norm="l1"), "norm"),
    (lambda: A.pgd(0.1, loss="hinge"), "loss"),
    (lambda: A.square(0.1, loss="ce_targeted"), "loss"),
    (lambda: A.pgd(0.1, init="gaussian"), "init"),
    (lambda: A.pgd(0.1, select="best"), "select"),
    (lambda: A.pgd(0.1, step="momentum"), "step"),
    (lambda: A.pgd(0.1, steps=0), "steps"),
    (lambda: A.pgd(0.1, steps=2.5), "steps"),
    (lambda: A.pgd(0.1, steps=True), "steps"),
    (lambda: A.pgd(0.1, restarts=0), "restarts"),
    (lambda: A.apgd_t(0.1, n_target_classes=0), "n_target_classes"),
    (lambda: A.pgd(0.1, step_size=-1.0), "step_size"),
    (lambda: A.pgd(0.1, lo=1.0, hi=0.0), "hi"),
    (lambda: A.paper(lr=0.0), "lr"),
    (lambda: A.cw_l2(c=0.0), "c"),
    (lambda: A.square(0.1, p_init=0.0), "p_init"),
    (lambda: A.build_attack("deepfool", eps=0.1), "attack"),
    (lambda: A.autoattack(0.1, version="fast"), "version"),
    (lambda: A.cascade([]), "members"),
    (lambda: A.cascade([42]), "members"),
])
def test_bad_config(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def _int_logits(x):
  return jnp.zeros((x.shape[0], 5), jnp.int32)


def _raises(x):
  raise TypeError("model exploded")


@pytest.mark.parametrize("args, match", [
    ((F, KEY, X + 0.5, Y), "x must lie in"),
    ((F, KEY, X - 0.5, Y), "x must lie in"),
    ((F, KEY, X.at[0, 0, 0, 0].set(jnp.nan), Y), "x has 1 non-finite"),
    ((F, KEY, (X * 255).astype(jnp.uint8), Y), "x must be a floating"),
    ((F, KEY, X[:, 0, 0, 0], Y), "x must be a batch"),
    ((F, KEY, X, Y.at[0].set(5)), "y must lie in"),
    ((F, KEY, X, Y.at[0].set(-1)), "y must lie in"),
    ((F, KEY, X, Y.astype(jnp.float32)), "y must be an integer"),
    ((F, KEY, X, Y[:3]), "y has 3 labels"),
    ((F, KEY, X, Y[:, None]), "y must have shape"),
    ((lambda x: F(x)[:, 0], KEY, X, Y), "logits_fn must return logits of shape"),
    ((lambda x: F(x)[:2], KEY, X, Y), "logits_fn must return logits of shape"),
    ((lambda x: F(x)[..., None], KEY, X, Y), "logits_fn must return logits of shape"),
    ((lambda x: (F(x), F(x)), KEY, X, Y), "logits_fn must return one array"),
    ((_int_logits, KEY, X, Y), "logits_fn must return floating"),
    ((_raises, KEY, X, Y), "logits_fn failed.*model exploded"),
    (("not a function", KEY, X, Y), "logits_fn must be callable"),
    ((F, 0, X, Y), "key must be a PRNG key"),
    ((F, jax.random.split(KEY, 2), X, Y), "key must be a single"),
])
def test_bad_call(args, match):
  for attack in (A.pgd(0.1, steps=2), A.cascade([A.fgsm(0.1)])):
    with pytest.raises(ValueError, match=match):
      attack(*args)


def test_class_count_and_image_layout_requirements():
  two = lambda x: F(x)[:, :2]  # noqa: E731
  with pytest.raises(ValueError, match="needs >= 3"):
    A.apgd_dlr(0.1)(two, KEY, X, Y % 2)
  with pytest.raises(ValueError, match="needs >= 4"):
    A.apgd_t(0.1)(lambda x: F(x)[:, :3], KEY, X, Y % 3)
  with pytest.raises(ValueError, match="needs >= 4"):
    A.autoattack(0.1)(lambda x: F(x)[:, :3], KEY, X, Y % 3)
  with pytest.raises(ValueError, match="x must be a batch of images"):
    A.square(0.1)(random_linear(10), KEY, jnp.zeros((4, 10)), Y)


def test_custom_bounds_are_respected():
  x = X * 2 - 1
  with pytest.raises(ValueError, match=r"x must lie in \[0"):
    A.pgd(0.1, steps=2)(F, KEY, x, Y)
  out = A.pgd(0.1, steps=2, lo=-1.0, hi=1.0)(F, KEY, x, Y)
  assert float(out.min()) >= -1.0


def test_no_tracing_of_the_model_for_config_errors():
  calls = []

  def f(x):
    calls.append(1)
    return F(x)

  for bad in (lambda: A.pgd(-1.0), lambda: A.pgd(0.1, norm="l0")):
    with pytest.raises(ValueError):
      bad()
  with pytest.raises(ValueError, match="key"):
    A.pgd(0.1)(f, 0, X, Y)
  with pytest.raises(ValueError, match="x must lie"):
    A.pgd(0.1)(f, KEY, X + 2, Y)
  assert not calls


def test_engine_validation():
  param = A.pixel()
  step = A.STEPS.get("sign")("linf", 1, {"step_size": 0.1})
  kw = dict(norm="linf", eps=0.1, step=step, loss=A.make_loss("ce"), steps=2)
  with pytest.raises(ValueError, match="eps"):
    A.run_attack(F, KEY, X, Y, param, **dict(kw, eps=-0.1))
  with pytest.raises(ValueError, match="eps"):
    A.run_attack(F, KEY, X, Y, param, **dict(kw, eps=np.array([0.1, np.nan, 0.1, 0.1])))
  with pytest.raises(ValueError, match="steps"):
    A.run_attack(F, KEY, X, Y, param, **dict(kw, steps=0))
  with pytest.raises(ValueError, match="restarts"):
    A.run_attack(F, KEY, X, Y, param, restarts=0, **kw)
  with pytest.raises(ValueError, match="norm"):
    A.run_attack(F, KEY, X, Y, param, **dict(kw, norm="l7"))
  with pytest.raises(ValueError, match="select"):
    A.run_attack(F, KEY, X, Y, param, select="nope", **kw)
  with pytest.raises(ValueError, match="init"):
    A.run_attack(F, KEY, X, Y, param, init="nope", **kw)
  with pytest.raises(ValueError, match="targets"):
    A.run_attack(F, KEY, X, Y, param, targets=Y, **kw)
  with pytest.raises(ValueError, match="y must have shape"):
    A.run_attack(F, KEY, X, Y[:2], param, **kw)


def test_evaluation_validation():
  atk = {"fgsm": A.fgsm(0.1)}
  with pytest.raises(ValueError, match="batch_size"):
    A.evaluate_attacks(F, KEY, X, Y, atk, batch_size=0)
  with pytest.raises(ValueError, match="attacks"):
    A.evaluate_attacks(F, KEY, X, Y, {})
  with pytest.raises(ValueError, match="attack names"):
    A.evaluate_attacks(F, KEY, X, Y, {"a/b": A.fgsm(0.1)})
  with pytest.raises(ValueError, match="attack names"):
    A.evaluate_attacks(F, KEY, X, Y, {"worst_case": A.fgsm(0.1)})
  with pytest.raises(ValueError, match="y has 3"):
    A.evaluate_attacks(F, KEY, X, Y[:3], atk)
  with pytest.raises(ValueError, match="y must lie"):
    A.evaluate_attacks(F, KEY, X, Y + 2, atk)
  with pytest.raises(ValueError, match="x must lie"):
    A.evaluate_attacks(F, KEY, X + 1, Y, atk)
  with pytest.raises(ValueError, match="mesh"):
    A.evaluate_attacks(F, KEY, X, Y, atk, mesh="cpu")
  if len(jax.devices()) > 1:
    with pytest.raises(ValueError, match="divisible"):
      A.evaluate_attacks(F, KEY, X, Y, atk, batch_size=len(jax.devices()) + 1,
                         mesh=data_mesh())
  with pytest.raises(ValueError, match="eps_grid"):
    A.robust_accuracy_curve(F, KEY, X, Y, A.fgsm, [0.1, -0.1])
  with pytest.raises(ValueError, match="eps_grid"):
    A.robust_accuracy_curve(F, KEY, X, Y, A.fgsm, [])
