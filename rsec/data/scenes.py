"""SCENES: seeded synthetic street / indoor / park scenes with exact object removal.

A scene is a pure function of a *layout* (sampled once from a PRNG key) and a boolean
`present` flag per object slot: `render(layout, present)`. Removing objects is rendering
the same layout with their flags off, so the oracle "image without the object" (and the
labels of what lies behind it) is exact.

Geometry: coordinates are fractions of the image side, y down. Stuff is four horizontal,
slightly slanted bands; things are signed-distance shapes standing with their foot in a
band, painted back to front (higher foot first), anti-aliased over one pixel. An object's
mask is where it is the top layer with coverage > 1/2; its amodal mask (every pixel the
shape covers at all, occluded parts included) holds every pixel that removal changes.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rsec import checks
from rsec.data import scene_rules as R
from rsec.data import scene_shapes

MAX_OBJECTS = 4           # slots: (free, partner, free, partner)
MIN_VISIBLE_PIXELS = 12   # at 64x64; scaled with the area at other sizes
SPLIT_IDS = {"train": 0x5C1, "test": 0x5C7, "ood": 0x00D, "ood_train": 0x0DA}


def sample_layouts(key: jax.Array, n: int, tables: dict, ood: bool = False) -> dict:
  """Samples `n` scene layouts (a dict of arrays with leading axis n).

  In-context (ood=False): things follow `tables` (scene types, ties, pairs). Out of
  context (the UnRel analogue): things are drawn among those *not* tied to the scene
  type, stand on stuff they are not tied to where the scene has any, and the second slot
  of each pair holds a random non-partner.
  """
  checks.check_positive_int("n", n)
  tables = {k: jnp.asarray(v) for k, v in tables.items()}
  return _sample(key, tables, n, bool(ood))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sample(key, tables, n, ood):
  return jax.vmap(lambda k: _sample_one(k, tables, ood))(jax.random.split(key, n))


def _categorical(key, weights):
  return jax.random.categorical(key, jnp.log(weights.astype(jnp.float32) + 1e-30))


def _sample_one(key, tab, ood: bool) -> dict:
  ks = iter(jax.random.split(key, 32))
  scene = _categorical(next(ks), tab["scene_probs"])
  bounds = jnp.sort(jnp.array([0.3, 0.5, 0.7]) +
                    jax.random.uniform(next(ks), (3,), minval=-0.07, maxval=0.07))
  slopes = jax.random.uniform(next(ks), (3,), minval=-0.06, maxval=0.06)
  bands = tab["bands"][scene]
  in_scene = tab["scene_things"][scene]
  k_all = in_scene.shape[0]
  cls, valid = [], []
  for i in range(2):
    free = (1.0 - in_scene if ood else in_scene)
    free = jnp.where(free.sum() > 0, free, jnp.ones_like(free))
    c0 = _categorical(next(ks), free)
    v0 = jnp.bool_(True) if i == 0 else jax.random.bernoulli(
        next(ks), tab["second_object_prob"])
    partner = tab["partner"][c0]
    if ood:
      others = (1.0 - in_scene) * (jnp.arange(k_all) != partner)
      others = jnp.where(others.sum() > 0, others, jnp.ones_like(others))
      c1 = _categorical(next(ks), others)
      v1 = v0 & jax.random.bernoulli(next(ks), 0.5)
    else:
      c1 = jnp.maximum(partner, 0)
      v1 = v0 & (partner >= 0) & jax.random.bernoulli(next(ks), tab["partner_prob"][c0])
    cls += [c0, c1]
    valid += [v0, v1]
  cls, valid = jnp.stack(cls).astype(jnp.int32), jnp.stack(valid)

  base_h = jnp.asarray(scene_shapes.HEIGHTS)[cls]
  aspect = jnp.asarray(scene_shapes.ASPECTS)[cls]
  allowed = tab["tie"][cls][:, bands]                            # [S, 4]
  if ood:
    w = 1.0 - allowed
    allowed = jnp.where(w.sum(-1, keepdims=True) > 0, w, jnp.ones_like(w))
  band = jax.vmap(_categorical)(jax.random.split(next(ks), MAX_OBJECTS), allowed)
  u = jax.random.uniform(next(ks), (MAX_OBJECTS, 3))
  # The band's vertical range at the object's x (bands are slanted): sample x first.
  half_w0 = jnp.clip(base_h * 0.5 * aspect, 0.05, 0.45)
  cx = half_w0 + u[:, 0] * (1 - 2 * half_w0)
  side = jnp.where(u[:, 1] < 0.5, -1.0, 1.0)
  near = cx[0::2] + side[0::2] * (0.22 + 0.16 * u[0::2, 2])
  cx = cx.at[1::2].set(jnp.clip(near, half_w0[1::2], 1 - half_w0[1::2]))
  edges = bounds[None, :] + slopes[None, :] * (cx[:, None] - 0.5)          # [S, 3]
  edges = jnp.concatenate([jnp.zeros((MAX_OBJECTS, 1)), edges, jnp.ones((MAX_OBJECTS, 1))], 1)
  lo = jnp.take_along_axis(edges, band[:, None], 1)[:, 0]
  hi = jnp.take_along_axis(edges, band[:, None] + 1, 1)[:, 0]
  foot = jnp.clip(lo + (0.15 + 0.8 * jax.random.uniform(next(ks), (MAX_OBJECTS,))) * (hi - lo),
                  0.25, 0.98)
  height = base_h * (0.55 + 0.6 * foot) * jax.random.uniform(
      next(ks), (MAX_OBJECTS,), minval=0.85, maxval=1.15)
  pal = jnp.asarray(scene_shapes.PALETTES)[cls]                  # [S, P, 3]
  pick = jax.random.randint(next(ks), (MAX_OBJECTS,), 0, pal.shape[1])
  colour = jnp.take_along_axis(pal, pick[:, None, None], 1)[:, 0]
  colour = jnp.clip(colour + 0.05 * jax.random.normal(next(ks), colour.shape), 0, 1)
  order = jnp.argsort(foot)                  # back (higher on screen) to front
  objects = dict(cls=cls, valid=valid, cx=cx, foot=foot, height=height, colour=colour)
  objects = {k: v[order] for k, v in objects.items()}
  tint = 0.06 * jax.random.normal(next(ks), (len(R.STUFF), 3))
  noise = jax.random.uniform(next(ks), (8, 8))
  out = dict(scene=scene.astype(jnp.int32), bands=bands, bounds=bounds, slopes=slopes,
             tint=tint, noise=noise, **objects)
  if tab["ambiguous_prob"].shape[0]:   # static: without the rule the layout is as before
    out["look"] = _stuff_look(jax.random.fold_in(key, 0xA3B), tab, bands)
  return out


def _stuff_look(key, tab, bands) -> jax.Array:
  """int32 [len(STUFF)]: whose texture each stuff is drawn with (`ambiguous_stuff`).

  Per pair (a, b, p) whose two regions the scene shows, with probability p both take the
  look of a or of b (a fair coin), tint included. The look only changes the image: the
  labels (`semantic`), the ties and the band order stay the true ones, so oracle removal
  still reveals the true stuff. Out of context (ood) the same rule applies: ood scenes
  break ties and pairs, not the look of stuff, and a segmenter that labels an ambiguous
  region by the things on it is then misled (things stand on the "wrong" stuff, or the
  street's car / person / sign are absent) -- which is what the ood mIoU should measure.
  """
  look = jnp.arange(len(R.STUFF), dtype=jnp.int32)
  keys = jax.random.split(key, tab["ambiguous_prob"].shape[0])
  for j in range(tab["ambiguous_prob"].shape[0]):
    a, b = tab["ambiguous_a"][j], tab["ambiguous_b"][j]
    k_on, k_which = jax.random.split(keys[j])
    on = (jnp.any(bands == a) & jnp.any(bands == b)
          & jax.random.bernoulli(k_on, tab["ambiguous_prob"][j]))
    shared = jnp.where(jax.random.bernoulli(k_which), a, b)
    mine = (jnp.arange(len(R.STUFF)) == a) | (jnp.arange(len(R.STUFF)) == b)
    look = jnp.where(on & mine, shared, look)
  return look


def _render_one(layout: dict, present: jax.Array, size: int) -> dict:
  px = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
  y, x = jnp.meshgrid(px, px, indexing="ij")
  noise = jax.image.resize(layout["noise"], (size, size), "bilinear")
  edges = layout["bounds"][:, None, None] + layout["slopes"][:, None, None] * (x - 0.5)
  band = jnp.sum(y[None] > edges, axis=0)
  stuff = layout["bands"][band]
  if "look" in layout:   # ambiguous_stuff: shared looks; no lane markings on a shared road
    look = layout["look"]
    road = R.STUFF.index("road")
    shared_road = jnp.sum(look == look[road]) > 1
    image = scene_shapes.stuff_colours(x, y, noise, edges, layout["tint"],
                                       markings=~shared_road)[look]
  else:
    image = scene_shapes.stuff_colours(x, y, noise, edges, layout["tint"])    # [6, H, W, 3]
  image = jnp.take_along_axis(image, stuff[None, :, :, None], 0)[0]
  inst = -jnp.ones((size, size), jnp.int32)
  amodal = []
  on = layout["valid"] & present
  for s in range(MAX_OBJECTS):
    c, h = layout["cls"][s], layout["height"][s]
    u = (x - layout["cx"][s]) / (h / 2)
    v = (y - (layout["foot"][s] - h / 2)) / (h / 2)
    sdf = scene_shapes.shape_sdf(c, u, v)
    alpha = jnp.clip(0.5 - sdf * (h / 2 * size), 0.0, 1.0) * on[s]
    col = scene_shapes.thing_colour(c, layout["colour"][s], u, v, noise)
    image = alpha[..., None] * col + (1 - alpha[..., None]) * image
    inst = jnp.where(alpha > 0.5, s, inst)
    amodal.append(alpha > 0)
  semantic = jnp.where(inst >= 0, layout["cls"][jnp.maximum(inst, 0)], R.NUM_THINGS + stuff)
  masks = inst[None] == jnp.arange(MAX_OBJECTS)[:, None, None]
  visible = masks.sum((1, 2)) >= max(1, MIN_VISIBLE_PIXELS * size * size // 4096)
  shown = on & visible
  labels = jnp.zeros(R.NUM_THINGS).at[layout["cls"]].max(shown.astype(jnp.float32))
  return dict(image=jnp.clip(image, 0, 1), semantic=semantic.astype(jnp.int32),
              instance=inst, masks=masks, amodal=jnp.stack(amodal), shown=shown,
              labels=labels)


def render_traceable(layouts: dict, present: jax.Array, size: int) -> dict:
  """`render` without its host-side checks, to call inside jit (e.g. a training step)."""
  return jax.vmap(lambda l, p: _render_one(l, p, size))(layouts, present)


_render = jax.jit(render_traceable, static_argnums=2)


def render(layouts: dict, present: jax.Array | None = None, size: int = 64) -> dict:
  """Renders a batch of layouts.

  Args:
    layouts: from `sample_layouts` (leading axis N).
    present: bool [N, MAX_OBJECTS]; False removes that object (default: all kept).
    size: image side in pixels.
  Returns a dict: image float32 [N, size, size, 3] in [0, 1]; semantic int32 [N, H, W]
  (things 0..K-1, stuff K + stuff index); instance int32 [N, H, W] (slot, -1 = stuff);
  masks bool [N, S, H, W] visible instance masks; amodal bool [N, S, H, W] every pixel each
  shape covers at all (occluded parts included: nothing else changes on removal); shown bool [N, S] (present and at
  least MIN_VISIBLE_PIXELS visible); labels float32 [N, K] multi-label targets.
  """
  checks.check_positive_int("size", size, minimum=16)
  n = layouts["cls"].shape[0]
  if present is None:
    present = jnp.ones((n, MAX_OBJECTS), bool)
  checks.check_shape("present", present, (n, MAX_OBJECTS))
  if getattr(present, "dtype", None) != bool:
    raise ValueError(f"present must be a bool array, got dtype {getattr(present, 'dtype', None)}")
  return _render(layouts, jnp.asarray(present), size)


def oracle_removal(layouts: dict, remove: jax.Array, size: int = 64) -> dict:
  """The exact scenes without the objects flagged in `remove` (bool [N, MAX_OBJECTS]).

  `semantic` of the result labels what lies behind the removed objects.
  """
  checks.check_positive_int("size", size, minimum=16)  # before `~remove` runs on device
  n = layouts["cls"].shape[0]
  checks.check_shape("remove", remove, (n, MAX_OBJECTS))
  if getattr(remove, "dtype", None) != bool:
    raise ValueError(f"remove must be a bool array, got dtype {getattr(remove, 'dtype', None)}")
  return render(layouts, ~jnp.asarray(remove), size)


def split_key(seed: int, split: str) -> jax.Array:
  checks.check_choice("split", split, SPLIT_IDS)
  return jax.random.fold_in(jax.random.key(seed), SPLIT_IDS[split])


def scene_split(split: str, n: int, seed: int = 0, rules: R.ContextRules | None = None,
                size: int = 64, chunk: int = 2048) -> dict[str, np.ndarray]:
  """A whole split as host arrays: `render`'s outputs plus 'layout' (for oracle removal).

  split: 'train' and 'test' (in-context: the rules' biased statistics; different keys)
  or 'ood' (out of context: pairs and ties broken); 'ood_train' has ood's statistics
  and its own key (to train context-free reference models, e.g. a removal judge).
  Generated in chunks of `chunk`.
  """
  checks.check_positive_int("n", n)
  # Checked here as well as in `render`: sampling the layouts compiles first.
  checks.check_positive_int("size", size, minimum=16)
  checks.check_positive_int("chunk", chunk)
  tables = R.make_tables(rules or R.ContextRules())
  layouts = sample_layouts(split_key(seed, split), n, tables, ood=split.startswith("ood"))
  outs = [jax.device_get(render(jax.tree.map(lambda a: a[i:i + chunk], layouts), size=size))
          for i in range(0, n, chunk)]
  data = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
  data["layout"] = jax.device_get(layouts)
  return data
