"""What a client sends the server: the request bodies, their checks, and the limits.

    parsed = check_predict(req, clf, limits)   # (texts, pairs), or the JSON error response that refuses them

Every refusal is a JSON error in TEI's shape with a 4xx status: a client's mistake never reaches the
model, and never gets a 5xx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from textfit.predict.classifier import Classifier


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


class ExplainRequest(BaseModel):
    """POST /explain: one text (and its second text, for pair models); `label` to explain another label
    than the predicted one."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="the text to explain")
    text_pair: str | None = Field(None, description="the second text, for pair models")
    label: str | None = Field(None, description="the label to explain (default: the predicted one)")


@dataclass
class Limits:
    max_batch: int = 128  # texts per model call (sorted by length inside it)
    max_wait_ms: float = 5.0  # how long the worker waits to fill a batch
    max_queue: int = 1024  # texts waiting; beyond it, 429
    max_texts: int = 128  # texts in one request; beyond it, 413
    max_body_bytes: int = 1_000_000  # beyond it, 413
    max_chars: int = 100_000  # characters in one text; beyond it, 413
    timeout_s: float = 30.0  # per request; beyond it, 504


def error(status: int, message: str) -> Any:
    """A JSON error in TEI's shape: {"error": ..., "error_type": ...}."""
    from fastapi.responses import JSONResponse

    kind = {413: "Validation", 422: "Validation", 429: "Overloaded", 504: "Timeout"}.get(status, "Error")
    return JSONResponse({"error": message, "error_type": kind}, status)


def check_predict(req: PredictRequest, clf: Classifier, limits: Limits) -> Any:
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


def _too_deep(body: bytes) -> bool:
    """Whether parsing the body would exhaust Python's recursion limit (checked only for bodies with
    many brackets: the framework's parser would otherwise fail with a 500)."""

    try:
        json.loads(body)
    except RecursionError:
        return True
    except ValueError:
        pass  # not JSON: the framework answers 422
    return False


def _not_text(body: bytes) -> str | None:
    """Why a body is not text in the encoding JSON allows (UTF-8, or UTF-16/32 as json.loads detects them), or
    None: invalid bytes are the client's mistake, said as every other validation error is (422)."""
    encoding = json.detect_encoding(body)
    try:
        body.decode(encoding)
    except UnicodeDecodeError as e:
        return f"the body is not valid {encoding} (byte 0x{body[e.start]:02x} at offset {e.start}); send UTF-8 JSON"
    return None


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
        if body and (why := _not_text(body)):  # the framework would answer 400 for what the client sent
            return await error(422, why)(scope, receive, send)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def check_explain(req: ExplainRequest, clf: Classifier, limits: Limits) -> Any:
    """The request's text and pair, or the error response that refuses them."""
    if clf.pairs and req.text_pair is None:
        return error(422, "this model classifies sentence pairs: send text and text_pair")
    if not clf.pairs and req.text_pair is not None:
        return error(422, "this model classifies single texts, not pairs: send text alone")
    texts = [req.text] + ([req.text_pair] if req.text_pair is not None else [])
    if any(len(t) > limits.max_chars for t in texts):
        return error(413, f"a text over {limits.max_chars} characters")
    if any(not t.strip() for t in texts):
        return error(422, "empty text: an explanation needs some text")
    if req.label is not None and req.label not in clf.labels:
        return error(422, f"label {req.label!r}: not one of this run's labels ({', '.join(clf.labels)})")
    return req.text, req.text_pair
