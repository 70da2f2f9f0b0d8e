"""Context sensitivity on SCENES (Shetty, Fritz, Schiele, CVPR 2019), classification.

  python -m experiments.context_sensitivity --config=configs/context_sensitivity.py:quick \
      --workdir=/tmp/rsec/context [--config.remover_workdir=DIR --config.sources='("oracle","gt")']

Trains a regular and a removal-augmented multi-label classifier, removes every object
and, separately, its context from every test image with each removal source, and reports
how the scores move. Sources: 'oracle' (exact re-rendering), 'gt' (ground-truth masks +
in-painter) and 'generated' (mask generator + in-painter); the last two need a remover
from `experiments.train_remover` in `remover_workdir`.

Presets: `quick` (32x32 scenes, about 6 minutes on a 2-core CPU), `paper` (64x64, longer).
"""
import ml_collections

from configs.train_remover import rules_config


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(size=64, train_size=50_000, test_size=2000,
                                          ood_size=2000, rules=rules_config()))
  # In every street scene road and sidewalk share one look (issue 6): only the cars on
  # the road, the people / signs on the sidewalk and the band order (road below) tell
  # them apart, so a segmenter has a reason to use the objects to label the stuff, as on
  # COCO. p = 0.5 gave half the road / sidewalk pixel flip rate (README).
  c.data.rules.ambiguous_stuff = (("road", "sidewalk", 1.0),)
  c.classifier = ml_collections.ConfigDict(dict(model="paper_classifier", steps=20_000,
                                                batch_size=64, lr=3e-3))
  c.segmentation = ml_collections.ConfigDict(dict(
      steps=20_000, batch_size=32, lr=3e-3, width=64,   # steps=0: classification only
      # > 0: also train a diagnostic 'stuff_swapped' segmenter whose training scenes take
      # another scene type's stuff with this probability per image (things stay put;
      # rsec.context.augment.make_stuff_swap): what removal cannot change.
      stuff_swap=0.5))
  c.augment = ml_collections.ConfigDict(dict(
      mode="online",           # 'online': training mode context_augment, fresh oracle
                               # removals in every step (oracle source only);
                               # 'offline': removed copies added to the data once
      fraction=0.5,            # offline: share of training images that get one removal
                               # added; online: probability of a removal per image
      source="oracle"))        # removal source of the augmentation
  c.sources = ("oracle",)      # removal sources of the test framework
  c.remover_workdir = ""       # train_remover workdir ('gt' / 'generated' sources)
  c.context_classes = ()       # classes whose context is removed; () = every class with a rule
  c.dilation = 2
  c.eval_batch_size = 256
  c.progress = True
  if preset == "quick":
    c.data.size, c.data.train_size, c.data.test_size, c.data.ood_size = 32, 6000, 512, 512
    c.classifier.steps = 3000
    c.segmentation.steps, c.segmentation.width = 1500, 32
    c.dilation = 1
  elif preset == "paper":
    pass
  else:
    raise ValueError(f"unknown preset {preset!r}; expected 'quick' or 'paper'")
  return c
