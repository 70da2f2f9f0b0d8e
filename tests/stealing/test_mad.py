"""MAD in closed form against the per-query autograd definition, and its variants."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.stealing import DefenceContext, defend, make_defence
from rsec.stealing.defences import line_search
from rsec.stealing.mad import angular_objective, argmax_candidates, autograd_objectives
from rsec.stealing.outputs import TIE_TOL, top1_share
from tests.stealing.conftest import TinyMLP, aux_model, random_posteriors


def _closed_and_reference(aux, last, x, y, cands):
  p = jax.nn.softmax(aux.apply_fn(aux.variables, x, train=False))
  yt = line_search(y[:, None], cands, 0.7)
  closed = angular_objective(yt, y[:, None], p[:, None])
  ref = autograd_objectives(aux.apply_fn, aux.variables, last, x, y, yt)
  return np.asarray(closed), np.asarray(ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_matches_jacobians_on_random_models(seed):
  k, shape = 6, (4, 4, 1)
  aux = aux_model(TinyMLP(k, hidden=9), seed, shape)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.random((8,) + shape), jnp.float32)
  y = jnp.asarray(random_posteriors(rng, 8, k, 2.0))
  cands = jnp.concatenate([jnp.broadcast_to(jnp.eye(k), (8, k, k)),
                           jax.vmap(argmax_candidates)(y)], axis=1)
  closed, ref = _closed_and_reference(aux, "out", x, y, cands)
  np.testing.assert_allclose(closed, ref, atol=1e-5)


def test_closed_form_matches_jacobians_on_the_paper_cnn(paper_cnn, images):
  aux, _ = paper_cnn
  y = jnp.asarray(random_posteriors(np.random.default_rng(5), 6, 10, 3.0))
  cands = jnp.broadcast_to(jnp.eye(10), (6, 10, 10))
  closed, ref = _closed_and_reference(aux, "Dense_1", jnp.asarray(images[:6]), y, cands)
  np.testing.assert_allclose(closed, ref, atol=1e-5)


def test_mad_picks_the_best_vertex_after_the_line_search(paper_cnn, images):
  aux, logits_fn = paper_cnn
  ctx = DefenceContext(10, (28, 28, 1), "paper_classifier")
  x = images[:16]
  y = np.asarray(jax.nn.softmax(logits_fn(x) * 20))   # a sharper "victim" than the surrogate
  eps = 0.7
  out = np.asarray(defend(make_defence("mad", ctx, eps=eps, surrogate=aux), y, x))
  p = jax.nn.softmax(aux.apply_fn(aux.variables, jnp.asarray(x), train=False))
  yt = line_search(y[:, None], jnp.eye(10)[None], eps)
  ref = np.asarray(autograd_objectives(aux.apply_fn, aux.variables, "Dense_1", jnp.asarray(x),
                                       jnp.asarray(y), yt))
  got = np.asarray(angular_objective(jnp.asarray(out), y, p))
  np.testing.assert_allclose(got, ref.max(1), atol=1e-5)
  # The L1 move is exactly min(eps, distance to the chosen vertex): the budget is applied
  # as the budget (the reference code swaps eps and the distance on this path).
  dist_to_vertex = np.abs(np.eye(10)[(out - y).argmax(1)] - y).sum(1)
  np.testing.assert_allclose(np.abs(out - y).sum(1), np.minimum(eps, dist_to_vertex), atol=1e-5)


def _brute_force_argmax(y, p, eps):
  """Every subset holding argmax(y) whose answer keeps it as the strict top-1, in NumPy."""
  k, a = len(y), int(np.argmax(y))
  best, best_obj = None, -np.inf
  for bits in itertools.product((0, 1), repeat=k):
    if not bits[a]:
      continue
    cand = np.asarray(bits, np.float64) / sum(bits)
    alpha = min(1.0, eps / np.abs(cand - y).sum())
    yt = (1 - alpha) * y + alpha * cand
    if yt[a] - np.delete(yt, a).max() <= TIE_TOL:
      continue
    u, v = yt - p, y - p
    obj = 2 - 2 * u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    if obj > best_obj:
      best, best_obj = yt, obj
  return best, best_obj


def test_mad_argmax_is_the_exhaustive_optimum_and_keeps_the_argmax():
  k, shape = 6, (3, 3, 1)
  aux = aux_model(TinyMLP(k), 0, shape)
  rng = np.random.default_rng(7)
  x = rng.random((20,) + shape).astype(np.float32)
  y = random_posteriors(rng, 20, k, 2.0)
  p = np.asarray(jax.nn.softmax(aux.apply_fn(aux.variables, jnp.asarray(x), train=False)))
  out = np.asarray(defend(make_defence("mad_argmax", DefenceContext(k, shape), eps=1.0,
                                       surrogate=aux), y, x))
  np.testing.assert_array_equal(top1_share(out, y.argmax(1)), 1.0)
  for i in range(20):
    _, obj = _brute_force_argmax(y[i].astype(np.float64), p[i].astype(np.float64), 1.0)
    got = float(angular_objective(jnp.asarray(out[i]), jnp.asarray(y[i]), jnp.asarray(p[i])))
    assert got == pytest.approx(obj, abs=1e-5)


@pytest.mark.parametrize("k", [6, 14])   # exhaustive and greedy
def test_mad_argmax_never_keeps_the_argmax_by_a_tie(k):
  """At eps >= 1 the line search reaches small subsets' uniform distributions: a
  near-certain y moved onto {argmax, j} at eps 1 is an exact tie. MAD-argmax must not
  serve it (its argmax would be kept only by lowest-index tie-breaking)."""
  shape = (3, 3, 1)
  aux = aux_model(TinyMLP(k), 3, shape)
  rng = np.random.default_rng(10)
  x = rng.random((16,) + shape).astype(np.float32)
  y = random_posteriors(rng, 16, k, 12.0)        # near one-hot: ties are within reach
  for eps in (1.0, 1.5):
    out = np.asarray(defend(make_defence("mad_argmax", DefenceContext(k, shape), eps=eps,
                                         surrogate=aux), y, x))
    np.testing.assert_array_equal(top1_share(out, y.argmax(1)), 1.0)
    assert np.abs(out - y).sum(1).min() > 0.1    # it still perturbs every row


def test_mad_argmax_greedy_beyond_ten_classes():
  k, shape = 14, (3, 3, 1)
  aux = aux_model(TinyMLP(k), 1, shape)
  rng = np.random.default_rng(8)
  x = rng.random((10,) + shape).astype(np.float32)
  y = random_posteriors(rng, 10, k, 2.0)
  ctx = DefenceContext(k, shape)
  out = np.asarray(defend(make_defence("mad_argmax", ctx, eps=1.0, surrogate=aux), y, x))
  np.testing.assert_array_equal(out.argmax(1), y.argmax(1))
  p = jax.nn.softmax(aux.apply_fn(aux.variables, jnp.asarray(x), train=False))
  single = line_search(y, jax.nn.one_hot(y.argmax(1), k), 1.0)   # the greedy start
  assert np.all(np.asarray(angular_objective(jnp.asarray(out), y, p))
                >= np.asarray(angular_objective(single, y, p)) - 1e-6)
  assert np.abs(out - y).sum(1).max() <= 1.0 + 1e-5


def test_degenerate_surrogate_falls_back_to_the_identity_objective(paper_cnn, images):
  aux, logits_fn = paper_cnn
  ctx = DefenceContext(10, (28, 28, 1))
  x = images[:8]
  y = np.asarray(jax.nn.softmax(logits_fn(x)))            # the surrogate *is* the victim
  out = np.asarray(defend(make_defence("mad", ctx, eps=0.5, surrogate=aux), y, x))
  ident = np.asarray(defend(make_defence("mad_identity", ctx, eps=0.5, surrogate=aux), y, x))
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, ident, atol=1e-6)
  assert np.abs(out - y).sum(1).min() > 0.4               # it still perturbs


def test_ablations():
  k, shape = 5, (3, 3, 1)
  aux = aux_model(TinyMLP(k), 2, shape)
  ctx = DefenceContext(k, shape)
  rng = np.random.default_rng(9)
  x = rng.random((30,) + shape).astype(np.float32)
  y = random_posteriors(rng, 30, k, 2.0)
  amin = np.asarray(defend(make_defence("mad_argmin", ctx, eps=0.4, surrogate=aux), y, x))
  moved = amin - y
  np.testing.assert_array_equal(moved.argmax(1), y.argmin(1))   # mass goes to the least likely
  r1 = np.asarray(defend(make_defence("mad_random", ctx, eps=0.4, surrogate=aux), y, x,
                         key=jax.random.key(0)))
  r2 = np.asarray(defend(make_defence("mad_random", ctx, eps=0.4, surrogate=aux), y, x,
                         key=jax.random.key(1)))
  assert not np.allclose(r1, r2)
  assert len(set((r1 - y).argmax(1))) > 1                        # random targets vary
  zero = np.asarray(defend(make_defence("mad", ctx, eps=0.0, surrogate=aux), y, x))
  np.testing.assert_allclose(zero, y, atol=1e-6)
