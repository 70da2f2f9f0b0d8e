"""Train the object remover (in-painter + weakly supervised mask generator) on SCENES.

  python -m experiments.train_remover --config=configs/train_remover.py:quick --workdir=DIR

Presets: `quick` (32x32 scenes, minutes on a 2-core CPU), `paper` (64x64, longer).
"""
import ml_collections


def rules_config() -> ml_collections.ConfigDict:
  """The context rules as primitives: `rsec.data.scene_rules.ContextRules`'s defaults (the
  one source), to override key by key (e.g. --config.data.rules.second_object_prob=0.3)."""
  import dataclasses
  from rsec.data.scene_rules import ContextRules
  return ml_collections.ConfigDict(dataclasses.asdict(ContextRules()))


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(size=64, train_size=50_000, test_size=2000,
                                          rules=rules_config()))
  c.dilation = 2          # pixels added around GT masks (and generated ones) before filling
  # data: 'train' (in context), 'ood_train' (out of context) or 'mixed' (half each).
  # A judge trained in context only keeps detecting a removed car from the road around it.
  # augment: probability of an online removal per image and step (training mode
  # context_augment): a guide that must find chairs without tables looks at the chair.
  clf = lambda model: ml_collections.ConfigDict(dict(model=model, steps=1000, batch_size=64,
                                                     lr=3e-3, data="mixed", augment=0.0))
  # The guide: after its objects are removed (GT masks), the 1,000-step guide without
  # augmentation still detected sign / dog / chair / table in 32 / 68 / 29 / 30% of test
  # images (context), so the masks for those classes went to the stuff around them; with
  # 3,000 steps and augmentation 0.5: 1 / 32 / 25 / 16% (BUILD_NOTES "Mask generator").
  c.classifier_mask = clf("paper_classifier")
  c.classifier_mask.steps, c.classifier_mask.augment = 5000, 0.5
  c.classifier_eval = clf("resnet")             # judges removals (independent)
  c.classifier_eval.steps = 5000
  c.inpainter = ml_collections.ConfigDict(dict(
      channels=(32, 64, 64), d_channels=(16, 32, 64), steps=20_000, batch_size=32, lr=1e-3,
      d_lr=1e-3, adv_weight=0.01, valid_weight=0.2, object_fraction=0.5,
      steps_per_call=20, checkpoint_every=500,
      stuff_only=True,        # hole L1 only where the target is stuff (not an object)
      coarse_iters=200,       # >0: predict a residual over a diffusion fill (coarse-to-fine)
  ))
  # Loss weights: rsec.context.maskgen.make_maskgen_step. Chosen by sweeps on the quick
  # base (BUILD_NOTES "Mask generator"): a larger area weight trades removal success for
  # tighter masks and fewer false removals; smoothness and a 1-pixel jitter of what the
  # guide sees stop masks from winning with thin strips along the image border.
  # prior_weight: the unpaired mask-shape prior (a class-conditional critic on real masks
  # from other images) brought the masks to their objects' size (area .068 -> .033, GT
  # .029; IoU .346 -> .482); keep and exclusive 2 pay for the false removals it added;
  # 4,000 steps instead of 3,000: IoU .504, false removal .063 (BUILD_NOTES "Mask generator").
  c.mask_generator = ml_collections.ConfigDict(dict(
      channels=(32, 64, 64), d_channels=(16, 32, 64), steps=10_000, batch_size=64, lr=1e-3,
      d_lr=1e-3, area_weight=16.0, keep_weight=2.0, preserve_weight=1.0,
      exclusive_weight=2.0, adv_weight=0.01, smooth_weight=1.0, logit_bound=3.0,
      bound_weight=1.0, prior_weight=1.0, steps_per_call=20, checkpoint_every=500,
      jitter=2))        # 1 pixel at 32x32 scaled to 64x64 (not measured)
  c.progress = False
  if preset == "quick":               # what the sweeps above were run on
    c.data.size, c.data.train_size, c.data.test_size = 32, 6000, 512
    c.dilation = 1
    c.classifier_mask.steps, c.classifier_eval.steps = 3000, 1000
    c.inpainter.channels, c.inpainter.steps = (16, 32, 32), 1000
    c.mask_generator.channels, c.mask_generator.steps = (16, 32, 32), 4000
    c.mask_generator.batch_size, c.mask_generator.area_weight = 32, 8.0
    c.mask_generator.jitter = 1
  elif preset == "paper":
    pass
  else:
    raise ValueError(f"unknown preset {preset!r}; expected 'quick' or 'paper'")
  return c
