"""The masked super-network equals the plain model of its attributes, forward and trained;
the lanes stack (models on the last axis) equals the vmapped one-model network."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rsec.reverse import zoo_lanes, zoo_net, zoo_train
from rsec.training import stack as stack_lib
from rsec.training.loop import IndexSetSampler, run_loop
from rsec.training.state import TrainState

SPEC = zoo_net.NetSpec(input_shape=(12, 12, 1), num_classes=5, width=4, hidden=8)
NAMES = list(zoo_net.ARCH_ATTRIBUTES)


def _arch(**kw):
  """Indices for attribute values given by name (defaults: the first value)."""
  return {n: zoo_net.ARCH_ATTRIBUTES[n].index(kw[n]) if n in kw else 0 for n in NAMES}


ARCHS = [
    _arch(act="relu", ks=3, conv=2, fc=2),
    _arch(act="elu", ks=5, conv=4, fc=4, pool="yes", drop="yes"),
    _arch(act="prelu", ks=3, conv=3, fc=3, pool="yes"),
    _arch(act="tanh", ks=5, conv=2, fc=4, drop="yes"),
]


def _jarch(arch):
  return {k: jnp.asarray(v, jnp.int32) for k, v in arch.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_masked_forward_equals_the_plain_model(arch):
  x = jax.random.uniform(jax.random.key(1), (6,) + SPEC.input_shape)
  params = zoo_net.init_params(SPEC, jax.random.key(0), _jarch(arch))
  plain = zoo_net.plain_params(params, arch)
  for train in (False, True):
    key = jax.random.key(3)
    masked = zoo_net.apply({"params": params, "arch": _jarch(arch)}, x, train=train,
                           rngs={"dropout": key})
    ref = zoo_net.plain_apply(plain, arch, x, train=train, key=key)
    np.testing.assert_allclose(masked, ref, rtol=1e-5, atol=1e-5)
  # The masked kernel ring is zero and a 3x3 kernel has the 3x3 fan-in's scale.
  w = np.asarray(params["conv1"]["w"])
  if zoo_net.ARCH_ATTRIBUTES["ks"][arch["ks"]] == 3:
    assert np.all(w[0] == 0) and np.all(w[:, -1] == 0)
  gain = 2.0 if zoo_net.ACTIVATIONS[arch["act"]] in ("relu", "prelu") else 1.0
  live = w[1:4, 1:4] if zoo_net.ARCH_ATTRIBUTES["ks"][arch["ks"]] == 3 else w
  np.testing.assert_allclose(live.std(), np.sqrt(gain / (live.shape[0] ** 2 * 4)), rtol=0.3)


def test_param_count_counts_the_plain_model():
  for arch in ARCHS:
    params = zoo_net.init_params(SPEC, jax.random.key(0), _jarch(arch))
    plain = zoo_net.plain_params(params, arch)
    prelu = zoo_net.ACTIVATIONS[arch["act"]] == "prelu"
    n = sum(v.size for layer in plain.values() for k, v in layer.items()
            if k != "slope" or prelu)
    assert zoo_net.param_count(SPEC, arch) == n


def _plain_step(spec, arch, opt, bs, m):
  """The reference: one plain model of `arch`, its own optax rule, loss over bs rows,
  dropout keys as model m of a stack draws them."""
  tx = spec.optimizers()[opt]

  def step(state, batch, key):
    key = jax.random.fold_in(key, m)
    x, y = batch["image"][:bs], batch["label"][:bs]

    def objective(p):
      logits = zoo_net.plain_apply(p, arch, x, train=True, key=key)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(objective)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), {"loss": loss, "finite": jnp.float32(1)}
  return step, tx


class _Row:
  """Model m's rows of a stack's sampler (the plain model reads exactly those)."""

  def __init__(self, sampler, m):
    self.sampler, self.m = sampler, m

  def indices(self, step):
    return self.sampler.indices(step)[self.m]


def test_masked_stack_trains_like_the_plain_models():
  """Three models (SGD, Adam, RMSprop; batch 8 of a batch-16 stack) trained 12 steps in
  one stack equal the plain models trained alone on the same rows and keys."""
  rng = np.random.default_rng(0)
  data = {"image": rng.random((64,) + SPEC.input_shape, np.float32),
          "label": rng.integers(0, 5, 64).astype(np.int32)}
  spec = zoo_train.TrainSpec(SPEC, batch_sizes=(8, 16, 32), lr_sgd=0.05, lr_adam=3e-3,
                             lr_rmsprop=1e-3, steps=12)
  archs = ARCHS[1:]
  arch = {n: np.asarray([a[n] for a in archs]) for n in NAMES}
  arch["opt"], arch["bs"] = np.asarray([0, 1, 2]), np.asarray([0, 1, 0])
  keys = jax.random.split(jax.random.key(0), 3)
  state = zoo_train.init_stack(spec, keys, arch)
  start = jax.device_get(state.params)
  sampler = IndexSetSampler([np.arange(64), np.arange(10, 64), np.arange(40)], 16, seed=0)
  key = jax.random.key(5)
  state, _ = run_loop(zoo_lanes.to_lanes(state), zoo_train.make_stack_step(spec), data,
                      sampler, key=key, num_steps=12, steps_per_call=4, progress=False)
  state = zoo_lanes.from_lanes(state)
  for m, a in enumerate(archs):
    plain = zoo_net.plain_params(stack_lib.unstack(start, m), a)
    step, tx = _plain_step(spec, a, int(arch["opt"][m]), spec.batch_sizes[arch["bs"][m]], m)
    ref = TrainState(jnp.zeros((), jnp.int32), plain, {}, tx.init(plain), None, tx)
    ref, _ = run_loop(ref, step, data, _Row(sampler, m), key=key, num_steps=12,
                      steps_per_call=4, progress=False)
    got = zoo_net.plain_params(jax.device_get(stack_lib.unstack(state.params, m)), a)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-5),
                 got, jax.device_get(ref.params))
    moved = jax.tree.map(lambda g, s: float(np.abs(g - s).max()), got, plain)
    assert max(jax.tree.leaves(moved)) > 1e-3   # it did train


def test_a_diverging_member_is_counted_not_fatal():
  """Model 0 reads rows with NaN pixels, model 1 clean rows: model 0's steps are skipped
  and counted, model 1 trains, and the run does not stop."""
  rng = np.random.default_rng(0)
  x = rng.random((32,) + SPEC.input_shape, np.float32)
  x[:16, 0, 0] = np.nan
  data = {"image": x, "label": rng.integers(0, 5, 32).astype(np.int32)}
  spec = zoo_train.TrainSpec(SPEC, batch_sizes=(8, 16, 32), steps=6)
  arch = {n: np.asarray([0, 0]) for n in NAMES}
  arch["opt"], arch["bs"] = np.asarray([1, 1]), np.asarray([1, 1])
  state = zoo_train.init_stack(spec, jax.random.split(jax.random.key(0), 2), arch)
  before = jax.device_get(state.params)
  state, _ = run_loop(zoo_lanes.to_lanes(state), zoo_train.make_stack_step(spec), data,
                      IndexSetSampler([np.arange(16), np.arange(16, 32)], 16, seed=0),
                      key=jax.random.key(0), num_steps=6, steps_per_call=3, progress=False)
  np.testing.assert_array_equal(np.asarray(state.skipped), [6, 0])
  after = jax.device_get(zoo_lanes.from_lanes(state.params))
  np.testing.assert_array_equal(after["fc3"]["w"][0], before["fc3"]["w"][0])
  assert np.abs(after["fc3"]["w"][1] - before["fc3"]["w"][1]).max() > 0
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(after))


def _random_stack(rng, m, key):
  """(stacked params [M, ...], arch [M]) of m models with attributes drawn from rng."""
  arch = {n: jnp.asarray(rng.integers(0, len(v), m), jnp.int32)
          for n, v in zoo_net.ARCH_ATTRIBUTES.items()}
  params = jax.vmap(lambda k, a: zoo_net.init_params(SPEC, k, a))(jax.random.split(key, m), arch)
  return params, arch


def test_lanes_stack_equals_the_vmapped_models_forward_and_gradient():
  """Eight models of mixed attributes on their own images: logits (also in training mode,
  the same dropout masks) and parameter gradients equal vmap of `zoo_net.apply`."""
  rng = np.random.default_rng(0)
  m = 8
  params, arch = _random_stack(rng, m, jax.random.key(0))
  x = jnp.asarray(rng.random((m, 6) + SPEC.input_shape, np.float32))
  keys = jax.random.split(jax.random.key(3), m)
  lanes = zoo_lanes.to_lanes(params)
  assert lanes["conv1"]["w"].shape == (5, 5, 4, 4, m)
  jax.tree.map(np.testing.assert_array_equal, zoo_lanes.from_lanes(lanes), params)

  def vmapped(p, train):
    return jax.vmap(lambda p, a, x, k: zoo_net.apply(
        {"params": p, "arch": a}, x, train=train, rngs={"dropout": k}))(p, arch, x, keys)
  for train in (False, True):
    got = zoo_lanes.apply(lanes, arch, x, train=train, keys=keys)
    np.testing.assert_allclose(got, vmapped(params, train), rtol=1e-5, atol=1e-5)
  y = jnp.asarray(rng.integers(0, 5, (m, 6)))

  def loss(logits):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
  ref = jax.grad(lambda p: loss(vmapped(p, True)))(params)
  got = zoo_lanes.from_lanes(jax.grad(
      lambda p: loss(zoo_lanes.apply(p, arch, x, train=True, keys=keys)))(lanes))
  jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6), got, ref)


def test_stack_probs_equals_each_model_alone_across_chunks_and_padding():
  """Seven models on five images in chunks of 3 models x 2 images (both padded at the
  end): every model's posteriors equal its own `zoo_net.apply`."""
  rng = np.random.default_rng(1)
  m = 7
  params, arch = _random_stack(rng, m, jax.random.key(2))
  x = rng.random((5,) + SPEC.input_shape, np.float32)
  got = zoo_train.stack_probs({"params": params, "arch": arch}, x, batch=2, models=3)
  assert got.shape == (m, 5, SPEC.num_classes)
  for i in range(m):
    one = jax.tree.map(lambda a: a[i], {"params": params, "arch": arch})
    want = jax.nn.softmax(zoo_net.apply(one, jnp.asarray(x)), -1)
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
