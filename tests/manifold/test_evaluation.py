"""The evaluation attack suite (regular, true- and learned-manifold) and the distance study."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec import parallel
from rsec.data import warp
from rsec.manifold import evaluation

LOW = np.array([-0.1, -0.1, -0.2, -0.2, 0.9, -0.3], np.float32)
HIGH = np.array([0.1, 0.1, 0.2, 0.2, 1.1, 0.3], np.float32)
D = 3  # latent size of the toy decoder


def _test_set(prototypes, n=24, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  font = np.asarray(jax.random.randint(k1, (n,), 0, prototypes.shape[0]), np.int32)
  label = np.arange(n, dtype=np.int32) % prototypes.shape[1]
  theta = np.asarray(jax.random.uniform(k2, (n, 6), minval=LOW, maxval=HIGH))
  image = np.asarray(warp.render_batch(prototypes, font, label, theta))[..., None]
  return {"image": image, "label": label, "font": font, "theta": theta}


def _templates(prototypes):
  """Nearest-mean-template linear classifier weights: {'w': [C, H*W]}."""
  w = prototypes.mean(0).reshape(prototypes.shape[1], -1)
  return {"w": jnp.asarray(w)}


def logits_fn(v, x):
  f = x.reshape(x.shape[0], -1)
  return (f @ v["w"].T - 0.5 * jnp.sum(v["w"] ** 2, 1))


def _manifolds(prototypes):
  size = prototypes.shape[-1]
  w = jax.random.normal(jax.random.key(3), (prototypes.shape[1], D, size * size))
  base = jnp.asarray(prototypes.mean(0).reshape(prototypes.shape[1], -1))
  decode = lambda z, c: jnp.clip(base[c] + 0.1 * jnp.einsum("bd,bdp->bp", z, w[c]), 0, 1
                                 ).reshape(-1, size, size, 1)
  encode = lambda x, c: jnp.zeros((x.shape[0], D))
  box = np.full((prototypes.shape[1], D), 2.5, np.float32)
  return evaluation.Manifolds(prototypes, LOW, HIGH, decode, encode, -box, box)


def _suite(prototypes, protocol=evaluation.Protocol(steps=8, attempts=2, lr=0.05), **kw):
  return evaluation.make_attack_suite(logits_fn, _manifolds(prototypes), protocol, **kw)


def test_every_attack_keeps_its_constraints_and_the_papers_rule(prototypes):
  test = _test_set(prototypes)
  v = _templates(prototypes)
  rates, ex = _suite(prototypes)(v, jax.random.key(0), test, batch_size=8)
  clean = np.argmax(logits_fn(v, test["image"]), -1) == test["label"]
  assert clean.mean() > 0.5  # the toy classifier works, so the rates mean something
  for kind in evaluation.KINDS:
    e, r = ex[kind], rates[kind]
    pred = np.argmax(logits_fn(v, e["x_adv"]), -1)
    assert np.all(np.isfinite(e["x_adv"])) and e["x_adv"].shape == test["image"].shape
    assert not np.any(e["success"] & (pred == test["label"])), kind  # success = broken
    assert not np.any(e["success"] & ~e["counted"]), kind
    assert 0 <= r["success_rate"] <= r["success_rate_any"] <= 1, (kind, r)
    assert r["counted"] == int(e["counted"].sum())
  np.testing.assert_array_equal(ex["regular"]["counted"], clean)
  d = ex["regular"]["x_adv"] - test["image"]
  assert np.abs(d).max() <= 0.3 + 1e-6 and ex["regular"]["x_adv"].min() >= 0
  theta = ex["true"]["theta"]
  assert np.abs(theta - test["theta"]).max() <= 0.3 + 1e-6
  assert np.all((theta >= LOW - 1e-6) & (theta <= HIGH + 1e-6))
  np.testing.assert_allclose(ex["true"]["x_adv"][..., 0], warp.render_batch(
      prototypes, test["font"], test["label"], theta), atol=1e-5)
  z = ex["learned"]["z"]
  np.testing.assert_allclose(ex["learned"]["x_adv"],
                             _manifolds(prototypes).decode(z, test["label"]), atol=1e-5)
  assert np.abs(z).max() <= 0.3 + 1e-6  # z0 = 0, eta = 0.3
  assert rates["regular"]["success_rate_any"] > 0.5  # pixel attacks break a linear model


def test_success_grows_with_eps_and_is_total_at_large_eps(prototypes):
  test, v = _test_set(prototypes), _templates(prototypes)
  rates = [_suite(prototypes, evaluation.Protocol(eps=e, steps=8, attempts=1, lr=e / 4),
                  kinds=("regular",))(v, jax.random.key(0), test, batch_size=8)[0]["regular"]
           for e in (0.01, 0.1, 1.0)]
  any_rates = [r["success_rate_any"] for r in rates]
  assert any_rates[0] <= any_rates[1] <= any_rates[2] and any_rates[2] == 1.0, any_rates


def test_compiles_once_for_many_models_and_repeats_exactly(prototypes):
  traces = []

  def counted(v, x):
    traces.append(1)
    return logits_fn(v, x)

  test = _test_set(prototypes, n=16)
  suite = evaluation.make_attack_suite(counted, _manifolds(prototypes),
                                       evaluation.Protocol(steps=3, attempts=1))
  v = _templates(prototypes)
  r1, e1 = suite(v, jax.random.key(1), test, batch_size=8)
  n_traces = len(traces)
  r2, e2 = suite(jax.tree.map(lambda a: a * 1.1, v), jax.random.key(1), test, batch_size=8)
  assert len(traces) == n_traces  # another model's weights: no retrace
  r3, e3 = suite(v, jax.random.key(1), test, batch_size=8)
  assert r1 == r3
  for kind in e1:
    np.testing.assert_array_equal(e1[kind]["x_adv"], e3[kind]["x_adv"])


def test_data_parallel_evaluation_matches_one_device(prototypes):
  test, v = _test_set(prototypes, n=20), _templates(prototypes)
  suite = _suite(prototypes, kinds=("regular", "true"))
  r1, e1 = suite(v, jax.random.key(2), test, batch_size=8)
  r4, e4 = suite(v, jax.random.key(2), test, batch_size=8, mesh=parallel.data_mesh())
  assert jax.device_count() == 4
  for kind in r1:
    np.testing.assert_array_equal(e1[kind]["success"], e4[kind]["success"])
    np.testing.assert_allclose(e1[kind]["x_adv"], e4[kind]["x_adv"], atol=1e-5)


def test_bad_arguments_are_named(prototypes):
  m = _manifolds(prototypes)
  with pytest.raises(ValueError, match="kinds"):
    evaluation.make_attack_suite(logits_fn, m, kinds=("pixels",))
  with pytest.raises(ValueError, match="kinds"):
    evaluation.make_attack_suite(logits_fn, m, kinds=())
  no_vae = evaluation.Manifolds(prototypes, LOW, HIGH)
  with pytest.raises(ValueError, match="decode"):
    evaluation.make_attack_suite(logits_fn, no_vae, kinds=("learned",))
  test = _test_set(prototypes)
  del test["theta"]
  with pytest.raises(ValueError, match="theta"):
    evaluation.make_attack_suite(logits_fn, no_vae, kinds=("true",))(
        _templates(prototypes), jax.random.key(0), test)


def test_distance_study_separates_regular_from_on_manifold(prototypes):
  test, v = _test_set(prototypes, n=16), _templates(prototypes)
  protocol = evaluation.Protocol(eps=0.3, eta=0.05, steps=8, attempts=1, lr=0.05)
  _, ex = _suite(prototypes, protocol, kinds=("regular", "true"))(
      v, jax.random.key(0), test, batch_size=8)
  study = evaluation.distance_study(jax.random.key(1), test, ex, _manifolds(prototypes),
                                    num=4, steps=10, restarts=2, all_fonts=2)
  for kind, d in study.items():
    n = min(4, int(ex[kind]["success"].sum()))
    for name in ("perturbation", "true", "ratio_true", "orthogonal", "learned"):
      assert d[name].shape == (n,) and np.all(np.isfinite(d[name])), (kind, name)
      assert np.all(d[name] >= 0)
    assert np.all(d["orthogonal"] <= 1 + 1e-5)
    all_fonts = d["true_all_fonts"]  # projected over every font for the first 2 only
    assert all_fonts.shape == (n,) and np.all(all_fonts[:2] >= 0)
    assert np.isnan(all_fonts[2:]).all()
  assert "regular" in study and "true" in study
  # A pixel perturbation is mostly orthogonal to the generator's tangent space (6 of 256
  # dimensions); a small step along the generator lies mostly in it.
  assert np.median(study["regular"]["orthogonal"]) > 0.5
  assert np.median(study["true"]["orthogonal"]) < np.median(study["regular"]["orthogonal"])


def test_map_batches_pads_and_cuts(prototypes):
  del prototypes
  x = np.arange(13 * 2, dtype=np.float32).reshape(13, 2)
  fn = jax.jit(lambda b: {"s": b["x"].sum(1), "x2": b["x"] * 2})
  out = parallel.map_batches(fn, {"x": x}, 8, parallel.data_mesh())
  np.testing.assert_array_equal(out["s"], x.sum(1))
  np.testing.assert_array_equal(out["x2"], 2 * x)
  with pytest.raises(ValueError, match="empty"):
    parallel.map_batches(fn, {"x": x[:0]}, 8)
  with pytest.raises(ValueError, match="divisible"):
    parallel.map_batches(fn, {"x": x}, 6, parallel.data_mesh())
