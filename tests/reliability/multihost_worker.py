"""One process of a multi-process data-parallel training run on CPU (gloo over loopback).

python tests/reliability/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT LOCAL_DEVICES OUT

Trains the paper classifier for a few steps on a fixed synthetic data set with a global
batch of 40 over all processes' devices; process 0 saves the parameters and metrics to OUT
(.npz). Each process reads only its rows of every batch (rsec.parallel.process_rows).
"""
import os
import sys


def main():
  pid, nproc, port, local, out = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                  int(sys.argv[4]), sys.argv[5])
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local}"
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if nproc > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=nproc, process_id=pid,
                               initialization_timeout=120)
  import numpy as np
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
      __file__)))))
  from rsec import parallel
  from rsec.training.loop import evaluate, fit
  from tests.training.test_loop import _data, _state

  assert jax.device_count() == nproc * local, jax.devices()
  data = _data()
  mesh = parallel.data_mesh()
  state, _ = fit(_state(), data, key=jax.random.key(1), batch_size=40, num_steps=12,
                 mesh=mesh, progress=False)
  ev = evaluate(state, data["image"], data["label"], batch_size=40, mesh=mesh)
  leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
  # Replicated arrays: every process holds the whole value on its devices.
  flat = {jax.tree_util.keystr(p): np.asarray(x.addressable_data(0)) for p, x in leaves}
  if jax.process_index() == 0:
    np.savez(out, accuracy=ev["accuracy"], loss=ev["loss"], **flat)
  if nproc > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
