"""The victim over HTTP (FastAPI + uvicorn, the `serve` extra), on 127.0.0.1 only.

API (every error is a JSON body {"error": "..."}; a refused request is not charged):
- `GET /health` -> JSON: status, num_classes, input_shape, output_mode, output_dtype,
  defence, key_mode, max_batch, max_body_bytes.
- `GET /budget` (header `X-API-Key`) -> JSON: used, limit, left for that key.
- `POST /query` (header `X-API-Key`, body: one `.npy` file (`np.save`, no pickles) of
  float images [B, *input_shape] in [0, 1]) -> a `.npy` body with the outputs [B, K]
  (float32; int32 for 'ranking'), headers `X-Queries-Used` / `X-Queries-Left`.
  Status codes: 401 missing or unknown key; 413 body over `max_body_bytes` or batch over
  `max_batch`; 400 a body that is not an .npy array; 422 wrong shape, dtype, range or
  NaN; 429 budget exhausted (nothing answered).

Per-key budgets are counted in images and kept in `budgets.json` in the workdir, written
atomically after each answer and before it is sent: a restarted server neither forgets
nor double-counts. Answered requests are logged to `queries.jsonl` (and the images to
`queries/` with `log_images`).
"""
# No `from __future__ import annotations`: FastAPI reads the handlers' annotations
# (`request: Request`) at run time, and Request is imported inside make_app.
import io as pyio
import json
import os
import threading
import time
from typing import Any

import numpy as np

from rsec import io
from rsec.stealing.victim import BudgetExceededError, QueryBudget, Victim, check_images


def parse_api_keys(spec: str) -> dict[str, int]:
  """'alice=10000,bob=500' -> {'alice': 10000, 'bob': 500} (ValueError naming the entry)."""
  keys = {}
  for part in [p.strip() for p in str(spec).split(",") if p.strip()]:
    name, sep, budget = part.partition("=")
    if not sep or not name.strip() or not budget.strip().isdigit():
      raise ValueError(f"config.api_keys entry {part!r} must be KEY=BUDGET (a whole number "
                       f"of images), e.g. 'attacker=10000'")
    if name.strip() in keys:
      raise ValueError(f"config.api_keys names {name.strip()!r} twice")
    keys[name.strip()] = int(budget)
  if not keys:
    raise ValueError("config.api_keys must name at least one KEY=BUDGET")
  return keys


class BudgetBook:
  """Per-API-key `QueryBudget`s persisted in `path`, plus the victim's query stream
  position (for key_mode 'index'), shared by every key."""

  def __init__(self, path: str, limits: dict[str, int]):
    self.path = path
    saved = io.read_json(path) if os.path.exists(path) else {"used": {}, "stream": 0}
    self.budgets = {k: QueryBudget(v, saved["used"].get(k, 0)) for k, v in limits.items()}
    self.stream = QueryBudget(None, saved.get("stream", 0))
    self._lock = threading.Lock()

  def save(self) -> None:
    with self._lock:
      io.write_json_atomic(self.path, {
          "used": {k: b.answered for k, b in self.budgets.items()},
          "stream": self.stream.answered})


class _HTTPError(Exception):
  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


def make_app(victim: Victim, workdir: str, api_keys: dict[str, int], *, max_batch: int = 1000,
             max_body_bytes: int = 64 << 20, log_images: bool = False):
  """The FastAPI app serving `victim` (see the module docstring)."""
  from fastapi import FastAPI, Request
  from fastapi.responses import JSONResponse, Response
  from starlette.concurrency import run_in_threadpool

  book = BudgetBook(os.path.join(workdir, "budgets.json"), api_keys)
  log_lock = threading.Lock()
  app = FastAPI(title="rsec victim")

  @app.exception_handler(_HTTPError)
  async def _error(request, exc: _HTTPError):
    return JSONResponse({"error": exc.message}, status_code=exc.status)

  def budget_of(request) -> tuple[str, QueryBudget]:
    key = request.headers.get("x-api-key")
    if not key:
      raise _HTTPError(401, "missing API key: send it in the X-API-Key header")
    if key not in book.budgets:
      raise _HTTPError(401, "unknown API key")
    return key, book.budgets[key]

  @app.get("/health")
  async def health():
    return {"status": "ok", "num_classes": victim.num_classes,
            "input_shape": list(victim.input_shape), "output_mode": victim.output.name,
            "output_dtype": victim.output.dtype, "defence": victim.defence.name,
            "key_mode": victim.key_mode, "max_batch": max_batch,
            "max_body_bytes": max_body_bytes}

  @app.get("/budget")
  async def budget(request: Request):
    _, b = budget_of(request)
    return {"used": b.answered, "limit": b.limit, "left": b.limit - b.answered}

  @app.post("/query")
  async def query(request: Request):
    key, b = budget_of(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
      raise _HTTPError(413, f"body of {declared} bytes is over the limit of {max_body_bytes}")
    body = bytearray()
    async for part in request.stream():
      body += part
      if len(body) > max_body_bytes:
        raise _HTTPError(413, f"body is over the limit of {max_body_bytes} bytes")
    try:
      x = np.load(pyio.BytesIO(bytes(body)), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 -- any parse failure is the client's
      raise _HTTPError(400, f"the body must be one .npy array (np.save): {e}") from None
    if not isinstance(x, np.ndarray):
      raise _HTTPError(400, "the body must be one .npy array, not an .npz archive")
    if x.ndim >= 1 and x.shape[0] > max_batch:
      raise _HTTPError(413, f"batch of {x.shape[0]} images is over the limit of {max_batch}")
    try:
      x = check_images("images", x, victim.input_shape)
    except ValueError as e:
      raise _HTTPError(422, str(e)) from None

    def answer():
      with b.charge(len(x)), book.stream.charge(len(x)) as first:
        out = victim.respond(x, first, fields=("outputs",))["outputs"]
        with log_lock:
          record = {"time": time.time(), "api_key": key, "n": len(x), "first_index": first}
          with open(os.path.join(workdir, "queries.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
          if log_images:
            np.save(os.path.join(workdir, "queries", f"{first:012d}.npy"), x)
      book.save()   # after both budgets committed: only answered images are on disk
      return out

    try:
      out = await run_in_threadpool(answer)
    except BudgetExceededError as e:
      raise _HTTPError(429, str(e)) from None
    buf = pyio.BytesIO()
    np.save(buf, np.asarray(out), allow_pickle=False)
    return Response(buf.getvalue(), media_type="application/x-npy",
                    headers={"X-Queries-Used": str(b.answered),
                             "X-Queries-Left": str(b.limit - b.answered)})

  if log_images:
    os.makedirs(os.path.join(workdir, "queries"), exist_ok=True)
  return app


def serve(app: Any, workdir: str, port: int = 0) -> None:
  """Serves `app` on 127.0.0.1:`port` (0: a free port) until interrupted; writes the
  address to `workdir/server.json` once the socket is bound."""
  import socket

  import uvicorn
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind(("127.0.0.1", port))
  except OSError as e:
    raise ValueError(f"config.port={port}: cannot listen on 127.0.0.1:{port} ({e.strerror})") from None
  port = sock.getsockname()[1]
  io.write_json_atomic(os.path.join(workdir, "server.json"),
                       {"url": f"http://127.0.0.1:{port}", "port": port, "pid": os.getpid()})
  print(f"serving the victim on http://127.0.0.1:{port} (workdir {workdir})", flush=True)
  uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
