"""The served victim: a real uvicorn server on a free loopback port, in a subprocess."""
import io as pyio
import json
import os
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from rsec.studies import train_classifier
from rsec.stealing import client
from rsec.stealing.client import RemoteVictim
from rsec.stealing.victim import BudgetExceededError, victim_from_workdir
from tests.experiments.test_train_classifier import small_config

DEFENCE = {"name": "logit_noise", "sigma": 0.5}


@pytest.fixture(scope="module")
def classifier_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("victim_clf"))
  train_classifier.run(small_config(epochs=2), workdir)
  return workdir


def start_server(classifier_workdir, workdir, *extra):
  return client.start_server(workdir, [
      f"--config.classifier_workdir={classifier_workdir}", "--config.port=0",
      "--config.api_keys=alice=40,bob=1000", "--config.max_batch=8",
      "--config.max_body_bytes=150000", "--config.chunk=8",
      f"--config.defence.name={DEFENCE['name']}", f"--config.defence.sigma={DEFENCE['sigma']}",
      *extra])


stop = client.stop_server


@pytest.fixture(scope="module")
def served(classifier_workdir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("served"))
  proc, url = start_server(classifier_workdir, workdir, "--config.log_images=False")
  yield proc, url, workdir
  stop(proc)


def _images(n, seed=0):
  return np.random.default_rng(seed).random((n, 28, 28, 1), np.float32)


def post(url, body, key="bob"):
  headers = {"X-API-Key": key} if key else {}
  req = urllib.request.Request(url + "/query", data=body, method="POST", headers=headers)
  try:
    with urllib.request.urlopen(req, timeout=60) as r:
      return r.status, r.read()
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def npy(a):
  buf = pyio.BytesIO()
  np.save(buf, a)
  return buf.getvalue()


def test_served_outputs_equal_in_process_bit_for_bit(served, classifier_workdir):
  _, url, _ = served
  remote = RemoteVictim(url, "bob")
  local = victim_from_workdir(classifier_workdir, defence=DEFENCE, chunk=8)
  assert remote.num_classes == local.num_classes == 10
  x = _images(20)
  got = np.concatenate([remote.query(x[i:i + 8]) for i in range(0, 20, 8)])
  np.testing.assert_array_equal(got, local.query(x))
  assert got.dtype == np.float32


def test_bad_requests_get_4xx_json_and_cost_nothing(served):
  _, url, _ = served
  before = RemoteVictim(url, "alice").budget()["used"]
  x = _images(2)
  cases = [
      (post(url, b"not an npy file", "alice"), 400, "npy"),
      (post(url, npy(x[:, :20]), "alice"), 422, "shape"),
      (post(url, npy((x * 255).astype(np.uint8)), "alice"), 422, "floating"),
      (post(url, npy(x * 3), "alice"), 422, r"\[0, 1\]"),
      (post(url, npy(np.where(x > .5, np.nan, x).astype(np.float32)), "alice"), 422, "non-finite"),
      (post(url, npy(_images(9)), "alice"), 413, "batch of 9"),
      (post(url, npy(_images(60)), "alice"), 413, "over the limit"),
      (post(url, npy(x), None), 401, "missing API key"),
      (post(url, npy(x), "mallory"), 401, "unknown API key"),
  ]
  import re
  for (status, body), want, pattern in cases:
    assert status == want, body
    assert re.search(pattern, body["error"]), body
  assert RemoteVictim(url, "alice").budget()["used"] == before
  assert json.loads(urllib.request.urlopen(url + "/health").read())["status"] == "ok"


def test_log_images_false_is_false(served):
  # The reference code parses the string "False" as true; config overrides are typed here.
  _, url, workdir = served
  RemoteVictim(url, "bob").query(_images(1))
  assert json.load(open(os.path.join(workdir, "config.json")))["log_images"] is False
  assert not os.path.exists(os.path.join(workdir, "queries"))


def test_budget_is_enforced_concurrently_and_survives_a_restart(classifier_workdir, tmp_path):
  workdir = str(tmp_path / "served_budget")
  proc, url = start_server(classifier_workdir, workdir, "--config.log_images=True")
  try:
    alice = RemoteVictim(url, "alice")               # 40 images
    answered, refused = [], []

    def caller():
      for _ in range(3):
        try:
          answered.append(len(alice.query(_images(3))))
        except BudgetExceededError:
          refused.append(1)
    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    assert sum(answered) == 39 and len(refused) == 5   # 13 batches of 3 fit in 40
    assert alice.budget() == {"used": 39, "limit": 40, "left": 1}
    with pytest.raises(BudgetExceededError, match="1 of 40 left"):
      alice.query(_images(2))
  finally:
    stop(proc)
  saved = json.load(open(os.path.join(workdir, "budgets.json")))
  assert saved["used"] == {"alice": 39, "bob": 0}
  assert sum(json.loads(line)["n"] for line in open(os.path.join(workdir, "queries.jsonl"))) == 39
  logged = [np.load(os.path.join(workdir, "queries", f)) for f in os.listdir(os.path.join(workdir, "queries"))]
  assert sum(len(a) for a in logged) == 39 and logged[0].shape[1:] == (28, 28, 1)
  proc, url = start_server(classifier_workdir, workdir, "--config.log_images=True")
  try:
    alice = RemoteVictim(url, "alice")
    assert alice.budget()["used"] == 39              # neither forgotten nor double-counted
    assert alice.query(_images(1)).shape == (1, 10)
    with pytest.raises(BudgetExceededError):
      alice.query(_images(1))
  finally:
    stop(proc)


def test_a_knockoff_attacker_runs_unchanged_against_the_served_victim(served,
                                                                       classifier_workdir):
  """The same random stream through the HTTP client and in process: same answers, and the
  client's remaining budget is what a too-large request is checked against."""
  from configs.train_classifier import data_config
  from rsec.stealing.query_sets import build_pool
  from rsec.stealing.strategies import collect_random
  _, url, _ = served
  pool = build_pool("noise", 40, 0, data_config(1, 1))
  remote = RemoteVictim(url, "bob")
  left = remote.budget()["left"]
  with pytest.raises(ValueError, match=f"answers only {left} more"):
    collect_random(remote, build_pool("noise", left + 1, 0, data_config(1, 1)), left + 1, 0)
  assert remote.budget()["left"] == left
  served_stream = collect_random(remote, pool, 24, seed=5, batch=8)
  local = collect_random(victim_from_workdir(classifier_workdir, defence=DEFENCE, chunk=8),
                         pool, 24, seed=5, batch=8)
  np.testing.assert_array_equal(served_stream.order, local.order)
  np.testing.assert_array_equal(served_stream.outputs, local.outputs)
  assert remote.budget()["left"] == left - 24
