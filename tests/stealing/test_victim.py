"""The black box shell: chunked core, per-row randomness, budgets, logs."""
import threading

import jax
import numpy as np
import pytest

from rsec import parallel
from rsec.stealing.victim import BudgetExceededError, QueryBudget, Victim


def _victim(logits_fn, **kw):
  kw.setdefault("model_name", "paper_classifier")
  return Victim(logits_fn, (28, 28, 1), **kw)


@pytest.mark.parametrize("defence,params", [("logit_noise", {"sigma": 1.0}),
                                            ("simplex_noise", {"eps": 0.5}),
                                            ("mad_random", {"eps": 0.5})])
@pytest.mark.parametrize("key_mode", ["content", "index"])
def test_answers_do_not_depend_on_batch_cuts_or_devices(paper_cnn, images, defence, params,
                                                        key_mode):
  _, f = paper_cnn
  whole = _victim(f, defence=defence, defence_params=params, key_mode=key_mode, chunk=16)
  a = whole.query(images[:50])
  cut = _victim(f, defence=defence, defence_params=params, key_mode=key_mode, chunk=16)
  b = np.concatenate([cut.query(images[:7]), cut.query(images[7:31]), cut.query(images[31:50])])
  one_device = _victim(f, defence=defence, defence_params=params, key_mode=key_mode, chunk=5,
                       mesh=parallel.data_mesh(jax.devices()[:1]))
  c = one_device.query(images[:50])
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, c)


def test_repeats_content_keys_repeat_index_keys_do_not(paper_cnn, images):
  _, f = paper_cnn
  x = np.concatenate([images[:4], images[:4]])
  content = _victim(f, defence="logit_noise", key_mode="content").query(x)
  np.testing.assert_array_equal(content[:4], content[4:])
  index = _victim(f, defence="logit_noise", key_mode="index").query(x)
  assert not np.allclose(index[:4], index[4:])
  other_key = _victim(f, defence="logit_noise", key=jax.random.key(9)).query(x)
  assert not np.allclose(other_key, content)


def test_budget_refuses_without_charging_and_logs(paper_cnn, images):
  _, f = paper_cnn
  v = _victim(f, budget=10, log_images=True)
  v.query(images[:6])
  with pytest.raises(BudgetExceededError, match="4 of 10 left"):
    v.query(images[:5])
  assert v.queries_used == 6
  v.query(images[6:10])
  assert v.queries_used == 10 and v.budget.left == 0
  assert [(r.n, r.first_index) for r in v.log] == [(6, 0), (4, 6)]
  np.testing.assert_array_equal(np.concatenate(v.logged_images), images[:10])


def test_concurrent_callers_never_pass_the_budget(paper_cnn, images):
  _, f = paper_cnn
  v = _victim(f, budget=25)
  v.query(images[:1])
  answered, refused = [], []

  def caller():
    for _ in range(4):
      try:
        answered.append(len(v.query(images[:3])))
      except BudgetExceededError:
        refused.append(1)
  threads = [threading.Thread(target=caller) for _ in range(6)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert v.queries_used == 1 + sum(answered) <= 25
  assert sum(answered) == 24 and len(refused) == 16


def test_a_failed_answer_is_not_charged():
  b = QueryBudget(10)
  with pytest.raises(RuntimeError):
    with b.charge(4):
      raise RuntimeError("answering failed")
  assert b.used == 0
  with b.charge(3) as start:
    assert start == 0
  assert b.used == 3


def test_outputs_and_defended_posterior(paper_cnn, images):
  _, f = paper_cnn
  v = _victim(f, defence="mad", defence_params={"eps": 0.5}, output_mode="topk",
              output_params={"k": 2})
  r = v.respond(images[:9])
  np.testing.assert_allclose(r["posterior"], np.asarray(jax.nn.softmax(f(images[:9]))), atol=1e-6)
  assert np.abs(r["defended"] - r["posterior"]).sum(1).max() <= 0.5 + 1e-5
  assert (np.count_nonzero(r["outputs"], axis=1) == 2).all()
  assert v.queries_used == 0      # respond is the defender's own, uncounted evaluation
