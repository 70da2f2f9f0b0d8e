"""Training the whole remover on SCENES: classifiers, in-painter, mask generator, evaluation.

Checkpoints (orbax, resumable) land in <workdir>/checkpoints/<part> and training logs in
<workdir>/logs/<part>/ (metrics.jsonl + TensorBoard; one per part, because each part has
its own step counter and a resumed part truncates its log), for the parts
classifier_mask, classifier_eval, inpainter and mask_generator.
"""
from __future__ import annotations

import contextlib
import os
import time

import jax
import ml_collections
import numpy as np

from rsec import config as cfg_lib
from rsec.context import augment, inpaint, maskgen, multilabel, remover_eval, sensitivity
from rsec.data import scene_rules, scenes
from rsec.training.checkpoint import Checkpointer, read_run_config, restore_latest
from rsec.training.loop import EpochSampler, run_loop
from rsec.training.metrics import MetricWriter


def validate_config(c: ml_collections.ConfigDict) -> None:
  cfg_lib.check(c, "seed", type_=int, low=0)
  cfg_lib.check(c, "data.size", type_=int, choices=(32, 64, 128))
  for k in ("data.train_size", "data.test_size"):
    cfg_lib.check(c, k, type_=int, low=64)
  for part in ("classifier_mask", "classifier_eval", "inpainter", "mask_generator"):
    cfg_lib.check(c, f"{part}.steps", type_=int, low=0)
    cfg_lib.check(c, f"{part}.batch_size", type_=int, low=1)
    cfg_lib.check(c, f"{part}.lr", type_=float, low=0.0, low_exclusive=True)
  for part in ("classifier_mask", "classifier_eval"):
    cfg_lib.check(c, f"{part}.data", type_=str, choices=("train", "ood_train", "mixed"))
    cfg_lib.check(c, f"{part}.augment", type_=float, low=0.0, high=1.0)
  for k in ("inpainter.adv_weight", "mask_generator.adv_weight", "mask_generator.area_weight",
            "mask_generator.keep_weight", "mask_generator.preserve_weight",
            "mask_generator.exclusive_weight", "mask_generator.smooth_weight",
            "mask_generator.bound_weight", "mask_generator.prior_weight"):
    cfg_lib.check(c, k, type_=float, low=0.0)
  cfg_lib.check(c, "mask_generator.logit_bound", type_=float, low=0.0, low_exclusive=True)
  cfg_lib.check(c, "mask_generator.batch_size", type_=int, low=2)   # preservation pairs rows
  cfg_lib.check(c, "mask_generator.jitter", type_=int, low=0, high=8)
  cfg_lib.check(c, "dilation", type_=int, low=0, high=8)
  scene_rules.make_tables(scene_rules.rules_from_config(c.data.rules))


def load_data(c) -> tuple[dict, dict]:
  rules = scene_rules.rules_from_config(c.data.rules)
  train = scenes.scene_split("train", c.data.train_size, c.seed, rules, c.data.size)
  test = scenes.scene_split("test", c.data.test_size, c.seed, rules, c.data.size)
  return train, test


def _ckpt(workdir: str, name: str, c, **meta) -> Checkpointer:
  return Checkpointer(os.path.join(workdir, "checkpoints", name),
                      dict(part=name, size=c.data.size, **meta))


@contextlib.contextmanager
def _writer(workdir: str, part: str):
  w = MetricWriter(os.path.join(workdir, "logs", part))
  try:
    yield w
  finally:
    w.close()


def classifier_data(c, train: dict, source: str) -> dict:
  """Images, labels and layouts for a reference classifier: 'train' (in context),
  'ood_train' (as many out-of-context scenes) or 'mixed' (half of each)."""
  if source == "train":
    return train
  n = c.data.train_size if source == "ood_train" else c.data.train_size // 2
  ood = scenes.scene_split("ood_train", n, c.seed,
                           scene_rules.rules_from_config(c.data.rules), c.data.size)
  if source == "ood_train":
    return ood
  parts = lambda d: {k: d[k] for k in ("image", "labels", "layout")}  # noqa: E731
  return jax.tree.map(lambda a, b: np.concatenate([a[:c.data.train_size - n], b]),
                      parts(train), parts(ood))


