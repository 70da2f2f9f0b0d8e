"""One process of a multi-process data-parallel training run on CPU (gloo over loopback).

python tests/reliability/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT LOCAL_DEVICES OUT RUNS

Trains the paper classifier for a few steps on a fixed synthetic data set with a global
batch of 40, once per comma-separated name in RUNS:
  fast  the fast path over all processes' devices ('fast|' keys: parameters, evaluation);
  det   deterministic reductions over 4 virtual shards on all devices ('det|' keys:
        parameters, BatchNorm statistics, optimizer state, logged metrics, evaluation);
  det1  the same on this process's first device alone ('det1|' keys; one process only).
Process 0 saves everything to OUT (.npz). Each process reads only its rows of every batch
(rsec.parallel.process_rows): process i saves the row indices it gathered in the 'fast'
run to OUT.rows{i}.npy ([calls * steps_per_call, rows per process]).
"""
import json
import os
import sys
import tempfile


def main():
  pid, nproc, port, local, out = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                  int(sys.argv[4]), sys.argv[5])
  runs = sys.argv[6].split(",")
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
  from rsec.training.metrics import MetricWriter
  from tests.helpers import small_state, squares_data

  assert jax.device_count() == nproc * local, jax.devices()
  reads = []  # the row indices this process gathered for each compiled call of `fit`

  class Recorded(np.ndarray):
    """Records which rows are read by fancy indexing with a [steps, rows] index."""
    def __getitem__(self, idx):
      if isinstance(idx, np.ndarray) and idx.ndim == 2 and self.ndim == 1 and record[0]:
        reads.append(np.array(idx))
      return np.asarray(super().__getitem__(idx))

  record = [False]
  data = {k: np.asarray(v).view(Recorded) if k == "label" else v
          for k, v in squares_data().items()}
  saved = {}

  def run(prefix, mesh, virtual_shards, state_tree):
    with tempfile.TemporaryDirectory() as workdir:
      writer = MetricWriter(workdir, tensorboard=False)
      state, _ = fit(small_state(), data, key=jax.random.key(1), batch_size=40, num_steps=12,
                     mesh=mesh, progress=False, virtual_shards=virtual_shards,
                     steps_per_call=4, writer=writer, log_every=1)
      writer.close()
      if jax.process_index() == 0:
        rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
        for name in rows[0]:
          saved[f"{prefix}|metrics|{name}"] = np.asarray([r[name] for r in rows])
    ev = evaluate(state, data["image"], data["label"], batch_size=40, mesh=mesh)
    saved[f"{prefix}|accuracy"], saved[f"{prefix}|loss"] = ev["accuracy"], ev["loss"]
    tree = state.checkpoint_tree() if state_tree else state.params
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
      # Replicated arrays: every process holds the whole value on its devices.
      saved[f"{prefix}|{jax.tree_util.keystr(path)}"] = np.asarray(x.addressable_data(0))

  if "fast" in runs:
    record[0] = True
    run("fast", parallel.data_mesh(), 0, state_tree=False)
    record[0] = False
    np.save(f"{out}.rows{pid}.npy", np.concatenate(reads))
  if "det" in runs:
    run("det", parallel.data_mesh(), 4, state_tree=True)
  if "det1" in runs:
    assert nproc == 1
    run("det1", parallel.data_mesh(jax.devices()[:1]), 4, state_tree=True)
  if jax.process_index() == 0:
    np.savez(out, **saved)
  if nproc > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
