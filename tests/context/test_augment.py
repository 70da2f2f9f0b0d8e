"""Online removal augmentation: exact oracle removals inside the train step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.context import augment, multilabel
from rsec.context.sensitivity import context_table
from rsec.data import scene_rules as R
from rsec.data import scenes


def _batch(d, n=32):
  return {"image": jnp.asarray(d["image"][:n]), "targets": jnp.asarray(d["labels"][:n]),
          **jax.tree.map(lambda a: jnp.asarray(a[:n]), augment.flatten_layout(d["layout"]))}


def test_removals_are_the_oracle_scenes(small_scenes):
  ctx = context_table(R.ContextRules())
  batch = _batch(small_scenes)
  out = jax.jit(augment.make_context_augment(ctx, 32, 1.0))(None, jax.random.key(0), batch)
  old, new = np.asarray(batch["targets"]) > 0, np.asarray(out["targets"]) > 0
  removed = old & ~new
  has = old.any(1)
  assert removed[has].any(1).all()          # every image with objects lost a class
  np.testing.assert_array_equal(np.asarray(out["image"])[~has], small_scenes["image"][:32][~has])
  layout = jax.tree.map(lambda a: a[:32], small_scenes["layout"])
  remove = np.take_along_axis(removed, layout["cls"], 1) & layout["valid"]
  oracle = scenes.oracle_removal(layout, jnp.asarray(remove), size=32)
  np.testing.assert_allclose(np.asarray(out["image"]), np.asarray(oracle["image"]), atol=1e-6)
  np.testing.assert_array_equal(new, np.asarray(oracle["labels"]) > 0)
  # Segmentation: the per-pixel labels become the oracle's labels of the edited scene.
  seg = dict(batch, label=jnp.asarray(small_scenes["semantic"][:32]))
  out2 = augment.make_context_augment(ctx, 32, 1.0, semantic_key="label")(
      None, jax.random.key(0), seg)
  np.testing.assert_array_equal(np.asarray(out2["label"]), np.asarray(oracle["semantic"]))


def test_probability_zero_changes_nothing(small_scenes):
  batch = _batch(small_scenes)
  out = augment.make_context_augment(context_table(R.ContextRules()), 32, 0.0)(
      None, jax.random.key(1), batch)
  for k in ("image", "targets"):
    np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(batch[k]))


def test_bad_input(small_scenes):
  ctx = context_table(R.ContextRules())
  with pytest.raises(ValueError, match="prob"):
    augment.make_context_augment(ctx, 32, 1.5)
  batch = {k: v for k, v in _batch(small_scenes).items() if not k.startswith("layout/")}
  with pytest.raises(ValueError, match="layout"):
    augment.make_context_augment(ctx, 32, 0.5)(None, jax.random.key(0), batch)


def test_training_with_online_augmentation(small_scenes):
  d = small_scenes
  perturb = augment.make_context_augment(context_table(R.ContextRules()), 32, 0.5)
  state = multilabel.train_multilabel(d["image"], d["labels"], model="mlp", seed=0, steps=4,
                                      batch_size=16, steps_per_call=2, perturb=perturb,
                                      extra=augment.flatten_layout(d["layout"]))
  assert int(state.step) == 4


def test_stuff_swap_moves_things_onto_another_scene_types_stuff(small_scenes):
  tables = R.make_tables(R.ContextRules())
  batch = dict(_batch(small_scenes), label=jnp.asarray(small_scenes["semantic"][:32]))
  swap = augment.make_stuff_swap(tables["bands"], 32, 1.0, semantic_key="label")
  out = jax.jit(swap)(None, jax.random.key(0), batch)
  layout = jax.tree.map(lambda a: a[:32], small_scenes["layout"])
  old_sem, new_sem = np.asarray(batch["label"]), np.asarray(out["label"])
  things = old_sem < R.NUM_THINGS
  # Every scene changed type: its stuff labels are another type's bands (street, indoor
  # and park differ in at least one band), and the things kept their pixels and labels.
  for i in range(32):
    stuff_now = set(np.unique(new_sem[i][~things[i]]) - R.NUM_THINGS)
    assert stuff_now <= set(tables["bands"][np.arange(3) != layout["scene"][i]].ravel())
    assert not np.array_equal(new_sem[i], old_sem[i])
  np.testing.assert_array_equal(new_sem[things], old_sem[things])
  np.testing.assert_array_equal(np.asarray(out["targets"]), np.asarray(batch["targets"]))
  # Probability 0: the batch is untouched.
  same = augment.make_stuff_swap(tables["bands"], 32, 0.0, semantic_key="label")(
      None, jax.random.key(0), batch)
  for k in ("image", "label", "targets"):
    np.testing.assert_array_equal(np.asarray(same[k]), np.asarray(batch[k]))
  with pytest.raises(ValueError, match="bands"):
    augment.make_stuff_swap(tables["bands"][:1], 32, 0.5)
  with pytest.raises(ValueError, match="prob"):
    augment.make_stuff_swap(tables["bands"], 32, -0.1)


@pytest.mark.parametrize("mode", ["context_augment", "stuff_swap"])
def test_registered_scenes_modes_are_these_perturbations(small_scenes, mode):
  """TRAINING_MODES' context_augment / stuff_swap (what the SCENES trainers build from a
  config) edit a batch exactly as the augment functions they wrap."""
  from configs.train_remover import rules_config
  from rsec.modes.scenes import scenes_mode
  rules = R.ContextRules()
  direct = (augment.make_context_augment(context_table(rules), 32, 0.7) if mode ==
            "context_augment" else augment.make_stuff_swap(R.make_tables(rules)["bands"], 32,
                                                          0.7))
  registered = scenes_mode(mode, {"size": 32, "rules": rules_config()}, 0.7).perturb
  batch = _batch(small_scenes)
  a, b = (fn(None, jax.random.key(3), batch) for fn in (direct, registered))
  for k in ("image", "targets"):
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
  with pytest.raises(ValueError, match="not a SCENES mode"):
    scenes_mode("normal", {"size": 32}, 0.5)
