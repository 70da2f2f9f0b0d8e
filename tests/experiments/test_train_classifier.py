"""The train_classifier entry point end to end, on a small FONTS configuration."""
import json
import os

import pytest

from configs.train_classifier import get_config
from rsec.studies import train_classifier
from tests.helpers import run_entry_point


def small_config(**training):
  c = get_config("quick")
  c.data.train_size, c.data.test_size = 800, 200
  c.data.cache_dir = ""
  c.training.epochs = 5
  c.training.steps_per_call = 4
  c.training.checkpoint_every = 8
  c.eval.batch_size = 100
  c.progress = False
  c.training.update(training)
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("train_classifier"))
  return workdir, train_classifier.run(small_config(), workdir)


def test_writes_everything(trained):
  workdir, results = trained
  for name in ("config.json", "metrics.jsonl", "results.json", "report.md", "samples.png",
               "curves.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  saved = json.load(open(os.path.join(workdir, "results.json")))
  for key in ("test_accuracy", "test_error", "train_size", "steps", "examples_per_second"):
    assert key in saved
  assert saved["train_size"] == 800 and saved["steps"] == 40
  assert saved["test_error"] == pytest.approx(1 - saved["test_accuracy"])
  assert saved["test_accuracy"] > 0.3  # 40 steps: well above chance (0.1), far from done
  assert "![samples](samples.png)" in open(os.path.join(workdir, "report.md")).read()


def test_rerun_resumes_and_gives_the_same_numbers(trained):
  workdir, results = trained
  again = train_classifier.run(small_config(), workdir)
  assert again["test_accuracy"] == results["test_accuracy"]
  assert again["train_seconds"] == 0.0  # nothing left to train


def test_workdir_of_another_model_is_refused(trained):
  workdir, _ = trained
  c = small_config()
  c.model.name = "mlp"
  before = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(ValueError, match="model='paper_classifier'.*model='mlp'"):
    train_classifier.run(c, workdir)
  assert open(os.path.join(workdir, "config.json")).read() == before  # nothing overwritten


@pytest.mark.parametrize("field,value,match", [
    ("model.name", "vgg", r"config.model.name must be one of"),
    ("training.batch_size", 30, r"config.training.batch_size=30 must be divisible by the "
                                r"number of devices \(4\)"),
    ("training.learning_rate", -1.0, r"config.training.learning_rate must be > 0"),
    ("data.difficulty", "extreme", r"config.data.difficulty must be one of"),
    ("training.mode", "magic", r"config.training.mode must be one of"),
])
def test_bad_config_values(tmp_path, field, value, match):
  c = small_config()
  section, key = field.split(".")
  c[section][key] = value
  with pytest.raises(ValueError, match=match):
    train_classifier.run(c, str(tmp_path))


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
  # In this process (tests/reliability/test_cli.py checks that it matches a real one).
  code, err = run_entry_point(
      "train_classifier", ["--config=configs/train_classifier.py:quick",
                           f"--workdir={tmp_path / 'out'}", "--config.model.name=vgg"], capsys)
  assert code == 2
  assert err.startswith("error: config.model.name must be one of")
  assert "Traceback" not in err
  assert not (tmp_path / "out").exists()


def test_saved_config_reloads_to_the_same_config(trained):
  from rsec import config as cfg_lib
  workdir, _ = trained
  reloaded = cfg_lib.from_json(open(os.path.join(workdir, "config.json")).read())
  assert reloaded.to_dict() == small_config().to_dict()