def train_classifiers(c, train: dict, workdir: str) -> dict:
  """Two independently trained multi-label classifiers: one guides the mask generator,
  the other judges removals.

  Each trains on `classifier_data(c, train, part.data)`. A judge trained in context
  only keeps "seeing" a car on an empty road (quick preset: it still detects the target
  after 35% of *oracle* removals), so it would score context bias rather than removal;
  one trained on in- and out-of-context scenes ('mixed') after 3%.
  """
  out, made = {}, {}
  for i, part in enumerate(("classifier_mask", "classifier_eval")):
    pc = c[part]
    if pc.data not in made:         # both parts usually share their data: render it once
      made[pc.data] = classifier_data(c, train, pc.data)
    data = made[pc.data]
    online = {}
    if pc.augment:                  # removal augmentation: look at objects, not context
      ctx = sensitivity.context_table(scene_rules.rules_from_config(c.data.rules))
      online = dict(perturb=augment.make_context_augment(ctx, c.data.size, pc.augment),
                    extra=augment.flatten_layout(data["layout"]))
    with _writer(workdir, part) as writer:
      out[part] = multilabel.train_multilabel(
          data["image"], data["labels"], model=pc.model, seed=c.seed * 10 + 7 * i + 1,
          steps=pc.steps, batch_size=pc.batch_size, lr=pc.lr,
          checkpointer=_ckpt(workdir, part, c, model=pc.model), writer=writer,
          progress=c.progress, desc=part, **online)
  return out


def train_inpainter(c, train: dict, workdir: str):
  pc = c.inpainter
  state = inpaint.create_inpainter_state(jax.random.key(c.seed + 100), c.data.size,
                                         tuple(pc.channels), tuple(pc.d_channels), pc.lr, pc.d_lr,
                                         pc.coarse_iters)
  step = inpaint.make_inpaint_step(c.data.size, adv_weight=pc.adv_weight,
                                   valid_weight=pc.valid_weight,
                                   object_fraction=pc.object_fraction, dilation=c.dilation,
                                   stuff_only=pc.stuff_only)
  data = {k: train[k] for k in ("image", "masks", "shown")}
  return _train_gan(c, pc, "inpainter", step, state, data, workdir, c.seed + 101)


def train_mask_generator(c, train: dict, inpainter, classifier, workdir: str):
  pc = c.mask_generator
  state = maskgen.create_maskgen_state(jax.random.key(c.seed + 200), c.data.size,
                                       scene_rules.NUM_THINGS, tuple(pc.channels),
                                       tuple(pc.d_channels), pc.lr, pc.d_lr)
  g_params, g_apply = inpainter.g_params, inpainter.g_apply
  inpaint_fn = lambda x, m: g_apply({"params": g_params}, x, m)
  step = maskgen.make_maskgen_step(
      inpaint_fn, classifier.logits_fn(), area_weight=pc.area_weight,
      keep_weight=pc.keep_weight, preserve_weight=pc.preserve_weight,
      exclusive_weight=pc.exclusive_weight, adv_weight=pc.adv_weight,
      smooth_weight=pc.smooth_weight, logit_bound=pc.logit_bound, bound_weight=pc.bound_weight,
      jitter=pc.jitter, prior_weight=pc.prior_weight)
  data = {"image": train["image"], "targets": train["labels"]}
  if pc.prior_weight > 0:
    data.update(maskgen.unpaired_masks(train["masks"], train["layout"]["cls"], train["shown"],
                                       c.seed + 203))
  return _train_gan(c, pc, "mask_generator", step, state, data, workdir, c.seed + 201)


