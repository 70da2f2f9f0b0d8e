"""experiments.reverse_engineering: bad configs refused before any training, and a tiny
end-to-end run that writes its report, resumes, and reuses its zoo from another workdir."""
import json
import os

import ml_collections
import pytest

from configs.reverse_engineering import get_config
from rsec.studies import reverse_engineering as study


def tiny_config() -> ml_collections.ConfigDict:
  c = get_config("quick")
  c.data.train_size, c.data.test_size = 1200, 200
  c.zoo.update(dict(models=24, ensemble_groups=3, stack_size=12, steps=8, queries=12,
                    min_accuracy=0.0))
  # Few values per attribute, so every split's test values have training models.
  c.zoo.attributes = ml_collections.ConfigDict(dict(
      act=("relu", "tanh"), ks=(3,), conv=(2, 3), fc=(2,), split=("abc", "a"), size=("all",),
      bs=(16, 32)))
  c.kennen.update(dict(n_queries=12, query_curve=(2, 12), outputs=("score", "label"),
                       splits=("R", "E-opt")))
  c.kennen.meta.update(dict(steps=40, hidden=(32,)))
  c.kennen.kennen_i.update(dict(steps=3, craft_models=8))
  c.kennen.kennen_io.update(dict(steps=3, batch_size=4))
  c.transfer.update(dict(black_boxes=2, images=8, sources=2, zoo_sources=3, steps=2))
  c.defences.utility_images = 40
  c.defences.grid = ml_collections.ConfigDict({"label": {}, "mad": {"eps": (0.5,)}})
  c.progress = False
  return c


BAD = {
    "unknown attribute": (lambda c: setattr(c.zoo, "attributes", ml_collections.ConfigDict(
        {"width": (4,)})), "unknown zoo attribute 'width'"),
    "unknown value": (lambda c: setattr(c.zoo, "attributes", ml_collections.ConfigDict(
        {"act": ("swish",)})), "'act' has no value"),
    "zero queries": (lambda c: setattr(c.kennen, "n_queries", 0), "n_queries"),
    "more queries than kept": (lambda c: setattr(c.kennen, "n_queries", 13), "zoo.queries"),
    "untrained output mode": (lambda c: setattr(c.defences, "output", "ranking"),
                              "no kennen-o metamodel is trained for it"),
    "unknown output mode": (lambda c: setattr(c.kennen, "outputs", ("score", "logits")),
                            "unknown output mode 'logits'"),
    "unknown split": (lambda c: setattr(c.kennen, "splits", ("R", "E-width")),
                      "unknown split 'E-width'"),
    "no R split": (lambda c: setattr(c.kennen, "splits", ("E-opt",)), "must include 'R'"),
    "too many ensembles": (lambda c: setattr(c.zoo, "ensemble_groups", 9), "ensemble_groups"),
    "another data set": (lambda c: setattr(c.data, "name", "mnist"), "data"),
    "unknown defence": (lambda c: setattr(c.defences, "grid", ml_collections.ConfigDict(
        {"dp_sgd": {}})), "unknown defence 'dp_sgd'"),
    "bad defence setting": (lambda c: setattr(c.defences.grid.mad, "eps", (-1.0,)), "eps"),
    "subsets under the batch": (lambda c: setattr(c.data, "train_size", 300),
                                "fewer than the batch size"),
    "query learning rate": (lambda c: setattr(c.kennen.kennen_io, "query_learning_rate", 0.0),
                            "query_learning_rate"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_configs_are_refused_before_anything_is_written(name, tmp_path):
  change, message = BAD[name]
  c = tiny_config()
  change(c)
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    study.run(c, str(workdir))
  assert not workdir.exists()


@pytest.mark.slow
def test_end_to_end_writes_its_report_resumes_and_reuses_the_zoo(tmp_path):
  workdir = tmp_path / "re"
  c = tiny_config()
  results = study.run(c, str(workdir))
  for f in ("report.md", "results.json", "queries.png", "transfer.png", "confusion.png",
            "config.json", "zoo/zoo_config.json"):
    assert (workdir / f).exists(), f
  z = results["zoo"]
  assert z["trained"] == 24 and z["kept_singles"] == 24 and z["size"] == 27
  methods = results["methods"]
  for key in ("kennen-o/score/R", "kennen-o/label/R", "kennen-o/score/E-opt",
              "kennen-i/label/R", "kennen-io/score/R"):
    assert 0 <= methods[key]["accuracy"] <= 1 and 0 <= methods[key]["chance"] <= 1, key
  assert methods["kennen-o/score/E-opt"]["scored"] == 11      # opt is not scored on E-opt
  assert set(results["transfer"]["success"]) == {"matched", "random", "zoo"}
  assert {(d["defence"], d["metamodel"]) for d in results["defences"]} == {
      (n, m) for n in ("label", "mad") for m in ("clean-trained", "retrained")}
  mad = [d for d in results["defences"] if d["defence"] == "mad"][0]
  assert mad["mean_l1"] == pytest.approx(0.5, abs=0.02)
  report = (workdir / "report.md").read_text()
  assert "Table 2" in report and "kennen-io score" in report
  stages = ("data", "zoo", "kennen_o", "kennen_i", "kennen_io", "transfer", "defences")
  assert tuple(results["seconds"]) == stages and min(results["seconds"].values()) > 0
  assert "Wall time per stage" in report and f"defences {results['seconds']['defences']:.0f} s" in report
  assert json.loads((workdir / "results.json").read_text())["zoo"] == json.loads(json.dumps(z))
  # A rerun trains no zoo stack again and gives the same numbers.
  zoo_files = lambda d: {os.path.join(r, p): os.path.getmtime(os.path.join(r, p))
                         for r, _, ps in os.walk(d / "zoo" / "cells") for p in ps}
  before = zoo_files(workdir)
  again = study.run(tiny_config(), str(workdir))
  assert zoo_files(workdir) == before
  assert again["methods"] == results["methods"]
  # Another workdir reuses the zoo; a zoo built with other settings is refused.
  other = tiny_config()
  other.zoo_workdir = str(workdir / "zoo")
  reused = study.run(other, str(tmp_path / "reuse"))
  assert reused["zoo"]["size"] == 27 and zoo_files(workdir) == before
  changed = tiny_config()
  changed.zoo_workdir = str(workdir / "zoo")
  changed.zoo.steps = 9
  with pytest.raises(ValueError, match="built with other settings"):
    study.run(changed, str(tmp_path / "changed"))
  assert not (tmp_path / "changed").exists()
