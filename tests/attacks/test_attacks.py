"""Attack strength on a trained model: orderings that hold for any correct attack."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import rsec.attacks as A
from rsec.attacks import threat

EPS = 0.12   # where the trained MLP is partly robust (clean 1.0, PGD ~0.5)
TOL = 0.03   # slack for comparisons between different random searches
KEY = jax.random.key(7)


def robust_acc(trained, attack, key=KEY):
  x_adv = attack(trained.logits_fn, key, trained.x, trained.y)
  ok = (jnp.argmax(trained.logits_fn(x_adv), 1) == trained.y)
  clean = (jnp.argmax(trained.logits_fn(trained.x), 1) == trained.y)
  return float(jnp.mean(ok & clean))


def test_model_is_trained(trained):
  assert trained.clean_accuracy >= 0.95


def test_pgd_at_least_as_strong_as_fgsm(trained):
  fgsm = robust_acc(trained, A.fgsm(EPS))
  pgd = robust_acc(trained, A.pgd(EPS, steps=20, select="first_success"))
  assert pgd <= fgsm + TOL
  assert pgd < trained.clean_accuracy


def test_accuracy_non_increasing_in_eps_and_zero_when_large(trained):
  accs = [robust_acc(trained, A.pgd(e, steps=20, select="first_success"))
          for e in (0.0, 0.05, 0.1, 0.15, 0.3)]
  assert accs[0] == trained.clean_accuracy
  assert all(b <= a + 1e-9 for a, b in zip(accs, accs[1:])), accs
  assert accs[-1] <= 0.02


def test_apgd_at_least_as_strong_as_pgd_with_equal_budget(trained):
  pgd = robust_acc(trained, A.pgd(EPS, steps=20, select="first_success"))
  apgd = robust_acc(trained, A.apgd_ce(EPS, steps=20))
  apgd_dlr = robust_acc(trained, A.apgd_dlr(EPS, steps=20))
  assert apgd <= pgd + TOL
  assert apgd_dlr <= pgd + 2 * TOL


def test_apgd_targeted_and_l2(trained):
  t = robust_acc(trained, A.apgd_t(EPS, steps=20, n_target_classes=3))
  assert t < trained.clean_accuracy
  l2_pgd = robust_acc(trained, A.pgd(0.8, "l2", steps=20, select="first_success"))
  l2_apgd = robust_acc(trained, A.apgd_ce(0.8, "l2", steps=20))
  assert l2_pgd < trained.clean_accuracy
  assert l2_apgd <= l2_pgd + TOL


def test_square_reduces_accuracy_but_not_below_white_box(trained):
  sq = robust_acc(trained, A.square(EPS, steps=300))
  white = min(robust_acc(trained, A.pgd(EPS, steps=20, select="first_success")),
              robust_acc(trained, A.apgd_ce(EPS, steps=20)))
  assert sq <= trained.clean_accuracy - 0.1
  assert sq >= white - TOL
  sq2 = robust_acc(trained, A.square(1.2, "l2", steps=300))
  assert sq2 <= trained.clean_accuracy - 0.1
  assert sq2 >= robust_acc(trained, A.apgd_ce(1.2, "l2", steps=20)) - TOL


def test_l1_pgd_stays_in_l1_ball_and_breaks_points(trained):
  eps = 4.0
  x_adv = A.pgd(eps, "l1", steps=20, sparsity=0.9, select="first_success")(
      trained.logits_fn, KEY, trained.x, trained.y)
  assert float(threat.norm(x_adv - trained.x, "l1").max()) <= eps * (1 + 1e-5)
  assert float(jnp.mean(jnp.argmax(trained.logits_fn(x_adv), 1) == trained.y)) < 0.9


def test_paper_attack_success_rates(trained):
  x_adv, info = A.paper(EPS)(trained.logits_fn, KEY, trained.x, trained.y, return_info=True)
  assert info["attempt_success"].shape == (5, trained.x.shape[0])
  per_attempt = float(info["attempt_success"].mean())
  any_attempt = float(info["success"].mean())
  assert 0 < per_attempt <= any_attempt
  np.testing.assert_array_equal(
      info["success"], jnp.argmax(trained.logits_fn(x_adv), 1) != trained.y)


def test_cw_finds_small_l2_perturbations(trained):
  x_adv, info = A.cw_l2(c=10.0, steps=100, lr=0.05)(
      trained.logits_fn, KEY, trained.x, trained.y, return_info=True)
  broken = jnp.argmax(trained.logits_fn(x_adv), 1) != trained.y
  np.testing.assert_array_equal(broken, info["success"])
  assert float(broken.mean()) > 0.5
  d = threat.norm(x_adv - trained.x, "l2")
  # With an eps cap, every counted success lies inside the L2 ball.
  cap = float(jnp.median(d[broken]))
  x_cap, info_cap = A.cw_l2(c=10.0, steps=100, lr=0.05, eps=cap)(
      trained.logits_fn, KEY, trained.x, trained.y, return_info=True)
  d_cap = threat.norm(x_cap - trained.x, "l2")
  assert float(d_cap.max()) <= cap + 1e-5
  assert 0 < int(info_cap["success"].sum()) < int(info["success"].sum()) + 1


def _ok(trained, x_adv):
  return np.asarray(jnp.argmax(trained.logits_fn(x_adv), 1) == trained.y)


def test_cascade_under_jit_is_robust_exactly_where_every_member_is(trained):
  """Under a caller's jit the cascade runs member i on the whole batch with key
  fold_in(key, i): a point survives the cascade iff it survives every member run that
  way, so the cascade is never weaker than any member, point by point."""
  members = [A.fgsm(EPS), A.pgd(EPS, steps=10, select="first_success"),
             A.square(EPS, steps=100)]
  casc = A.cascade(members)
  f = trained.logits_fn

  @jax.jit
  def run(key, x, y):
    each = [m(f, jax.random.fold_in(key, i), x, y) for i, m in enumerate(members)]
    return casc(f, key, x, y), each

  x_casc, each = run(KEY, trained.x, trained.y)
  member_ok = np.stack([_ok(trained, xa) for xa in each])
  robust = _ok(trained, x_casc)
  np.testing.assert_array_equal(robust, _ok(trained, trained.x) & member_ok.all(0))
  assert 0 < robust.sum() < member_ok.sum(1).max()   # partly robust, stronger than some


def test_eager_cascade_of_deterministic_members_is_exact(trained):
  """Called eagerly the cascade hands each member only the points still robust, in a
  smaller batch. Members that draw no random numbers (zero init) give each point the
  same result in any batch, so the cascade is again robust exactly where every member
  is, and member i is credited exactly with the points it broke first."""
  members = [A.fgsm(EPS), A.pgd(EPS, steps=20, init="zero", select="first_success"),
             A.apgd_ce(EPS, steps=20, init="zero")]
  x_adv, info = A.cascade(members)(trained.logits_fn, KEY, trained.x, trained.y,
                                   return_info=True)
  clean = _ok(trained, trained.x)
  member_ok = np.stack([_ok(trained, m(trained.logits_fn, jax.random.fold_in(KEY, i),
                                       trained.x, trained.y))
                        for i, m in enumerate(members)])
  robust = _ok(trained, x_adv)
  np.testing.assert_array_equal(robust, clean & member_ok.all(0))
  np.testing.assert_array_equal(info["success"], ~robust)
  first = np.where(member_ok.all(0), -1, np.argmin(member_ok, axis=0))
  np.testing.assert_array_equal(info["broken_by"], np.where(clean, first, -2))
  assert len(set(first[clean].tolist()) - {-1}) >= 2   # more than one member contributed


def test_eager_cascade_with_random_members(trained):
  """With random starts a member's draws depend on its batch, and the compacted batches
  differ from the full one, so "never weaker than any member" holds only up to the
  randomness of the search (TOL). What holds exactly is the bookkeeping: every point
  credited to a member is misclassified, every robust point is returned unchanged."""
  members = [A.fgsm(EPS), A.pgd(EPS, steps=20, select="first_success"),
             A.square(EPS, steps=300)]
  x_adv, info = A.cascade(members)(trained.logits_fn, KEY, trained.x, trained.y,
                                   return_info=True)
  got = robust_acc(trained, lambda *a: x_adv)
  assert got <= min(robust_acc(trained, m, jax.random.fold_in(KEY, i))
                    for i, m in enumerate(members)) + TOL
  robust = _ok(trained, x_adv)
  clean = _ok(trained, trained.x)
  by = np.asarray(info["broken_by"])
  np.testing.assert_array_equal(info["success"], ~robust)
  np.testing.assert_array_equal(by == -2, ~clean)
  np.testing.assert_array_equal(by == -1, robust & clean)
  assert set(np.unique(by[by >= 0]).tolist()) <= {0, 1, 2}
  np.testing.assert_array_equal(np.asarray(x_adv)[robust], np.asarray(trained.x)[robust])
  assert float(threat.norm(x_adv - trained.x, "linf").max()) <= EPS * (1 + 1e-5)


def test_autoattack_quick_by_name(trained):
  aa = A.build_attack("autoattack", eps=EPS, version="quick")
  got = robust_acc(trained, aa)
  # Exact, not up to TOL: every test point is classified correctly, so the cascade hands
  # its first member, APGD-CE, the whole batch in order, as the standalone call gets it.
  assert trained.clean_accuracy == 1.0
  assert got <= robust_acc(trained, A.apgd_ce(EPS, steps=20), jax.random.fold_in(KEY, 0))


def test_cascade_accepts_plain_callables(trained):
  def noise(logits_fn, key, x, y):
    del logits_fn, y
    return jnp.clip(x + EPS * jax.random.rademacher(key, x.shape, x.dtype), 0, 1)

  casc = A.cascade([noise, ("fgsm", {"eps": EPS})])
  x_adv, info = casc(trained.logits_fn, KEY, trained.x, trained.y, return_info=True)
  assert float(jnp.abs(x_adv - trained.x).max()) <= EPS + 1e-6
  assert set(np.unique(info["broken_by"]).tolist()) <= {-2, -1, 0, 1}
  np.testing.assert_array_equal(info["success"], jnp.argmax(trained.logits_fn(x_adv), 1)
                                != trained.y)
