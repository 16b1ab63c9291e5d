"""`textfit serve RUN`: an HTTP server over the same prediction path as `textfit predict`.

    app = create_app(Classifier.load("runs/sst2"))   # FastAPI app, for tests and ASGI servers
    serve("runs/sst2", host="127.0.0.1", port=8000)   # uvicorn, until SIGTERM or Ctrl-C

POST /predict takes Text Embeddings Inference's request body: {"inputs": "a text"},
{"inputs": ["a", "b"]} or, for pair models, {"inputs": [["premise", "hypothesis"], ...]}, and
answers, per input, every class's label and probability, best first (a single input gets one
list, a batch a list of lists, as TEI does). Concurrent requests are batched together: a queue
feeds one worker that takes up to `max_batch` texts, waiting at most `max_wait_ms` for more.
Limits answer with 413 (body or text count), 429 (queue full), 504 (request timeout), and 422
(malformed input), never 5xx; SIGTERM stops accepting, answers what is in flight, then exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import UsageError
from .predict import Classifier

PAGE = Path(__file__).with_name("page.html")


class PredictRequest(BaseModel):
    """Text Embeddings Inference's /predict body."""

    model_config = ConfigDict(extra="forbid")
    inputs: str | list[str] | list[tuple[str, str]] = Field(
        description="one text, a list of texts, or (pair models) a list of [text, text_pair] pairs"
    )
    truncate: bool = Field(
        True, description="accepted for TEI compatibility; texts are always truncated to the model's max length"
    )
    raw_scores: bool = Field(False, description="accepted for TEI compatibility; scores are always probabilities")
    truncation_direction: str = Field("right", description="accepted for TEI compatibility")


class Score(BaseModel):
    label: str
    score: float


@dataclass
class Limits:
    max_batch: int = 128  # texts per model call (sorted by length inside it)
    max_wait_ms: float = 5.0  # how long the worker waits to fill a batch
    max_queue: int = 1024  # texts waiting; beyond it, 429
    max_texts: int = 128  # texts in one request; beyond it, 413
    max_body_bytes: int = 1_000_000  # beyond it, 413
    max_chars: int = 100_000  # characters in one text; beyond it, 413
    timeout_s: float = 30.0  # per request; beyond it, 504


@dataclass
class _Job:
    texts: list[str]
    pairs: list[str] | None
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """Collects the texts of concurrent requests into model-sized batches, one model call at a time."""

    def __init__(self, clf: Classifier, limits: Limits):
        self.clf, self.limits = clf, limits
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.waiting = 0  # texts queued, not yet taken
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    def submit(self, texts: list[str], pairs: list[str] | None) -> asyncio.Future:
        if self.waiting + len(texts) > self.limits.max_queue:
            raise OverflowError
        fut = asyncio.get_running_loop().create_future()
        self.waiting += len(texts)
        self.queue.put_nowait(_Job(texts, pairs, fut))
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            n = len(jobs[0].texts)
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while n < self.limits.max_batch:
                try:
                    job = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                n += len(job.texts)
            self.waiting -= n
            jobs = [j for j in jobs if not j.future.done()]  # a timed-out request needs no answer
            if not jobs:
                continue
            try:
                await self._answer(jobs)
            except Exception:  # noqa: BLE001 - one request's failure must not fail the others: each alone
                for j in jobs:
                    try:
                        await self._answer([j])
                    except Exception as e:  # noqa: BLE001
                        if not j.future.done():
                            j.future.set_exception(e)

    async def _answer(self, jobs: list[_Job]) -> None:
        texts = [t for j in jobs for t in j.texts]
        pairs = [p for j in jobs for p in (j.pairs or [])] if jobs[0].pairs is not None else None
        # One worker thread: the event loop keeps accepting requests meanwhile.
        probs = await asyncio.get_running_loop().run_in_executor(None, self.clf.predict_proba, texts, pairs, 64)
        start = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(probs[start : start + len(j.texts)])
            start += len(j.texts)


def error(status: int, message: str) -> Any:
    """A JSON error in TEI's shape: {"error": ..., "error_type": ...}."""
    from fastapi.responses import JSONResponse

    kind = {413: "Validation", 422: "Validation", 429: "Overloaded", 504: "Timeout"}.get(status, "Error")
    return JSONResponse({"error": message, "error_type": kind}, status)


def _inputs(req: PredictRequest, clf: Classifier, limits: Limits) -> Any:
    """The request's texts and second texts, or the error response that refuses them."""
    items = [req.inputs] if isinstance(req.inputs, str) else list(req.inputs)
    if not items:
        return error(422, "inputs is empty: give at least one text")
    if len(items) > limits.max_texts:
        return error(413, f"{len(items)} inputs; at most {limits.max_texts} per request")
    is_pair = [isinstance(x, (tuple, list)) for x in items]
    if any(is_pair) and not all(is_pair):
        return error(422, "mix of texts and pairs: send either texts or [text, text_pair] pairs")
    if clf.pairs and not all(is_pair):
        return error(422, "this model classifies sentence pairs: send inputs as [[text, text_pair], ...]")
    if not clf.pairs and any(is_pair):
        return error(422, "this model classifies single texts, not pairs: send a text or a list of texts")
    texts: list[Any] = [x[0] if p else x for x, p in zip(items, is_pair)]
    pairs: list[Any] | None = [x[1] for x in items] if clf.pairs else None
    if any(len(t) > limits.max_chars for t in texts + (pairs or [])):
        return error(413, f"a text over {limits.max_chars} characters")
    if any(not t.strip() for t in texts + (pairs or [])):
        return error(422, "empty text: every input needs some text")
    for i, t in enumerate(texts + (pairs or [])):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            return error(
                422, f"input {i % len(texts)}: not valid Unicode (a lone surrogate {t[e.start]!a}); send UTF-8 text"
            )
    return texts, pairs


