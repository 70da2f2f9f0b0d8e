"""Every defence maps posteriors to valid distributions; baselines do what they say."""
import jax
import numpy as np
import pytest

from rsec.stealing import DEFENCES, DefenceContext, defend, make_defence, make_output_mode
from rsec.stealing.misinformation import misinformation_weight
from rsec.stealing.outputs import top1_share
from rsec.stealing.utility import defender_utility
from tests.stealing.conftest import TinyMLP, aux_model, hard_posteriors, random_posteriors

K = 5
SHAPE = (3, 3, 1)
CTX = DefenceContext(K, SHAPE, None)


def _defence(name, **kw):
  if name.startswith("mad"):
    kw.setdefault("surrogate", aux_model(TinyMLP(K), 3, SHAPE))
  if name == "adaptive_misinformation":
    kw.setdefault("misinformation", aux_model(TinyMLP(K), 4, SHAPE))
  return make_defence(name, CTX, **kw)


@pytest.mark.parametrize("name", DEFENCES.names())
def test_every_defence_returns_distributions(name):
  rng = np.random.default_rng(1)
  y = np.concatenate([random_posteriors(rng, 40, K, 3.0), hard_posteriors(K)])
  x = rng.random((len(y),) + SHAPE).astype(np.float32)
  out = np.asarray(defend(_defence(name), y, x, key=jax.random.key(2)))
  assert out.shape == y.shape
  assert np.all(np.isfinite(out)) and out.min() >= 0
  np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-6)


def test_reverse_sigmoid_is_finite_on_one_hot_and_moves_confident_rows():
  y = hard_posteriors(K)
  out = np.asarray(defend(make_defence("reverse_sigmoid", CTX, beta=0.7, gamma=0.2), y))
  assert np.all(np.isfinite(out))
  # confident rows lose mass on their top class; the uniform row stays uniform
  assert np.all(out[:K].max(1) < 0.999)
  np.testing.assert_allclose(out[-1], 1 / K, atol=1e-6)


def test_label_and_topk_are_row_wise_on_batches():
  rng = np.random.default_rng(2)
  y = random_posteriors(rng, 9, K, 2.0)
  lab = np.asarray(defend(make_defence("label", CTX), y))
  np.testing.assert_array_equal(lab, np.eye(K)[y.argmax(1)])
  top2 = np.asarray(defend(make_defence("topk", CTX, k=2), y))
  for row, src in zip(top2, y):
    keep = np.argsort(-src)[:2]
    np.testing.assert_allclose(row[keep], src[keep] / src[keep].sum(), rtol=1e-5)
    assert np.count_nonzero(row) == 2


def test_high_confidence_renormalises_and_keeps_argmax_when_nothing_passes():
  y = np.array([[0.5, 0.3, 0.1, 0.05, 0.05], [0.2, 0.2, 0.2, 0.2, 0.2]], np.float32)
  out = np.asarray(defend(make_defence("high_confidence", CTX, cutoff=0.25), y))
  np.testing.assert_allclose(out[0], [0.625, 0.375, 0, 0, 0], rtol=1e-6)
  np.testing.assert_array_equal(out[1], [1, 0, 0, 0, 0])


def test_rounding_defence_renormalises_and_output_mode_keeps_the_grid():
  y = np.array([[0.333, 0.333, 0.334, 0, 0], [0.96, 0.01, 0.01, 0.01, 0.01]], np.float32)
  out_mode = make_output_mode("rounded", K, decimals=1)
  grid = np.asarray(out_mode.fn(y))
  np.testing.assert_allclose(grid, [[.3, .3, .3, 0, 0], [1, 0, 0, 0, 0]], atol=1e-7)
  assert not np.allclose(grid[0].sum(), 1)                       # on the grid, not renormalised
  d = np.asarray(defend(make_defence("rounding", CTX, decimals=1), y))
  np.testing.assert_allclose(d[0], [1 / 3, 1 / 3, 1 / 3, 0, 0], atol=1e-6)
  tiny = np.full((1, 50), 0.02, np.float32)                      # rounds to all zeros at d=1
  np.testing.assert_array_equal(np.asarray(make_output_mode("rounded", 50, decimals=1).fn(tiny)),
                                np.eye(50)[[0]])


def test_output_modes():
  y = np.array([[0.1, 0.5, 0.1, 0.2, 0.1]], np.float32)
  np.testing.assert_array_equal(np.asarray(make_output_mode("ranking", K).fn(y)), [[1, 3, 0, 2, 4]])
  np.testing.assert_array_equal(np.asarray(make_output_mode("label", K).fn(y)), [[0, 1, 0, 0, 0]])
  np.testing.assert_allclose(np.asarray(make_output_mode("topk", K, k=2).fn(y)),
                             [[0, 5 / 7, 0, 2 / 7, 0]], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(make_output_mode("probs", K).fn(y)), y)


def test_noise_defences_stay_within_their_budget():
  rng = np.random.default_rng(3)
  y = random_posteriors(rng, 200, K, 2.0)
  for eps in (0.0, 0.1, 0.5):
    out = np.asarray(defend(make_defence("simplex_noise", CTX, eps=eps), y, key=jax.random.key(0)))
    assert np.abs(out - y).sum(1).max() <= eps + 1e-5
  a = np.asarray(defend(make_defence("logit_noise", CTX, sigma=0.0), y))
  np.testing.assert_allclose(a, y, atol=1e-6)


def test_misinformation_weight_switches_on_low_confidence():
  y = np.array([[0.9, 0.1], [0.3, 0.7], [0.51, 0.49]], np.float32)
  a = np.asarray(misinformation_weight(y, tau=0.6, nu=1000.0))[:, 0]
  assert a[0] < 1e-6 and a[1] < 1e-6 and a[2] > 1 - 1e-6


def test_defender_utility_counts_a_tied_top1_as_a_share_of_a_hit():
  """A defence cannot keep the top-1 by serving a tie that only lowest-index
  tie-breaking resolves: a top-1 tied with n - 1 others counts 1 / n of a hit."""
  y = np.array([[.9, .1, 0, 0], [.1, .8, .1, 0], [.7, .3, 0, 0]], np.float32)
  yt = np.array([[.5, .5, 0, 0],                  # tie of two, label among them
                 [.3, .3, .3, .1],                # tie of three
                 [.5, .5 - 3e-7, 0, 3e-7]], np.float32)  # within TIE_TOL: still a tie
  u = defender_utility(y, yt, np.array([0, 1, 0]))
  assert u["undefended_accuracy"] == 1.0
  assert u["accuracy"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
  assert u["flip_rate"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
  assert u["accuracy_loss"] == pytest.approx(1 - u["accuracy"])
  jax_share = top1_share(jax.numpy.asarray(yt), jax.numpy.array([1, 2, 1]))
  np.testing.assert_allclose(np.asarray(jax_share), top1_share(yt, np.array([1, 2, 1])))
  np.testing.assert_allclose(np.asarray(jax_share), [1 / 2, 1 / 3, 1 / 2], rtol=1e-6)