def _train_gan(c, pc, part: str, step, state, data: dict, workdir: str, key_seed: int):
  """The one training loop on a GAN pair: epochs of `data`, seeded by `key_seed`."""
  ckpt = _ckpt(workdir, part, c, channels=list(pc.channels))
  with _writer(workdir, part) as writer, contextlib.closing(ckpt):
    return run_loop(state, step, data, EpochSampler(len(data["image"]), pc.batch_size,
                                                    key_seed + 1),
                    key=jax.random.key(key_seed), num_steps=pc.steps,
                    steps_per_call=pc.steps_per_call, checkpointer=ckpt,
                    checkpoint_every=pc.checkpoint_every, writer=writer, log_every=50,
                    prefix=part, progress=c.progress, desc=part)


def train_remover(c, workdir: str) -> tuple[dict, dict, dict]:
  """Trains everything (resuming from checkpoints) and evaluates on the in-context test.

  Returns (results, models, examples).
  """
  validate_config(c)
  times = {}
  t0 = time.perf_counter()
  train, test = load_data(c)
  times["data_seconds"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  clf = train_classifiers(c, train, workdir)
  times["classifier_seconds"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  inp, _ = train_inpainter(c, train, workdir)
  times["inpainter_seconds"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  mg = None
  if c.mask_generator.steps > 0:
    mg, _ = train_mask_generator(c, train, inp, clf["classifier_mask"], workdir)
  times["mask_generator_seconds"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  score = multilabel.scores_fn(clf["classifier_eval"])
  res, examples = remover_eval.evaluate_remover(test, inp, mg, score, seed=c.seed,
                                                dilation=c.dilation)
  test_scores = multilabel.predict(score, test["image"])
  res["classifier_eval_test_accuracy"] = float(((test_scores > 0.5) == (test["labels"] > 0))
                                               .mean())
  times["eval_seconds"] = time.perf_counter() - t0
  res.update(times)
  res["devices"] = jax.device_count()
  return res, dict(inpainter=inp, mask_generator=mg, **clf), examples


def save_examples(examples: dict, path: str) -> None:
  """PNG: rows of original / GT-mask removal / generated-mask removal / oracle."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  cols = [k for k in ("image", "gt", "generated", "oracle") if k in examples]
  n = len(examples["image"])
  fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.6 * n), squeeze=False)
  names = {"image": "original", "gt": "GT mask", "generated": "generated", "oracle": "oracle"}
  for i in range(n):
    for j, k in enumerate(cols):
      axes[i, j].imshow(np.clip(examples[k][i], 0, 1), interpolation="nearest")
      axes[i, j].axis("off")
      if i == 0:
        axes[i, j].set_title(names[k], fontsize=8)
    axes[i, 0].set_ylabel(scene_rules.THINGS[int(examples["target"][i])], fontsize=7)
    axes[i, 0].text(1, 4, scene_rules.THINGS[int(examples["target"][i])], fontsize=6,
                    color="white", backgroundcolor="black")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


TRAIN_COMMAND = ("python -m experiments.train_remover --config=configs/train_remover.py:quick "
                 "--workdir={}")


def load_remover(workdir: str) -> tuple[dict, ml_collections.ConfigDict]:
  """The in-painter and mask generator that `experiments.train_remover` left in `workdir`:
  ({'inpainter': GanState, 'mask_generator': GanState | None}, its config).

  ValueError naming the command that makes them when they are missing.
  """
  command = TRAIN_COMMAND.format(workdir or "DIR")
  c = read_run_config(workdir, "remover", command)
  parts = {
      "inpainter": lambda meta: inpaint.create_inpainter_state(
          jax.random.key(0), c.data.size, tuple(c.inpainter.channels),
          tuple(c.inpainter.d_channels), c.inpainter.lr, c.inpainter.d_lr,
          c.inpainter.coarse_iters),
      "mask_generator": lambda meta: maskgen.create_maskgen_state(
          jax.random.key(0), c.data.size, scene_rules.NUM_THINGS,
          tuple(c.mask_generator.channels), tuple(c.mask_generator.d_channels),
          c.mask_generator.lr, c.mask_generator.d_lr)}
  out = {"mask_generator": None}     # a remover trained with mask_generator.steps = 0
  for name, build in parts.items():
    if name == "mask_generator" and c.mask_generator.steps == 0:
      continue
    out[name] = restore_latest(os.path.join(workdir, "checkpoints", name), build, name,
                               command)
  return out, c
