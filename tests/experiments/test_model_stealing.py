"""experiments.model_stealing: bad configs refused before anything is written, and a tiny
end-to-end run through the CLI that writes its report and resumes."""
import json
import os

import ml_collections
import numpy as np
import pytest

from configs.model_stealing import get_config
from rsec.studies import model_stealing


def tiny_config() -> ml_collections.ConfigDict:
  c = get_config("quick")
  c.classifier.data.train_size, c.classifier.data.test_size = 600, 200
  c.classifier.training.epochs = 1
  c.victim_budget, c.pool_size, c.fidelity_size = 320, 400, 64
  c.budgets = (160, 320)
  c.knockoff.update(steps=12, eval_every=6, batch_size=16, steps_per_call=3)
  c.adaptive.update(batch=160, online_steps=2)
  c.undefended.runs = ("natural/random/probs", "noise/random/probs", "natural/adaptive/probs")
  c.undefended.seed_runs = ("natural/random/probs",)
  c.undefended.extra_seeds = (1,)
  c.jbda.update(variants=("jbtopk",), seeds_per_class=4, round_steps=2)
  c.defences.grid = ml_collections.ConfigDict({"mad": {"eps": (0.5,)}, "label": {}})
  c.defences.oe_grid = ml_collections.ConfigDict({"none": {}, "mad": {"eps": (0.3,)}})
  c.defences.attackers = ("probs", "argmax")
  c.defences.repeat_defences = ("mad",)
  c.defences.repeats = 2
  c.transfer.update(num_examples=16, steps=2)
  c.progress = False
  return c


