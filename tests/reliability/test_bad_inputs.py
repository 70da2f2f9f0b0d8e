"""Walks the public API and the entry points with bad inputs.

Each case must raise a ValueError whose message names what is wrong (matched by regex),
before any XLA work: no cryptic trace, no hang, no silent result. The CLI cases must exit
with status 2 and a one-line `error:` message, without a traceback. (tests/attacks/
test_bad_inputs.py walks the attack API the same way.)
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.attack_eval import get_config as attack_eval_config
from configs.train_classifier import get_config as train_config
from rsec import config as cfg_lib
from rsec import io
from rsec.attacks import pgd
from rsec.data import fonts, fonts_dataset, warp
from rsec.data.tfds_fonts import load_image_classification
from rsec.models.classifiers import make_model
from rsec.training.checkpoint import Checkpointer
from rsec.train_classifier import validate_train_config
from rsec.training.loop import evaluate, fit
from rsec.training.state import make_optimizer
from rsec.studies import attack_eval
from tests.helpers import small_state as _state, squares_data as _data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTOS = np.random.default_rng(0).random((3, 4, 8, 8)).astype(np.float32)
THETA = np.tile(warp.IDENTITY_THETA, (2, 1))


def _with(config, **changes):
  """`config` with `a__b=v` set as config.a.b = v."""
  for dotted, value in changes.items():
    *path, last = dotted.split("__")
    node = config
    for p in path:
      node = node[p]
    node[last] = value
  return config


def _cfg(**changes):
  return _with(train_config("quick"), **changes)


def _from_json_with(**changes):
  """A config as reloaded from a hand-edited config.json (no ConfigDict type locking)."""
  import json
  d = json.loads(cfg_lib.to_json(train_config("quick")))
  for dotted, value in changes.items():
    *path, last = dotted.split("__")
    node = d
    for p in path:
      node = node[p]
    node[last] = value
  return cfg_lib.from_json(json.dumps(d))


def _not_a_font(tmp):
  p = os.path.join(tmp, "fake.ttf")
  open(p, "w").write("this is not a font")
  return p


def _mismatched_checkpoint(tmp):
  d = os.path.join(tmp, "ck")
  ck = Checkpointer(d, {"model": "paper_classifier"})
  ck.save(_state())
  ck.close()
  return Checkpointer(d, {"model": "mlp"})


CASES = [
    # FONTS prototypes
    ("font path missing", lambda t: fonts.load_prototypes(["/no/such/font.ttf"]), "does not exist|no such|not found"),
    ("file is not a font", lambda t: fonts.load_prototypes([_not_a_font(t)]), "font"),
    ("empty characters", lambda t: fonts.load_prototypes(None, characters=""), "characters"),
    ("duplicated characters", lambda t: fonts.load_prototypes(None, characters="ABA"), "characters|duplicate"),
    ("canvas too small", lambda t: fonts.load_prototypes(None, size=4), "size"),
    # The generator
    ("theta wrong shape", lambda t: warp.render_batch(PROTOS, np.zeros(2, np.int32), np.zeros(2, np.int32), np.zeros((2, 5), np.float32)), "thetas"),
    ("theta NaN", lambda t: warp.render_batch(PROTOS, np.zeros(2, np.int32), np.zeros(2, np.int32), np.full((2, 6), np.nan, np.float32)), "non-finite"),
    ("theta inf", lambda t: warp.render(PROTOS, 0, 0, np.array([0, 0, 0, 0, np.inf, 0], np.float32)), "non-finite"),
    ("theta integer dtype", lambda t: warp.render(PROTOS, 0, 0, np.zeros(6, np.int32)), "floating"),
    ("font index too large", lambda t: warp.render_batch(PROTOS, np.array([0, 3], np.int32), np.zeros(2, np.int32), THETA), "fonts"),
    ("char index negative", lambda t: warp.render_batch(PROTOS, np.zeros(2, np.int32), np.array([0, -1], np.int32), THETA), "chars"),
    ("font/theta batch mismatch", lambda t: warp.render_batch(PROTOS, np.zeros(3, np.int32), np.zeros(3, np.int32), THETA), "thetas"),
    ("prototypes wrong rank", lambda t: warp.render_batch(PROTOS[0], np.zeros(2, np.int32), np.zeros(2, np.int32), THETA), "prototype"),
    ("affine wrong shape", lambda t: warp.affine_warp(PROTOS[0], np.zeros((4, 3, 3), np.float32)), "affine"),
    ("affine NaN", lambda t: warp.affine_warp(PROTOS[0], np.full((4, 2, 3), np.nan, np.float32)), "non-finite"),
    ("images integer", lambda t: warp.affine_warp(np.zeros((2, 8, 8), np.int32), np.zeros((2, 2, 3), np.float32)), "floating"),
    # Sampling
    ("unknown difficulty", lambda t: fonts_dataset.sample_theta(jax.random.key(0), 4, "extreme"), "difficulty"),
    ("zero examples", lambda t: fonts_dataset.sample_theta(jax.random.key(0), 0), "n must be"),
    ("unknown split", lambda t: fonts_dataset.split_key(0, "holdout"), "split"),
    ("negative seed", lambda t: fonts_dataset.split_key(-1, "train"), "seed"),
    # TFDS
    ("TFDS set missing", lambda t: load_image_classification("mnist", t, "train"), "mnist"),
    # Models and optimizers
    ("unknown model", lambda t: make_model("vgg", 10), "model name"),
    ("one class", lambda t: make_model("mlp", 1), "num_classes"),
    ("unknown optimizer", lambda t: make_optimizer(0.1, 10, name="lbfgs"), "optimizer"),
    # Training loop
    ("batch not divisible by devices", lambda t: fit(_state(), _data(), key=jax.random.key(0), batch_size=30, num_steps=1, progress=False), "divisible by the number of devices"),
    ("data without labels", lambda t: fit(_state(), {"image": _data()["image"]}, key=jax.random.key(0), batch_size=40, num_steps=1, progress=False), "'label'"),
    ("virtual shards not a multiple of the devices", lambda t: fit(_state(), _data(), key=jax.random.key(0), batch_size=40, num_steps=1, virtual_shards=6, progress=False), r"training\.virtual_shards=6 must be a multiple of the number of devices"),
    ("virtual shards not dividing the batch", lambda t: fit(_state(), _data(), key=jax.random.key(0), batch_size=40, num_steps=1, virtual_shards=16, progress=False), r"training\.virtual_shards=16 must divide the global batch size \(40\)"),
    ("fewer examples than a batch", lambda t: fit(_state(), _data(20), key=jax.random.key(0), batch_size=40, num_steps=1, progress=False), "fewer than batch_size"),
    ("evaluate on nothing", lambda t: evaluate(_state(), _data()["image"][:0], _data()["label"][:0], batch_size=40), "empty"),
    ("restore with no checkpoint", lambda t: Checkpointer(os.path.join(t, "none"), {}).restore(_state()), "no checkpoint"),
    ("checkpoint of another model", lambda t: _mismatched_checkpoint(t).restore(_state("mlp")), "model='paper_classifier'"),
    # train_classifier configs
    ("negative seed (config)", lambda t: validate_train_config(_cfg(seed=-1)), r"config\.seed"),
    ("zero train size", lambda t: validate_train_config(_cfg(data__train_size=0)), r"config\.data\.train_size"),
    ("train size of wrong type (hand-edited config.json)", lambda t: validate_train_config(_from_json_with(data__train_size="many")), r"config\.data\.train_size must be of type int"),
    ("zero epochs", lambda t: validate_train_config(_cfg(training__epochs=0)), r"config\.training\.epochs"),
    ("NaN learning rate", lambda t: validate_train_config(_cfg(training__learning_rate=float("nan"))), r"config\.training\.learning_rate"),
    ("lr decay above 1", lambda t: validate_train_config(_cfg(training__lr_decay=2.0)), r"config\.training\.lr_decay"),
    ("b1 above 1", lambda t: validate_train_config(_cfg(training__b1=1.5)), r"config\.training\.b1"),
    ("negative weight decay", lambda t: validate_train_config(_cfg(training__weight_decay=-1.0)), r"config\.training\.weight_decay"),
    ("zero steps per call", lambda t: validate_train_config(_cfg(training__steps_per_call=0)), r"config\.training\.steps_per_call"),
    ("virtual shards not dividing the batch (config)", lambda t: validate_train_config(_cfg(training__virtual_shards=8)), r"config\.training\.virtual_shards=8 must divide the global batch size"),
    ("negative virtual shards (config)", lambda t: validate_train_config(_cfg(training__virtual_shards=-4)), r"config\.training\.virtual_shards=-4"),
    ("eval batch not divisible", lambda t: validate_train_config(_cfg(eval__batch_size=30)), r"config\.eval\.batch_size=30"),
    ("unknown mode", lambda t: validate_train_config(_cfg(training__mode="magic")), r"config\.training\.mode"),
    ("unknown training attack", lambda t: validate_train_config(_cfg(training__mode="adversarial", training__attack__name="deepfool")), r"config\.training\.attack\.name"),
    ("batch larger than data", lambda t: validate_train_config(_cfg(data__train_size=50)), r"batch_size=100 is larger"),
    ("TFDS set without data_dir", lambda t: validate_train_config(_cfg(data__name="mnist")), r"config\.data\.data_dir"),
    ("unknown difficulty (config)", lambda t: validate_train_config(_cfg(data__difficulty="extreme")), r"config\.data\.difficulty"),
    ("unknown preset", lambda t: train_config("huge"), "preset"),
    ("unknown override key", lambda t: cfg_lib.check_override_keys(["--config.training.bogus=1"], "configs/train_classifier.py:quick"), r"config\.training\.bogus"),
    ("missing config file", lambda t: cfg_lib.check_override_keys(["--config=configs/none.py"], "configs/train_classifier.py"), "does not exist"),
    ("unwritable workdir", lambda t: io.prepare_workdir("/proc/rsec_cannot_write_here"), "not a writable directory"),
    # attack_eval configs
    ("no classifier workdir", lambda t: attack_eval.validate(attack_eval_config("quick")), r"config\.classifier_workdir"),
    ("cascade names a missing attack", lambda t: attack_eval.validate(_eval_cfg(cascade=("pgd", "fab"))), "'fab'"),
    ("negative eps in the grid", lambda t: attack_eval.validate(_eval_cfg(eps=(0.0, -0.1))), r"config\.curve\.eps_grid"),
    ("classifier workdir without a classifier", lambda t: attack_eval.run(_eval_cfg(), t), "experiments.train_classifier"),
    # Attacks at the boundary (the full walk is in tests/attacks/test_bad_inputs.py)
    ("negative eps", lambda t: pgd(-0.1), "eps"),
    ("images outside [0, 1]", lambda t: pgd(0.1)(_logits, jax.random.key(0), jnp.full((4, 16, 16, 1), 2.0), jnp.zeros(4, jnp.int32)), "x must lie in"),
    ("labels out of range", lambda t: pgd(0.1)(_logits, jax.random.key(0), jnp.zeros((4, 16, 16, 1)), jnp.full(4, 10, jnp.int32)), "y must lie in"),
]


def _logits(x):
  return x.reshape(x.shape[0], -1)[:, :10]


def _eval_cfg(cascade=None, eps=None):
  c = attack_eval_config("quick")
  c.classifier_workdir = "/tmp/rsec-no-such-classifier"
  if cascade is not None:
    c.cascade = cascade
  if eps is not None:
    c.curve.eps_grid = eps
  return c


@pytest.mark.parametrize("name,fn,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_value_error(tmp_path, name, fn, match):
  with pytest.raises(ValueError, match=match):
    fn(str(tmp_path))


CLI_CASES = [
    ("train_classifier", ["--config.training.bogus=1"], "unknown config key 'config.training.bogus'"),
    ("train_classifier", ["--config=configs/train_classifier.py:huge"], "unknown preset 'huge'"),
    ("train_classifier", ["--config.training.batch_size=30"], "config.training.batch_size=30 must be divisible"),
    ("train_classifier", ["--config.data.font_paths=('/no/such/fonts',)"], "/no/such/fonts"),
    ("attack_eval", ["--config.classifier_workdir=/no/such/dir"], "experiments.train_classifier"),
    ("serve_victim", ["--config.classifier_workdir=/no/such/dir"], "experiments.train_classifier"),
    ("serve_victim", ["--config.defence.name=laplace"], "unknown defence 'laplace'"),
    ("defence_utility", ["--config.grid.mad.eps=-1"], "config.grid.mad: defence eps must be >= 0"),
    ("model_stealing", ["--config.victim_workdir=/no/such/dir"], "experiments.train_classifier"),
    ("model_stealing", ["--config.undefended.runs=('natural/random/ranking',)"], "no class scores"),
]


@pytest.mark.parametrize("entry,args,message", CLI_CASES, ids=[" ".join(c[1]) for c in CLI_CASES])
def test_cli_exits_cleanly_with_a_message(tmp_path, entry, args, message):
  proc = subprocess.run([sys.executable, "-m", f"experiments.{entry}",
                         f"--workdir={tmp_path / 'out'}", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr


# --- model stealing: the victim, its defences and output modes -------------------------
# Each case also checks that nothing compiled and that the victim's budget is untouched.

from configs.defence_utility import get_config as defence_utility_config  # noqa: E402
from configs.serve_victim import get_config as serve_victim_config  # noqa: E402
from experiments import serve_victim  # noqa: E402
from rsec.stealing import AuxModel, DefenceContext, defend, make_defence, make_output_mode  # noqa: E402
from rsec.stealing.misinformation import load_misinformation_model  # noqa: E402
from rsec.stealing.server import parse_api_keys  # noqa: E402
from rsec.stealing.utility import defender_utility  # noqa: E402
from rsec.stealing.utility_study import validate_config as validate_utility_config  # noqa: E402
from rsec.stealing.victim import Victim, victim_from_workdir  # noqa: E402

K = 4
CTX = DefenceContext(K, (8, 8, 1), "mlp")
P = np.full((3, K), 1 / K, np.float32)
_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _COMPILES.append(event) if "backend_compile" in event else None)


def _victim_logits(x):
  return x.reshape(x.shape[0], -1)[:, :K] * 3.0


_VICTIM = Victim(_victim_logits, (8, 8, 1), budget=5)


def _wrong_class_surrogate():
  model = make_model("mlp", K + 1)
  return AuxModel(model.apply, model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))


_WRONG_SURROGATE = _wrong_class_surrogate()  # built here: its init compiles, the check must not


def _not_misinformation(t):
  from tests.experiments.test_train_classifier import small_config
  from rsec.studies import train_classifier
  c = small_config(epochs=1)
  c.data.train_size, c.data.test_size, c.eval.batch_size = 200, 100, 100
  train_classifier.run(c, os.path.join(t, "clf"))
  return load_misinformation_model(os.path.join(t, "clf"))


STEALING_CASES = [
    ("posterior NaN", lambda t: defend(make_defence("none", CTX), np.full((2, K), np.nan, np.float32)), "non-finite"),
    ("posterior negative", lambda t: defend(make_defence("none", CTX), np.array([[1.2, -0.2, 0, 0]], np.float32)), "negative"),
    ("posterior rows not summing to one", lambda t: defend(make_defence("none", CTX), P * 2), "sum to 1"),
    ("posterior of the wrong rank", lambda t: defend(make_defence("none", CTX), P[0]), "shape"),
    ("MAD eps < 0", lambda t: make_defence("mad", CTX, eps=-0.1), "eps must be >= 0"),
    ("MAD eps NaN", lambda t: make_defence("mad_argmax", CTX, eps=float("nan")), "eps must be finite"),
    ("simplex noise eps inf", lambda t: make_defence("simplex_noise", CTX, eps=float("inf")), "eps must be finite"),
    ("top-k defence k = 0", lambda t: make_defence("topk", CTX, k=0), "k must be"),
    ("top-k defence k > K", lambda t: make_defence("topk", CTX, k=K + 1), r"k must lie in \[1, 4\]"),
    ("top-k output k > K", lambda t: make_output_mode("topk", K, k=9), r"k must lie in \[1, 4\]"),
    ("rounding decimals < 0", lambda t: make_defence("rounding", CTX, decimals=-1), "decimals"),
    ("rounded output decimals < 0", lambda t: make_output_mode("rounded", K, decimals=-2), "decimals"),
    ("unknown defence", lambda t: make_defence("laplace", CTX), "unknown defence 'laplace'"),
    ("setting the defence does not take", lambda t: make_defence("mad", CTX, k=3), r"takes \['eps', 'seed', 'surrogate'\]"),
    ("unknown output mode", lambda t: make_output_mode("logits", K), "unknown output mode 'logits'"),
    ("reverse sigmoid gamma 0", lambda t: make_defence("reverse_sigmoid", CTX, gamma=0.0), "gamma must be > 0"),
    ("surrogate of the wrong class count", lambda t: make_defence("mad", CTX, surrogate=_WRONG_SURROGATE), "must output 4 classes"),
    ("misinformation model missing", lambda t: make_defence("adaptive_misinformation", CTX), "misinformation_workdir"),
    ("misinformation model of another mode", _not_misinformation, "training.mode=misinformation"),
    ("unknown key mode", lambda t: Victim(_victim_logits, (8, 8, 1), key_mode="time"), "unknown key_mode"),
    ("victim input shape the model cannot take", lambda t: Victim(lambda x: x.reshape(x.shape[0], 3, -1)[:, 0], (7, 7, 1)), "logits_fn"),
    ("query of the wrong shape", lambda t: _VICTIM.query(np.zeros((2, 9, 8, 1), np.float32)), r"shape \(batch >= 1, 8, 8, 1\)"),
    ("one image without a batch axis", lambda t: _VICTIM.query(np.zeros((8, 8, 1), np.float32)), "add a batch axis"),
    ("query of integer pixels", lambda t: _VICTIM.query(np.zeros((2, 8, 8, 1), np.uint8)), "floating-point"),
    ("query outside [0, 1]", lambda t: _VICTIM.query(np.full((2, 8, 8, 1), 1.5, np.float32)), r"\[0, 1\]"),
    ("query with NaN", lambda t: _VICTIM.query(np.full((2, 8, 8, 1), np.nan, np.float32)), "non-finite"),
    ("query beyond the budget", lambda t: _VICTIM.query(np.zeros((6, 8, 8, 1), np.float32)), "budget exhausted: 6 images asked, 5 of 5 left"),
    ("missing classifier workdir", lambda t: victim_from_workdir(os.path.join(t, "none")), "experiments.train_classifier"),
    ("no classifier workdir", lambda t: victim_from_workdir(""), "experiments.train_classifier"),
    ("utility of mismatched posteriors", lambda t: defender_utility(P, P[:, :3] / P[:, :3].sum(1, keepdims=True), np.zeros(3, np.int64)), "shape"),
    ("API keys without budgets", lambda t: parse_api_keys("alice,bob=3"), "KEY=BUDGET"),
    ("serve_victim port out of range", lambda t: serve_victim.run(_with(serve_victim_config(), port=70000), t), r"config\.port"),
    ("serve_victim without a classifier", lambda t: serve_victim.run(serve_victim_config(), t), "experiments.train_classifier"),
    ("defence utility grid: unknown defence", lambda t: validate_utility_config(_with(defence_utility_config(), grid={"laplace": {}})), "unknown defence 'laplace'"),
    ("defence utility grid: unknown setting", lambda t: validate_utility_config(_with(defence_utility_config(), grid={"mad": {"k": (1,)}})), r"config\.grid\.mad\.k"),
    ("defence utility: outliers repeat the classes", lambda t: validate_utility_config(_with(defence_utility_config(), outlier_characters="AK")), r"config\.outlier_characters"),
]


@pytest.mark.parametrize("name,fn,match", STEALING_CASES, ids=[c[0] for c in STEALING_CASES])
def test_stealing_bad_input_raises_before_compiling_and_charges_nothing(tmp_path, name, fn, match):
  compiles, used = len(_COMPILES), _VICTIM.queries_used
  with pytest.raises(ValueError, match=match):
    fn(str(tmp_path))
  if "misinformation model of another mode" not in name:  # that case trains a classifier first
    assert len(_COMPILES) == compiles, f"{name}: compiled before refusing"
  assert _VICTIM.queries_used == used == 0
