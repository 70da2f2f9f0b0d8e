"""Cost of deterministic reductions: interleaved A/B in one process, ms/step of the fast path
vs training.virtual_shards=4, paper classifier, batch 100, 28x28, 10 steps per scanned call,
on 1 and 4 (fake CPU) devices.

  python -m benchmarks.deterministic_cost
"""
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rsec import parallel  # noqa: E402
from rsec.models.classifiers import make_model  # noqa: E402
from rsec.training import steps as S  # noqa: E402
from rsec.training.state import create_train_state, make_optimizer  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)
K, B = 10, 100
rng = np.random.default_rng(0)
batches = {"image": rng.random((K, B, 28, 28, 1), dtype=np.float32), "label": rng.integers(0, 10, (K, B)).astype(np.int32)}
fns = {}
for nd in (1, 4):
  mesh = parallel.data_mesh(jax.devices()[:nd])
  for v in (0, 4):
    multi = S.make_multi_step(S.make_train_step(virtual_shards=v, mesh=mesh), mesh)
    st = parallel.replicate(create_train_state(make_model("paper_classifier", 10), make_optimizer(0.01, 100), jax.random.key(0), (1, 28, 28, 1)), mesh)
    bt = parallel.shard_batch(batches, mesh, axis=1)
    steps = jnp.arange(K, dtype=jnp.int32); valid = jnp.ones(K, bool)
    t = time.perf_counter(); st, m = multi(st, bt, jax.random.key(1), steps, valid); jax.block_until_ready(m)
    print(f"devices={nd} V={v} first call (compile) {time.perf_counter() - t:.1f}s", flush=True)
    fns[(nd, v)] = [multi, st, bt, steps, valid]
times = {k: [] for k in fns}
for rep in range(7):
  for k, f in fns.items():
    multi, st, bt, steps, valid = f
    t = time.perf_counter(); st, m = multi(st, bt, jax.random.key(1), steps, valid); jax.block_until_ready(m)
    times[k].append((time.perf_counter() - t) / K * 1e3); f[1] = st
for k, v in times.items():
  print(f"devices={k[0]} virtual_shards={k[1]}: median {np.median(v):.1f} ms/step (min {np.min(v):.1f})")
