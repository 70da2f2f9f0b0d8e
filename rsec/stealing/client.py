"""A served victim behind the same `query(x) -> outputs` interface as `Victim`.

Standard library only (urllib), so an attacker's code needs nothing beyond rsec's own
dependencies. 429 raises `BudgetExceededError`, other 4xx a `ValueError` carrying the
server's JSON message.
"""
from __future__ import annotations

import io as pyio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

from rsec.stealing.victim import BudgetExceededError


class RemoteVictim:
  """`query(x)` against `python -m experiments.serve_victim` at `url` with `api_key`."""

  def __init__(self, url: str, api_key: str, timeout: float = 120.0):
    self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout
    info = self.health()
    self.num_classes = int(info["num_classes"])
    self.input_shape = tuple(info["input_shape"])
    self.output_mode = info["output_mode"]

  def _request(self, path: str, data: bytes | None = None) -> bytes:
    req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                 headers={"X-API-Key": self.api_key,
                                          "Content-Type": "application/x-npy"})
    try:
      with urllib.request.urlopen(req, timeout=self.timeout) as r:
        return r.read()
    except urllib.error.HTTPError as e:
      try:
        message = json.loads(e.read())["error"]
      except Exception:  # noqa: BLE001 -- not our server's JSON
        message = e.reason
      if e.code == 429:
        raise BudgetExceededError(message) from None
      raise ValueError(f"the victim at {self.url} refused the request ({e.code}): "
                       f"{message}") from None

  def health(self) -> dict:
    return json.loads(self._request("/health"))

  def budget(self) -> dict:
    """{'used', 'limit', 'left'} for this API key."""
    return json.loads(self._request("/budget"))

  def query(self, x: np.ndarray) -> np.ndarray:
    """Outputs [B, K] for images x [B, *input_shape] (sent as float32 .npy)."""
    buf = pyio.BytesIO()
    np.save(buf, np.asarray(x, np.float32) if np.issubdtype(np.asarray(x).dtype, np.floating)
            else np.asarray(x), allow_pickle=False)
    return np.load(pyio.BytesIO(self._request("/query", buf.getvalue())), allow_pickle=False)


def start_server(workdir: str, overrides: list[str], timeout: float = 180.0,
                 cwd: str | None = None) -> tuple[subprocess.Popen, str]:
  """Runs `python -m experiments.serve_victim --workdir=WORKDIR *overrides` (e.g.
  '--config.classifier_workdir=DIR', '--config.port=0') in a subprocess and returns
  (process, url) once its /health answers. Its output goes to WORKDIR/server.log (an
  unread pipe would block the server once full). RuntimeError with the log if it exits
  or does not come up within `timeout` seconds. `cwd`: the repository root (default:
  the one this module is in)."""
  cwd = cwd or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  os.makedirs(workdir, exist_ok=True)
  info = os.path.join(workdir, "server.json")
  if os.path.exists(info):
    os.remove(info)  # an earlier server's address
  log_path = os.path.join(workdir, "server.log")
  with open(log_path, "w") as log:
    proc = subprocess.Popen([sys.executable, "-m", "experiments.serve_victim",
                             "--config=configs/serve_victim.py", f"--workdir={workdir}",
                             *overrides], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError("the server exited:\n" + open(log_path).read()[-3000:])
    if os.path.exists(info):
      url = json.load(open(info))["url"]
      try:
        urllib.request.urlopen(url + "/health", timeout=2).read()
        return proc, url
      except OSError:
        pass
    time.sleep(0.3)
  stop_server(proc)
  raise RuntimeError(f"the server did not come up in {timeout:.0f} s:\n"
                     + open(log_path).read()[-3000:])


def stop_server(proc: subprocess.Popen) -> None:
  """SIGTERM, then SIGKILL after 20 s."""
  proc.terminate()
  try:
    proc.wait(timeout=20)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
