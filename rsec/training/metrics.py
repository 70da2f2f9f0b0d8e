"""Metric writers: `metrics.jsonl` (one JSON object per logged step) and TensorBoard events."""
from __future__ import annotations

import json
import math
import os
from typing import Mapping

import jax


_OPENED = [0]  # event files this process has opened


class EventWriter:
  """A TensorBoard event file written synchronously: every row of scalars is on disk
  (flushed) when `write_scalars` returns. (tensorboardX's SummaryWriter queues events
  for a background thread, so a killed run could lose events whose metrics.jsonl row
  and checkpoint are already on disk, and its resume would never write them again.)"""

  def __init__(self, directory: str):
    import socket
    import time
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import RecordWriter
    os.makedirs(directory, exist_ok=True)
    # A unique name: a file named only by the second could collide with one that
    # truncate_events rewrote in the same second.
    _OPENED[0] += 1
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{_OPENED[0]}")
    self._pb = event_pb2
    self._file = RecordWriter(os.path.join(directory, name))
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event) -> None:
    self._file.write(event.SerializeToString())
    self._file.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    import time
    from tensorboardX.proto import summary_pb2
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._write(self._pb.Event(wall_time=time.time(), step=step,
                               summary=summary_pb2.Summary(value=values)))

  def close(self) -> None:
    self._file.close()


class MetricWriter:
  """Appends scalars to `<workdir>/metrics.jsonl` and TensorBoard event files.

  Only process 0 writes, so multi-host runs produce one log. On resume, rows and
  TensorBoard events logged after the checkpoint the run restarted from are dropped
  (`truncate_after`), so the logs of an interrupted run read like an uninterrupted one's.
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb_dir = os.path.join(workdir, "tensorboard") if tensorboard else None
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)

  def truncate_after(self, step: int) -> None:
    """Drops rows and events with step > `step` (written after the checkpoint we resume
    from)."""
    if not self.enabled:
      return
    if self.tb_dir is not None and os.path.isdir(self.tb_dir):
      self._close_tb()
      truncate_events(self.tb_dir, step)
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      rows = [l for l in f if l.strip()]
    keep = []
    for line in rows:
      try:
        if json.loads(line)["step"] <= step:
          keep.append(line)
      except (ValueError, KeyError):  # a half-written last line from a crash
        pass
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, self.path)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({k: _jsonable(v) for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self.tb_dir is not None:
      if self._tb is None:
        self._tb = EventWriter(self.tb_dir)
      self._tb.write_scalars(int(step), scalars)

  def _close_tb(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def close(self) -> None:
    self._close_tb()


def read_event_records(path: str) -> list[bytes]:
  """The records (serialised Event protos) of one TensorBoard event file: TFRecord
  framing (u64 length, u32 crc, data, u32 crc). A torn last record is dropped."""
  import struct
  out = []
  with open(path, "rb") as f:
    while (header := f.read(12)) and len(header) == 12:
      (length,) = struct.unpack("<Q", header[:8])
      data = f.read(length)
      if len(data) < length or len(f.read(4)) < 4:
        break
      out.append(data)
  return out


def truncate_events(tb_dir: str, step: int) -> None:
  """Rewrites the event files in `tb_dir` as one file without the summaries of steps
  > `step` (TensorBoard would otherwise show a resumed run's repeated steps twice).
  The new file replaces the old ones atomically (written, then renamed, then the old
  ones removed)."""
  from tensorboardX.proto import event_pb2
  from tensorboardX.record_writer import RecordWriter
  files = sorted(f for f in os.listdir(tb_dir) if "tfevents" in f and not f.startswith("."))
  if not files:
    return
  keep = []
  for name in files:
    for data in read_event_records(os.path.join(tb_dir, name)):
      event = event_pb2.Event.FromString(data)
      if not event.HasField("summary") or event.step <= step:
        keep.append(data)
  tmp = os.path.join(tb_dir, ".tmp-" + files[0])
  writer = RecordWriter(tmp)
  for data in keep:
    writer.write(data)
  writer.flush()
  writer.close()
  os.replace(tmp, os.path.join(tb_dir, files[0]))
  for name in files[1:]:
    os.remove(os.path.join(tb_dir, name))


def _jsonable(v) -> float | None:
  v = float(v)
  return v if math.isfinite(v) else None
