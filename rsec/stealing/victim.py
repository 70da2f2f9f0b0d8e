"""The black box: `query(x) -> outputs` around a pure, compiled, data-parallel core.

The core (`make_answer_fn`) is one jitted function of a batch: logits -> softmax posterior
y -> defence -> y~ -> output mode. It runs in fixed chunks of `chunk` rows sharded over
the data mesh (the last chunk padded with its final row), so it compiles once, and each
row's answer is the same however a query stream is cut into batches (rows never mix;
randomised defences draw from per-row keys, `rsec.stealing.defences.query_keys`).

`Victim` is the stateful shell: input checks, a query budget counted in images (a batch
that would pass it is refused before any work and costs nothing; under concurrent callers
the counter never passes the budget, because a batch reserves its images under a lock
before it is answered and gives them back if answering fails), and a query log.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsec import parallel
from rsec.checks import check_choice, check_positive_int
from rsec.stealing.defences import (DEFENCES, KEY_MODES, Defence, DefenceContext,
                                    defence_settings, make_defence, query_keys)
from rsec.stealing.outputs import OutputMode, make_output_mode

TRAIN_COMMAND = ("python -m experiments.train_classifier --config=configs/train_classifier.py:quick "
                 "--workdir=DIR")


class BudgetExceededError(ValueError):
  """A query batch would take the victim past its query budget (nothing was answered)."""


class QueryBudget:
  """A thread-safe count of answered images, never above `limit` (None: unlimited).

  `charge(n)` is a context manager: it reserves n images (BudgetExceededError if that
  would pass the limit), yields the stream index of the first, and keeps them if the
  block succeeds or gives them back if it raises. `used` counts reservations too (what
  the limit is checked against); `answered` only the blocks that succeeded (what a
  server persists, so a crash mid-answer charges nothing).
  """

  def __init__(self, limit: int | None = None, used: int = 0):
    if limit is not None:
      limit = check_positive_int("budget", limit, minimum=0)
    self.limit = limit
    self._used = self._next = self._answered = int(used)
    self._lock = threading.Lock()

  @property
  def used(self) -> int:
    return self._used

  @property
  def answered(self) -> int:
    return self._answered

  @property
  def left(self) -> int | None:
    return None if self.limit is None else self.limit - self._used

  def reserve(self, n: int) -> int:
    with self._lock:
      if self.limit is not None and self._used + n > self.limit:
        raise BudgetExceededError(
            f"query budget exhausted: {n} images asked, {self.limit - self._used} of "
            f"{self.limit} left; nothing was answered or charged")
      self._used += n
      start, self._next = self._next, self._next + n
      return start

  def release(self, n: int, start: int) -> None:
    with self._lock:
      self._used -= n
      if self._next == start + n:  # the last reservation: its stream indices are reused
        self._next = start

  def commit(self, n: int) -> None:
    with self._lock:
      self._answered += n

  def charge(self, n: int):
    budget = self

    class _Charge:
      def __enter__(self):
        self.start = budget.reserve(n)
        return self.start

      def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
          budget.release(n, self.start)
        else:
          budget.commit(n)
        return False
    return _Charge()


def check_images(name: str, x: Any, input_shape: tuple[int, ...]) -> np.ndarray:
  """ValueError unless `x` is a float array [B, *input_shape], B >= 1, finite, in [0, 1];
  returns it as float32 NumPy."""
  if isinstance(x, jax.core.Tracer):
    raise ValueError(f"{name} must be a concrete array (a black box cannot be traced through)")
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise ValueError(f"{name} must be an array of shape (batch, {', '.join(map(str, input_shape))}),"
                     f" got {type(x).__name__}")
  shape = tuple(x.shape)
  if shape[1:] != tuple(input_shape) or len(shape) != len(input_shape) + 1 or shape[0] < 1:
    want = "(batch >= 1, " + ", ".join(map(str, input_shape)) + ")"
    hint = " (add a batch axis for one image)" if shape == tuple(input_shape) else ""
    raise ValueError(f"{name} must have shape {want}, got {shape}{hint}")
  if not np.issubdtype(np.dtype(x.dtype), np.floating):
    raise ValueError(f"{name} must be a floating-point array of pixels in [0, 1], got "
                     f"dtype {x.dtype}")
  a = np.asarray(x, np.float32)
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} has non-finite pixels (NaN or inf)")
  if a.min() < 0.0 or a.max() > 1.0:
    raise ValueError(f"{name} pixels must lie in [0, 1], got values in [{a.min():.4g}, "
                     f"{a.max():.4g}]")
  return a


def make_answer_fn(logits_fn: Callable, defence: Defence, output: OutputMode,
                   key: jax.Array, key_mode: str) -> Callable:
  """The pure core: `answer(x [B, ...], indices uint32 [B]) -> dict(posterior, defended,
  outputs)` (jit-compatible; `indices` are the rows' stream positions, read only when
  key_mode is 'index')."""
  def answer(x, indices):
    y = jax.nn.softmax(logits_fn(x).astype(jnp.float32), axis=-1)
    keys = query_keys(key, x, key_mode, indices)
    # A fake per-row data dependency (x + 0 * y: the same values) makes a defence's own
    # model (MAD's surrogate, the misinformation model) run after the victim's: XLA:CPU
    # runs two independent forwards of one program concurrently and slower than one
    # after the other (paper CNN, 250 rows: 15.5k vs 27k images/s).
    x_after = x + 0.0 * y[:, 0].reshape((-1,) + (1,) * (x.ndim - 1))
    y_tilde = defence.apply(defence.aux, y, x_after, keys)
    return {"posterior": y, "defended": y_tilde, "outputs": output.fn(y_tilde)}
  return answer


@dataclasses.dataclass
class QueryRecord:
  time: float        # seconds since the epoch when answered
  n: int             # images
  first_index: int   # stream position of the first image


class Victim:
  """A black box around `logits_fn(x [B, *input_shape]) -> logits [B, K]`.

  Args:
    logits_fn: any JAX callable (e.g. `TrainState.logits_fn()`); pixels in [0, 1].
    input_shape: one image's shape, e.g. (28, 28, 1).
    defence: a `Defence`, or a registered name with `defence_params` (its settings).
    output_mode / output_params: an `rsec.stealing.outputs` mode and its settings.
    key: the defence's PRNG key; key_mode: 'content' or 'index' (see defences).
    budget: images the victim answers in all (None: unlimited).
    log_images: also keep every queried image in the log (for detection research).
    chunk: rows per compiled call, rounded up to a multiple of the device count (XLA:CPU
      answers about 2x more images per second in chunks of 250 than of 1,000).
    model_name: the victim's architecture, for MAD's default surrogate.
  """

  def __init__(self, logits_fn: Callable, input_shape: tuple[int, ...], *,
               defence: Defence | str = "none", defence_params: dict | None = None,
               output_mode: str = "probs", output_params: dict | None = None,
               key: jax.Array | None = None, key_mode: str = "content",
               budget: int | None = None, log_images: bool = False, chunk: int = 250,
               model_name: str | None = None, mesh: jax.sharding.Mesh | None = None):
    self.input_shape = tuple(int(d) for d in input_shape)
    check_choice("key_mode", key_mode, KEY_MODES)
    self.mesh = mesh or parallel.data_mesh()
    devices = self.mesh.devices.size
    self.chunk = -(-check_positive_int("chunk", chunk) // devices) * devices
    try:
      out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct((1,) + self.input_shape, jnp.float32))
    except Exception as e:  # noqa: BLE001 -- a model that cannot take the input shape
      raise ValueError(f"logits_fn does not accept images of shape {self.input_shape}: {e}") from None
    if len(out.shape) != 2 or out.shape[1] < 2:
      raise ValueError(f"logits_fn must return logits [B, K >= 2], got shape {out.shape}")
    self.num_classes = int(out.shape[1])
    ctx = DefenceContext(self.num_classes, self.input_shape, model_name)
    if isinstance(defence, str):
      defence = make_defence(defence, ctx, **(defence_params or {}))
    elif defence_params:
      raise ValueError("defence_params are only for a defence given by name")
    self.defence, self.key_mode = defence, key_mode
    self.output = make_output_mode(output_mode, self.num_classes, **(output_params or {}))
    key = jax.random.key(0) if key is None else key
    self._core = make_answer_fn(logits_fn, defence, self.output, key, key_mode)
    self._answers: dict[tuple[str, ...], Callable] = {}
    self.budget = QueryBudget(budget)
    self.log_images = bool(log_images)
    self.log: list[QueryRecord] = []
    self.logged_images: list[np.ndarray] = []
    self._log_lock = threading.Lock()

  @property
  def queries_used(self) -> int:
    return self.budget.used

  @property
  def output_mode(self) -> str:
    """The output mode's name (as `VictimClient.output_mode`)."""
    return self.output.name

  def respond(self, x: np.ndarray, first_index: int = 0,
              fields: tuple[str, ...] = ("posterior", "defended", "outputs")
              ) -> dict[str, np.ndarray]:
    """The core on checked images, uncounted (the defender's own evaluation): a dict of
    the requested `fields` among 'posterior' [B, K], 'defended' [B, K] and 'outputs'
    [B, K], as host arrays (only those are copied off the devices)."""
    x = check_images("x", x, self.input_shape)
    idx = np.arange(first_index, first_index + len(x), dtype=np.uint32)
    fields = tuple(fields)
    if fields not in self._answers:
      self._answers[fields] = jax.jit(
          lambda x, i: {f: v for f, v in self._core(x, i).items() if f in fields})
    fn = self._answers[fields]
    return parallel.map_batches(lambda b: fn(b["x"], b["index"]),
                                {"x": x, "index": idx}, self.chunk, self.mesh)

  def query(self, x: np.ndarray) -> np.ndarray:
    """Answers a batch of images x [B, *input_shape] (float, in [0, 1]) with the output
    mode's array [B, K]; charges B images against the budget (BudgetExceededError, with
    nothing answered or charged, if they do not fit)."""
    x = check_images("x", x, self.input_shape)
    with self.budget.charge(len(x)) as start:
      out = self.respond(x, start, fields=("outputs",))["outputs"]
    with self._log_lock:
      self.log.append(QueryRecord(time.time(), len(x), start))
      if self.log_images:
        self.logged_images.append(x)
    return out