BAD = {
    "unknown query set": (lambda c: setattr(c.undefended, "runs", ("imagenet/random/probs",)),
                          "unknown query set 'imagenet'"),
    "unknown strategy": (lambda c: setattr(c.undefended, "runs", ("natural/greedy/probs",)),
                         "unknown strategy 'greedy'"),
    "ranking labels": (lambda c: setattr(c.undefended, "runs", ("natural/random/ranking",)),
                       "no class scores"),
    "unknown reward": (lambda c: setattr(c.adaptive, "reward", "entropy"), "adaptive.reward"),
    "budget over the victim's": (lambda c: setattr(c, "victim_budget", 200),
                                 "larger than the victim's budget"),
    "budget over the pool": (lambda c: setattr(c, "pool_size", 300),
                             "larger than the query pool"),
    "empty JBDA seed set": (lambda c: setattr(c.jbda, "seeds_per_class", 0),
                            "non-empty seed set"),
    "unknown architecture": (lambda c: setattr(c.knockoff, "arch", "vgg99"), "vgg99"),
    "unknown defence": (lambda c: c.defences.update(
        grid=ml_collections.ConfigDict({"dp_sgd": {}}), repeat_defences=()),
        "unknown defence 'dp_sgd'"),
    "bad defence setting": (lambda c: setattr(c.defences.grid.mad, "eps", (-1.0,)),
                            "config.defences.grid.mad"),
    "misinformation on the plain victim": (lambda c: c.defences.update(
        grid=ml_collections.ConfigDict({"adaptive_misinformation": {}}), repeat_defences=()),
        "config.defences.oe_grid"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_configs_are_refused_before_anything_is_written(name, tmp_path):
  change, message = BAD[name]
  c = tiny_config()
  change(c)
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    model_stealing.run(c, str(workdir))
  assert not workdir.exists()


def test_cells_cover_the_grids():
  cells = model_stealing.make_cells(tiny_config())
  undefended = [c for c in cells if c["grid"] == "undefended"]
  defences = [c for c in cells if c["grid"] == "defences"]
  assert len(undefended) == 3 * 2 + 1 + 2           # runs x budgets, an extra seed, jbtopk
  assert len(defences) == 4 * 2 + 2   # points (2 + 2 on the OE victim) x attackers, repeats
  assert {c["budget"] for c in defences} == {320}
  assert {(c["repeats"], c["key_mode"]) for c in defences if c["repeats"] > 1} == {
      (2, "content"), (2, "index")}


@pytest.mark.slow
def test_end_to_end_writes_its_report_and_a_rerun_resumes(tmp_path):
  workdir = tmp_path / "ms"
  c = tiny_config()
  results = model_stealing.run(c, str(workdir))
  for f in ("report.md", "results.json", "budget.png", "defences.png", "fidelity.png",
            "config.json"):
    assert (workdir / f).exists(), f
  assert 0 <= results["victim_accuracy"] <= 1
  ko = results["knockoff"]
  assert set(ko) == {f"{r}/{b}" for r in c.undefended.runs for b in c.budgets}
  assert ko["natural/random/probs/320"]["seeds"] == 2
  assert set(results["jbda"]) == {"jbtopk/160", "jbtopk/320"}
  mad = results["defences"]["mad/eps=0.5"]
  for k in ("defender_accuracy", "accuracy_loss", "flip_rate", "mean_l1", "probs_accuracy",
            "argmax_accuracy", "repeat2_content_accuracy", "repeat2_index_accuracy"):
    assert k in mad, k
  assert mad["mean_l1"] == pytest.approx(0.5, abs=0.02)
  assert set(results["floors"]) == {"natural_ratio", "noise_ratio", "mad_drop", "mad_drop_oe"}
  assert results["defences"]["none@oe"]["accuracy_loss"] == 0.0
  assert results["defences"]["mad@oe/eps=0.3"]["accuracy_loss_vs_plain"] == pytest.approx(
      results["victim_accuracy"] - results["defences"]["mad@oe/eps=0.3"]["defender_accuracy"])
  # Every attacker's stream was charged exactly its budget (repeats included).
  for f in os.listdir(workdir / "streams"):
    with np.load(workdir / "streams" / f) as s:
      assert int(s["queries"]) == 320, f
  saved = json.loads((workdir / "results.json").read_text())
  assert saved["knockoff"] == json.loads(json.dumps(results["knockoff"]))
  report = (workdir / "report.md").read_text()
  assert "## Floors" in report and "mad/eps=0.5" in report
  # A rerun skips every finished cell and rebuilds the same results.
  stamps = lambda: {os.path.join(r, p): os.path.getmtime(os.path.join(r, p))
                    for d in ("stacks", "streams") for r, _, ps in os.walk(workdir / d)
                    for p in ps}
  before = stamps()
  again = model_stealing.run(tiny_config(), str(workdir))
  assert again["knockoff"] == results["knockoff"]
  assert again["defences"] == results["defences"]
  assert stamps() == before
  # Another config in the same workdir is refused before anything is written.
  other = tiny_config()
  other.knockoff.steps = 13
  with pytest.raises(ValueError, match="another config"):
    model_stealing.run(other, str(workdir))


def _row(grid, labels, accuracy, defence="none", setting="", value=0, loss=0.0, budget=320):
  r = dict(grid=grid, attack="knockoff", query_set="natural", strategy="random",
           labels=labels, budget=budget, seed=0, defence=defence, setting=setting,
           value=value, repeats=1, key_mode="content", victim="plain", accuracy=accuracy,
           ratio=accuracy / .9, fidelity_test=accuracy, fidelity_query=accuracy,
           transfer_success=0.5)
  if grid == "defences":
    r.update(defender_accuracy=.9 - loss, defender_accuracy_loss=loss,
             defender_accuracy_loss_vs_plain=loss, defender_flip_rate=loss,
             defender_mean_l1=value)
  return r


def test_the_mad_floor_takes_the_best_cheap_setting_of_either_mad_variant():
  from rsec.studies.model_stealing_report import summarise
  c = tiny_config()
  rows = [_row("undefended", "probs", .88, budget=b) for b in c.budgets] + [
      _row("defences", "probs", .83, "mad", "eps", 0.5, loss=.009),      # -5 pts, cheap
      _row("defences", "probs", .50, "mad", "eps", 1.0, loss=.30),       # -38, too costly
      _row("defences", "probs", .68, "mad_argmax", "eps", 1.5),          # -20, free
      _row("defences", "probs", .40, "reverse_sigmoid", "beta", 0.2)]    # not MAD
  r = summarise(c, rows, {"plain": .9}, 1.0)
  floor = r["floors"]["mad_drop"]
  assert floor["setting"] == "mad_argmax/eps=1.5" and floor["met"]
  assert floor["value"] == pytest.approx(.20)
  by = r["expectations"]["mad_drop_by_variant"]
  assert by["mad"]["setting"] == "mad/eps=0.5" and by["mad"]["drop"] == pytest.approx(.05)
  assert by["mad_argmax"]["drop"] == pytest.approx(.20)
  rows[-2] = _row("defences", "probs", .80, "mad_argmax", "eps", 1.5)  # -8: not enough
  assert not summarise(c, rows, {"plain": .9}, 1.0)["floors"]["mad_drop"]["met"]