def _scored(clf: Classifier, p: Any, chosen: Any) -> list[dict[str, Any]]:
    """Every class with its score, the predicted one first (it is the most probable one unless a
    tuned threshold decides); multi-label: the labels over their thresholds first; regression: the value."""
    if clf.task == "regression":
        return [{"label": clf.labels[0], "score": float(p[0])}]
    rows = [{"label": clf.labels[k], "score": float(p[k])} for k in range(len(p))]
    on = set(np.flatnonzero(chosen)) if clf.task == "multi-label" else {int(chosen)}
    return sorted(rows, key=lambda d: (clf.labels.index(d["label"]) not in on, -d["score"]))


def _info(clf: Classifier, limits: Limits, run: str) -> dict[str, Any]:
    m = clf.manifest
    dtype = getattr(clf.backend, "dtype", None)
    return {
        "run": run,
        "base_model": m.base_model,
        "task": clf.task,
        "labels": clf.labels,
        "threshold": clf.threshold,
        "long_text": dataclasses.asdict(m.long_text),
        "max_length": m.max_length,
        "pairs": clf.pairs,
        "precision": str(dtype or "fp32").replace("torch.", ""),
        "max_batch": limits.max_batch,
        "max_texts_per_request": limits.max_texts,
        "textfit_version": m.textfit_version,
    }


def _too_deep(body: bytes) -> bool:
    """Whether parsing the body would exhaust Python's recursion limit (checked only for bodies with
    many brackets: the framework's parser would otherwise fail with a 500)."""
    import json

    try:
        json.loads(body)
    except RecursionError:
        return True
    except ValueError:
        pass  # not JSON: the framework answers 422
    return False


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, whether it came with a
    Content-Length or in chunks (the body is read here, bounded, then handed on)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_big = length is not None and (not length.isdigit() or int(length) > self.limit)
        body, more = b"", not too_big
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            too_big = len(body) > self.limit
            if too_big:
                break
        if too_big:
            return await error(413, f"request body over {self.limit} bytes")(scope, receive, send)
        if body.count(b"[") + body.count(b"{") > 500 and _too_deep(body):
            return await error(422, "the JSON body is nested too deeply")(scope, receive, send)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def create_app(clf: Classifier, limits: Limits | None = None, run: str = "") -> Any:
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse

    limits = limits or Limits()
    state: dict[str, Any] = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(clf, limits)
        batcher.start()
        state["batcher"] = batcher
        try:  # /ready answers 200 only once a real prediction has gone through
            probe = (["ready?"], ["ready?"]) if clf.pairs else (["ready?"], None)
            await asyncio.wait_for(batcher.submit(*probe), limits.timeout_s)
            state["ready"] = True
        except Exception as e:  # noqa: BLE001
            state["error"] = str(e)
        yield
        await batcher.stop()

    app = FastAPI(
        title="textfit",
        version="1",
        lifespan=lifespan,
        description="Text classification with a model fine-tuned by textfit. POST /predict takes TEI's request body.",
    )

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # Pydantic's own error echoes the input, which may hold NaN or Infinity that JSON cannot carry.
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.post(
        "/predict",
        response_model=list[Score] | list[list[Score]],
        responses={
            413: {"description": "too large"},
            429: {"description": "queue full"},
            504: {"description": "timed out"},
        },
    )
    async def predict(req: PredictRequest):
        single = isinstance(req.inputs, str)
        parsed = _inputs(req, clf, limits)
        if not isinstance(parsed, tuple):
            return parsed
        texts, pairs = parsed
        try:
            fut = state["batcher"].submit(texts, pairs)
        except OverflowError:
            return error(429, "too many texts waiting; retry shortly")
        try:
            probs = await asyncio.wait_for(asyncio.shield(fut), limits.timeout_s)
        except asyncio.TimeoutError:
            fut.cancel()
            return error(504, f"no answer within {limits.timeout_s:g} s")
        except UsageError as e:
            return error(422, str(e))
        out = [_scored(clf, p, c) for p, c in zip(probs, clf.decide(probs))]
        return out[0] if single else out

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if state["ready"]:
            return {"status": "ready"}
        return JSONResponse({"status": "not ready", "error": state.get("error", "starting")}, 503)

    @app.get("/info")
    async def info():
        return _info(clf, limits, run)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return PAGE.read_text(encoding="utf-8")

    return app


def check_port(host: str, port: int) -> None:
    """The address can be bound now (checked before the model loads, so a busy port fails in a second)."""
    import errno
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as e:
        state = "is already in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror or e})"
        raise UsageError(f"--port {port}: {host}:{port} {state}; pass another --port (or --host)") from None


def serve(
    run: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    precision: str = "auto",
    quantize: str | None = None,
    backend: str = "torch",
    adapter: bool = False,
    device: str = "auto",
) -> None:
    import uvicorn

    clf = Classifier.load(run, precision=precision, quantize=quantize, backend=backend, adapter=adapter, device=device)
    app = create_app(clf, limits, run)
    print(f"textfit: serving {run} on http://{host}:{port} (page at /, API docs at /docs)", flush=True)
    # uvicorn answers SIGTERM by refusing new connections and finishing the requests in flight.
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
