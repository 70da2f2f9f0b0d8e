"""Evaluation over a data set (batching, padding, compile-once, sharding) and sanity checks."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rsec.attacks as A
from rsec.attacks import threat
from rsec.parallel import data_mesh

KEY = jax.random.key(3)
EPS = 0.12


def counting(fn):
  calls = []

  def f(x):
    calls.append(1)  # Python side effect: runs only when traced
    return fn(x)
  return f, calls


def test_matches_direct_computation(trained):
  f, x, y = trained.logits_fn, trained.x[:100], trained.y[:100]
  attacks = {"fgsm": A.fgsm(EPS), "pgd0": A.pgd(EPS, steps=10, init="zero")}
  r = A.evaluate_attacks(f, KEY, x, y, attacks, batch_size=32)  # 4 batches, last padded
  correct = jnp.argmax(f(x), 1) == y
  assert r["num_examples"] == 100
  assert r["clean_accuracy"] == pytest.approx(float(correct.mean()))
  worst = correct
  for name, a in attacks.items():  # zero-init attacks do not depend on the batching key
    x_adv = a(f, KEY, x, y)
    ok = jnp.argmax(f(x_adv), 1) == y
    worst = worst & ok
    assert r[f"robust_accuracy/{name}"] == pytest.approx(float(jnp.mean(ok & correct)))
    broken = correct & ~ok
    assert r[f"success_rate_any/{name}"] == pytest.approx(float(broken.sum() / correct.sum()))
    assert r[f"success_rate/{name}"] == pytest.approx(r[f"success_rate_any/{name}"])
    d = x_adv - x
    for p in ("l1", "l2", "linf"):
      want = float(threat.norm(d, p)[broken].mean())
      assert r[f"mean_{p}/{name}"] == pytest.approx(want, rel=1e-4)
  assert r["robust_accuracy/worst_case"] == pytest.approx(float(worst.mean()))
  assert r["robust_accuracy/worst_case"] <= min(r["robust_accuracy/fgsm"],
                                                r["robust_accuracy/pgd0"])
  assert r["robust_accuracy/pgd0"] <= r["clean_accuracy"]


def test_stutz_success_rate_averages_over_attempts(trained):
  r = A.evaluate_attacks(trained.logits_fn, KEY, trained.x, trained.y,
                         {"paper": A.paper(EPS)}, batch_size=64)
  assert 0 < r["success_rate/paper"] <= r["success_rate_any/paper"] <= 1


def test_compiles_once_over_batches_and_padding(trained):
  f, calls = counting(trained.logits_fn)
  attacks = {"pgd": A.pgd(EPS, steps=5), "sq": A.square(EPS, steps=5)}
  A.evaluate_attacks(f, KEY, trained.x[:32], trained.y[:32], attacks, batch_size=32)
  one_batch = len(calls)
  g, calls2 = counting(trained.logits_fn)
  attacks = {"pgd": A.pgd(EPS, steps=5), "sq": A.square(EPS, steps=5)}
  A.evaluate_attacks(g, KEY, trained.x[:80], trained.y[:80], attacks, batch_size=32)
  assert len(calls2) == one_batch  # 3 batches, the last one padded: no retracing


def test_generic_callable_attack_is_supported(trained):
  def noise(logits_fn, key, x, y):
    del logits_fn, y
    return jnp.clip(x + 0.3 * jax.random.rademacher(key, x.shape, x.dtype), 0, 1)

  r = A.evaluate_attacks(trained.logits_fn, KEY, trained.x, trained.y, {"noise": noise},
                         batch_size=64)
  assert r["robust_accuracy/noise"] <= r["clean_accuracy"]
  assert r["success_rate/noise"] == pytest.approx(r["success_rate_any/noise"])


def test_sharded_evaluation_matches_single_device(trained):
  n_dev = len(jax.devices())
  mesh = data_mesh()
  attacks = {"pgd": A.pgd(EPS, steps=10, select="first_success"),
             "casc": A.cascade([A.fgsm(EPS), A.apgd_ce(EPS, steps=10)])}
  bs = 8 * n_dev
  ref = A.evaluate_attacks(trained.logits_fn, KEY, trained.x[:60], trained.y[:60], attacks,
                           batch_size=bs)
  got = A.evaluate_attacks(trained.logits_fn, KEY, trained.x[:60], trained.y[:60], attacks,
                           batch_size=bs, mesh=mesh)
  assert got.keys() == ref.keys()
  for k in ref:
    np.testing.assert_allclose(got[k], ref[k], atol=1e-5, err_msg=k)


def test_curve_is_non_increasing_and_compiles_once(trained):
  f, calls = counting(trained.logits_fn)
  grid = [0.0, 0.05, 0.1, 0.15, 0.3]
  accs = A.robust_accuracy_curve(f, KEY, trained.x, trained.y,
                                 lambda e: A.pgd(e, steps=10, select="first_success"), grid,
                                 batch_size=64)
  assert len(accs) == len(grid)
  assert accs[0] == pytest.approx(trained.clean_accuracy)
  assert all(b <= a for a, b in zip(accs, accs[1:]))
  assert accs[-1] <= 0.02
  g, calls2 = counting(trained.logits_fn)
  A.robust_accuracy_curve(g, KEY, trained.x, trained.y,
                          lambda e: A.pgd(e, steps=10, select="first_success"), [0.1],
                          batch_size=64)
  assert len(calls) == len(calls2)


def test_sanity_checks_pass_on_a_healthy_model(trained):
  warnings, values = A.sanity_checks(trained.logits_fn, KEY, trained.x, trained.y, eps=EPS,
                                     steps=10, square_steps=100, batch_size=64)
  assert warnings == [], warnings
  assert values["grad_zero_fraction"] == 0.0
  assert values["robust_accuracy/pgd"] <= values["robust_accuracy/fgsm"] + 0.02
  assert values["robust_accuracy/large_eps"] <= 0.1


def test_sanity_checks_flag_broken_models(trained):
  f = trained.logits_fn
  probs = lambda x: jax.nn.softmax(f(x))  # noqa: E731
  x, y = trained.x[:64], trained.y[:64]
  w, v = A.sanity_checks(probs, KEY, x, y, eps=EPS, steps=5, square_steps=50, batch_size=64)
  assert v["outputs_look_like_probabilities"] == 1.0
  assert any("probabilities" in s for s in w)

  masked = lambda x: f(jnp.round(x * 4) / 4)  # noqa: E731  zero gradients everywhere
  w, v = A.sanity_checks(masked, KEY, x, y, eps=EPS, steps=5, square_steps=200,
                         batch_size=64)
  assert v["grad_zero_fraction"] == 1.0
  assert any("zero" in s for s in w)
  assert any("Square" in s or "eps=" in s for s in w)

  def noisy(x):
    noise = jax.pure_callback(lambda: np.random.normal(size=(x.shape[0], 5)).astype(np.float32),
                              jax.ShapeDtypeStruct((x.shape[0], 5), jnp.float32))
    return f(x) + noise
  w, v = A.sanity_checks(noisy, KEY, trained.x[:32], trained.y[:32], eps=EPS, steps=2,
                         square_steps=10, batch_size=32)
  assert v["logits_max_abs_diff"] > 0
  assert any("not deterministic" in s for s in w)


def test_sanity_checks_never_raise(trained):
  w, v = A.sanity_checks(trained.logits_fn, KEY, trained.x, trained.y, eps=-1.0)
  assert any("could not run" in s for s in w)
  assert isinstance(v, dict)