def classifier_input_shape(classifier_workdir: str) -> tuple[int, ...]:
  """One image's shape, as the classifier's latest checkpoint records it."""
  import os
  from rsec.training.checkpoint import Checkpointer
  ckpt = Checkpointer(os.path.join(classifier_workdir, "checkpoints"), {})
  try:
    return tuple(int(d) for d in ckpt.read_meta(ckpt.latest_step())["image_shape"])
  finally:
    ckpt.close()


def victim_from_workdir(classifier_workdir: str, *, defence: dict | None = None,
                        output: dict | None = None, seed: int = 0, key_mode: str = "content",
                        budget: int | None = None, log_images: bool = False,
                        chunk: int = 250) -> Victim:
  """A `Victim` around the classifier a `train_classifier` run left in `classifier_workdir`.

  `defence` = {'name': ..., settings...} (settings the named defence does not take are
  ignored, so one config block can hold every defence's), `output` = {'mode': ...,
  'k': ..., 'decimals': ...} likewise. The defence key is `fold_in(key(seed), 1)`.
  ValueError naming the train_classifier command if the workdir holds no classifier.
  """
  from rsec.stealing.outputs import OUTPUT_MODES, output_settings
  from rsec.training.classifier import restore_classifier
  defence = dict(defence or {"name": "none"})
  dname = check_choice("defence", defence.get("name"), DEFENCES.names())
  dparams = {k: v for k, v in defence.items() if k in defence_settings(dname)}
  output = dict(output or {"mode": "probs"})
  oname = check_choice("output mode", output.pop("mode", None), OUTPUT_MODES.names())
  oparams = {k: v for k, v in output.items()
             if k in output_settings(oname)}
  check_choice("key_mode", key_mode, KEY_MODES)
  if not classifier_workdir:
    raise ValueError(f"classifier_workdir must name a train_classifier workdir (make one "
                     f"with `{TRAIN_COMMAND}`)")
  state, config = restore_classifier(classifier_workdir)
  input_shape = classifier_input_shape(classifier_workdir)
  return Victim(state.logits_fn(), input_shape, defence=dname, defence_params=dparams,
                output_mode=oname, output_params=oparams,
                key=jax.random.fold_in(jax.random.key(seed), 1), key_mode=key_mode,
                budget=budget, log_images=log_images, chunk=chunk,
                model_name=config.model.name)
