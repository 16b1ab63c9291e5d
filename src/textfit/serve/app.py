"""`textfit serve RUN`: an HTTP server over the same prediction path as `textfit predict`.

    app = create_app(Classifier.load("runs/sst2"))   # FastAPI app, for tests and ASGI servers
    serve(Run.open("runs/sst2"), host="127.0.0.1", port=8000)   # uvicorn, until SIGTERM or Ctrl-C

POST /explain {"text": ...} answers each word's contribution to the prediction (see explain.py), from a
model of its own, loaded on the first such request (Captum's hooks on a model the batcher predicts with
at the same time would change the batcher's answers).
POST /predict takes Text Embeddings Inference's request body: {"inputs": "a text"},
{"inputs": ["a", "b"]} or, for pair models, {"inputs": [["premise", "hypothesis"], ...]}, and
answers, per input, every class's label and probability, best first (a single input gets one
list, a batch a list of lists, as TEI does). Concurrent requests are batched together: a queue
feeds one worker that takes up to `max_batch` texts, waiting at most `max_wait_ms` for more.
Limits answer with 413 (body or text count), 429 (queue full), 504 (request timeout), and 422
(malformed input), never 5xx. SIGTERM stops accepting connections, answers what is in flight and every
request sent afterwards on a connection already open (with `Connection: close`), then exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from textfit import models
from textfit.errors import UsageError
from textfit.predict.classifier import Classifier, TorchBackend
from textfit.run import Run
from textfit.serve.input import BodyLimit, ExplainRequest, Limits, PredictRequest, check_explain, check_predict, error

PAGE = Path(__file__).with_name("page.html")


class Score(BaseModel):
    label: str
    score: float


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


def _scored(clf: Classifier, p: Any, chosen: Any) -> list[dict[str, Any]]:
    """Every class with its score, the predicted one first (it is the most probable one unless a
    tuned threshold decides); multi-label: the labels over their thresholds first; regression: the value."""
    if clf.task == "regression":
        return [{"label": clf.labels[0], "score": float(p[0])}]
    rows = [{"label": clf.labels[k], "score": float(p[k])} for k in range(len(p))]
    on = set(np.flatnonzero(chosen)) if clf.task == "multi-label" else {int(chosen)}
    return sorted(rows, key=lambda d: (clf.labels.index(d["label"]) not in on, -d["score"]))


def _info(clf: Classifier, limits: Limits, run: Run | None) -> dict[str, Any]:
    m = clf.manifest
    dtype = getattr(clf.backend, "dtype", None)
    return {
        "run": str(run) if run is not None else "",
        "base_model": m.base_model,
        "task": clf.task,
        "labels": clf.labels,
        "threshold": clf.threshold,
        "long_text": dataclasses.asdict(m.long_text),
        "max_length": m.max_length,
        "pairs": clf.pairs,
        "precision": str(dtype or "fp32").replace("torch.", ""),
        "backend": clf.backend_name,
        "backend_choice": clf.backend_choice,
        "max_batch": limits.max_batch,
        "max_texts_per_request": limits.max_texts,
        "textfit_version": m.textfit_version,
    }


def _no_explanations(clf: Classifier, run: Run | None, explainer: Any) -> str | None:
    """Why /explain cannot answer on this server (None: it can)."""
    if explainer is not None:
        return None
    if run is None or not isinstance(clf.backend, TorchBackend):
        return "explanations need the PyTorch backend: start 'textfit serve' with --backend torch to get them"
    return models.explainable(run)


def create_app(clf: Classifier, limits: Limits | None = None, run: Run | str | Path = "", explainer: Any = None) -> Any:
    """The app; `explainer` (an `explain.Explainer`) answers /explain, else one is loaded from `run` (a `Run`,
    or its folder: the classifier's own `Run` when it names the same folder, else opened here) on the first
    request (PyTorch backend only). Without `run`, no explanations."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse

    limits = limits or Limits()
    opened = _run_of(clf, run)
    state: dict[str, Any] = {"ready": False}
    state_lock = threading.Lock()

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
        parsed = check_predict(req, clf, limits)
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

    @app.post("/explain", responses={400: {"description": "no explanations with this backend"}})
    async def explain(req: ExplainRequest):
        parsed = check_explain(req, clf, limits)
        if not isinstance(parsed, tuple):
            return parsed
        if (why := _no_explanations(clf, opened, explainer)) is not None:
            return error(400, why)
        try:
            ex = await asyncio.wait_for(asyncio.to_thread(_explainer), limits.timeout_s)
            text, pair = parsed
            answer = await asyncio.wait_for(asyncio.to_thread(ex.explain, text, pair, req.label), limits.timeout_s)
        except asyncio.TimeoutError:
            return error(504, f"no explanation within {limits.timeout_s:g} s")
        except UsageError as e:
            return error(422, str(e))
        return {"text": req.text, **answer.as_dict()}

    def _explainer() -> Any:
        with state_lock:
            if "explainer" not in state:
                from textfit.predict.explain import Explainer

                if explainer is not None:
                    state["explainer"] = explainer
                elif opened is not None:  # else _no_explanations has refused the request
                    state["explainer"] = Explainer.load(opened)
            return state["explainer"]

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
        return {**_info(clf, limits, opened), "explain": _no_explanations(clf, opened, explainer) is None}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return PAGE.read_text(encoding="utf-8")

    return app


def _run_of(clf: Classifier, run: Run | str | Path) -> Run | None:
    """The server's run: None for none, else the classifier's `Run` where it is that folder (no second read of
    its manifest), else the folder opened."""
    if isinstance(run, Run):
        return run
    if isinstance(run, str) and not run:
        return None
    if clf.run is not None and Path(run).resolve() == clf.run.path.resolve():
        return clf.run
    return Run.open(run)


class Closing:
    """ASGI middleware: once `draining` is set (SIGTERM), every answer carries `Connection: close`, so a
    client learns to open no further request on its connection (uvicorn closes it after the answer)."""

    def __init__(self, app: Any, draining: threading.Event):
        self.app, self.draining = app, draining

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and self.draining.is_set():
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


def draining_server(config: Any, draining: threading.Event) -> Any:
    """uvicorn's Server with a drain before its graceful shutdown.

    uvicorn (0.55, measured) answers SIGTERM by closing every idle keep-alive connection at once: a
    request a client sends on one a moment later gets a reset, no HTTP answer (16 of 16 clients in the
    trust catalogue). Here the listening socket closes first (no new connections), then each open
    connection lives out its keep-alive time (`timeout_keep_alive`) as it would have without the
    signal: a request on it is served and answered with `Connection: close`, which closes it. When no
    connection is left (or that time is up, or a second signal forces the exit), uvicorn's own
    shutdown finishes the requests in flight and runs the lifespan's end. uvicorn has no option for
    this, so the subclass stays."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            draining.set()
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            loop = asyncio.get_running_loop()
            end = loop.time() + self.config.timeout_keep_alive
            while self.server_state.connections and not self.force_exit and loop.time() < end:
                await asyncio.sleep(0.05)
            await super().shutdown(sockets)

    return DrainingServer(config)


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
    run: Run | str,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    precision: str = "auto",
    quantize: str | None = None,
    backend: str = "auto",
    adapter: bool = False,
    device: str = "auto",
) -> None:
    import uvicorn

    run = Run.open(run)
    clf = Classifier.load(run, precision=precision, quantize=quantize, backend=backend, adapter=adapter, device=device)
    if clf.backend_choice:
        print(f"textfit: backend {clf.backend_name}: {clf.backend_choice}", flush=True)
    app = create_app(clf, limits, run)
    draining = threading.Event()  # set on SIGTERM: every answer from then on closes its connection
    app.add_middleware(Closing, draining=draining)
    print(f"textfit: serving {run} on http://{host}:{port} (page at /, API docs at /docs)", flush=True)
    # SIGTERM: no new connections; the open ones are answered (Connection: close), then what is in flight.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
    server = draining_server(config, draining)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise SystemExit(3)  # uvicorn's own exit code when it could not start
