"""The server against hostile and broken input: no 5xx for anything a client sends, and one request's
failure never fails another's (fuzzing in-process with Starlette's TestClient, and a chunked body
against a real server process)."""

from __future__ import annotations

import http.client
import json
import random
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, make_rows, write_csv
from textfit import Classifier, TrainConfig, train
from textfit.serve.app import Limits, create_app

FAST = dict(epochs=2, batch_size=8, learning_rate=1e-2, precision="fp32", freeze_word_embeddings=False)
POISON = [
    b'{"inputs": "\\ud800"}',  # a lone surrogate, escaped
    b'{"inputs": ["fine", "\\udfff tail"]}',
    b'{"inputs": "\xed\xa0\x80"}',  # a lone surrogate's raw bytes (not UTF-8)
    b'{"inputs": NaN}',
    b'{"inputs": ["a", Infinity]}',
    b'{"inputs": "ok", "truncate": -Infinity}',
    b'{"inputs": 1e999}',
    b'{"inputs": "ok", "raw_scores": 1e999}',
    b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # deeper than the JSON parser's recursion limit
    b"[" * 100000,
    b'{"inputs": "\\u0000"}',
    b'{"inputs": ["x", ["y", "z"]]}',
    b'{"inputs": [[]]}',
    b'{"inputs": {"text": "a"}}',
    b'{"inputs": "a", "extra": 1}',
    b"",
    b"null",
    b'"just a string"',
    b"\xff\xfe\x00",
]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    return train(
        TrainConfig(data=str(write_csv(d / "r.csv", make_rows(80))), model=tiny_model, output=str(d / "run"), **FAST)
    )["folder"]


def _random_body(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if kind == 1:
        return rng.choice(POISON)
    if kind == 2:  # a valid body with a poisoned text somewhere
        texts = ["the room was good"] * rng.randrange(1, 4)
        texts.insert(rng.randrange(len(texts) + 1), rng.choice(["\ud800", "\udc00x", "a\udbff"]))
        return json.dumps({"inputs": texts}).encode("utf-8", "surrogatepass")
    if kind == 3:  # numbers JSON cannot carry, anywhere
        value = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
        return rng.choice(
            [f'{{"inputs": {value}}}', f'{{"inputs": ["a", {value}]}}', f'{{"inputs": "a", "truncate": {value}}}']
        ).encode()
    if kind == 4:  # structure

        def junk(depth: int):
            makers = [
                rng.random,
                lambda: "txt " * rng.randrange(3),
                lambda: None,
                lambda: True,
                lambda: [junk(depth + 1) for _ in range(rng.randrange(3))],
                lambda: {str(rng.randrange(9)): junk(depth + 1)},
            ]
            return makers[rng.randrange(6) if depth < 4 else rng.randrange(4)]()

        return json.dumps({"inputs": junk(0)}).encode()
    return json.dumps({"inputs": rng.choice(["good film", ["a", "b"], "x" * 200_001, ["t"] * 200, "", "   "])}).encode()


def test_fuzz_no_5xx(run):
    from fastapi.testclient import TestClient

    rng = random.Random(0)
    statuses = {}
    with TestClient(create_app(Classifier.load(run), Limits(max_wait_ms=1), run)) as client:
        bodies = POISON + [_random_body(rng) for _ in range(1500)]
        for body in bodies:
            r = client.post(
                "/predict", content=body, headers={"content-type": rng.choice(["application/json", "text/plain"])}
            )
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (body[:200], r.status_code, r.text[:300])
            r.json()  # every answer is JSON
        assert client.get("/health").status_code == 200
    assert statuses.get(200, 0) > 50 and statuses.get(422, 0) > 200, statuses


def test_poisoned_requests_do_not_fail_their_batch(run):
    """Good and poisoned requests at once, gathered into shared batches: every good one answers 200."""
    from fastapi.testclient import TestClient

    good = [json.dumps({"inputs": ["the room was good", "awful"]}).encode()] * 40
    bad = [json.dumps({"inputs": ["fine", "\ud800"]}).encode("utf-8", "surrogatepass"), b'{"inputs": NaN}'] * 20
    bodies = [b for pair in zip(good, bad) for b in pair]
    with TestClient(create_app(Classifier.load(run), Limits(max_wait_ms=50), run)) as client:
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda b: client.post("/predict", content=b, headers={"content-type": "application/json"}), bodies
                )
            )
    for body, r in zip(bodies, answers):
        if body in good:
            assert r.status_code == 200 and len(r.json()) == 2, r.text
        else:
            assert r.status_code == 422, r.text


def test_a_batch_that_fails_is_answered_request_by_request(run, monkeypatch):
    """Even a failure the validation did not foresee stays with its own request."""
    from fastapi.testclient import TestClient

    clf = Classifier.load(run)
    real = clf.predict_proba

    def fragile(texts, pairs=None, batch_size=64):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("model failure")
        return real(texts, pairs, batch_size)

    monkeypatch.setattr(clf, "predict_proba", fragile)
    with TestClient(create_app(clf, Limits(max_wait_ms=100), run), raise_server_exceptions=False) as client:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda t: client.post("/predict", json={"inputs": t}), ["good film", "BOOM", "bad film", "nice"] * 4
                )
            )
    codes = [r.status_code for r in answers]
    assert codes.count(200) == 12, codes


def test_chunked_body_over_the_limit_on_a_real_server(run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "textfit", "serve", run, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(300):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        chunks = (b'{"inputs": "' + b"a" * 65536 for _ in range(50))  # 3 MB, no Content-Length
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/predict", body=chunks, headers={"content-type": "application/json"}, encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 413, r.read()[:200]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"inputs": "a good film"}).encode()
        conn.request(
            "POST",
            "/predict",
            body=iter([body[:5], body[5:]]),
            headers={"content-type": "application/json"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 200  # a small chunked body is read whole
    finally:
        proc.terminate()
        proc.wait(30)
