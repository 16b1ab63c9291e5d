"""The HTTP server in-process (FastAPI's TestClient) and as a real process, and ONNX export."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, make_rows, run_cli, write_csv
from textfit import Classifier, TrainConfig, train
from textfit.serve.app import Limits, create_app

FAST = dict(  # fine-tuned runs (pinned; test_fewshot.py serves and exports contrastive ones)
    method="finetune", epochs=5, batch_size=8, learning_rate=1e-2, precision="fp32", freeze_word_embeddings=False
)


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    single = train(
        TrainConfig(
            data=str(write_csv(d / "r.csv", make_rows(120))), model=tiny_model, output=str(d / "single"), **FAST
        )
    )
    rows = [(t, t.split()[0] + " same", y) for t, y in make_rows(60)]
    pair = train(
        TrainConfig(
            data=str(write_csv(d / "p.csv", rows, header=["sentence1", "sentence2", "label"])),
            model=tiny_model,
            output=str(d / "pair"),
            max_steps=3,
            **FAST,
        )
    )
    return {"single": single["folder"], "pair": pair["folder"]}


def client(run, **limits):
    from fastapi.testclient import TestClient

    return TestClient(create_app(Classifier.load(run), Limits(**limits), run))


def test_single_batch_and_pairs_match_predict(runs):
    texts = ["the film was good and lovely", "awful terrible room", "staff 好"]
    clf = Classifier.load(runs["single"])
    want = clf.predict(texts)
    with client(runs["single"]) as c:
        assert c.get("/ready").json() == {"status": "ready"}
        one = c.post("/predict", json={"inputs": texts[0]}).json()
        assert one[0]["label"] == want[0].label and abs(one[0]["score"] - want[0].score) < 1e-5
        assert [d["score"] for d in one] == sorted((d["score"] for d in one), reverse=True)
        many = c.post("/predict", json={"inputs": texts}).json()
        assert [m[0]["label"] for m in many] == [p.label for p in want]
        for m, p in zip(many, want):
            assert {d["label"]: d["score"] for d in m} == pytest.approx(p.scores, abs=1e-5)
        info = c.get("/info").json()
        assert info["labels"] == ["negative", "positive"] and info["pairs"] is False
        assert c.get("/health").json() == {"status": "ok"}
        assert "/predict" in c.get("/openapi.json").json()["paths"]
        assert "<form" in c.get("/").text
    pclf = Classifier.load(runs["pair"])
    with client(runs["pair"]) as c:
        got = c.post("/predict", json={"inputs": [["good film", "film same"], ["bad room", "room same"]]}).json()
        want = pclf.predict(["good film", "bad room"], ["film same", "room same"])
        assert [g[0]["label"] for g in got] == [p.label for p in want]
        assert c.post("/predict", json={"inputs": "just one text"}).status_code == 422


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 422),
        (json.dumps({"text": "wrong field"}).encode(), 422),
        (json.dumps({"inputs": 5}).encode(), 422),
        (json.dumps({"inputs": []}).encode(), 422),
        (json.dumps({"inputs": ["  "]}).encode(), 422),
        (json.dumps({"inputs": [["a", "b"]]}).encode(), 422),
        (json.dumps({"inputs": ["x"] * 9}).encode(), 413),
        (json.dumps({"inputs": "x" * 5000}).encode(), 413),
    ],
)
def test_bad_requests_get_4xx_and_server_keeps_serving(runs, body, status):
    with client(runs["single"], max_texts=8, max_body_bytes=4000) as c:
        r = c.post("/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert c.post("/predict", json={"inputs": "good"}).status_code == 200


def test_queue_full_is_429(runs):
    with client(runs["single"], max_queue=2) as c:
        assert c.post("/predict", json={"inputs": ["a", "b", "c"]}).status_code == 429
        assert c.post("/predict", json={"inputs": ["a", "b"]}).status_code == 200


def test_concurrent_requests_are_batched(runs):
    import httpx

    app = create_app(Classifier.load(runs["single"]), Limits(max_batch=64, max_wait_ms=50), runs["single"])

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(
                    *[c.post("/predict", json={"inputs": [f"good film {i}", "awful room"]}) for i in range(24)]
                )
        return rs

    rs = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    labels = {r.json()[1][0]["label"] for r in rs}
    assert len(labels) == 1  # the same text gets the same answer whatever batch it shared


def test_fuzz_never_5xx(runs):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )
    bodies = st.one_of(
        json_values.map(lambda v: {"inputs": v}),
        json_values,
        st.fixed_dictionaries({"inputs": st.lists(st.text(max_size=50), max_size=5)}),
    )
    with client(runs["single"], max_texts=8) as c:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(bodies)
        def check(body):
            r = c.post("/predict", json=body)
            assert r.status_code < 500, (body, r.text)

        check()
        assert c.post("/predict", json={"inputs": "good lovely"}).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_drains_on_sigterm(runs):
    """SIGTERM: the requests in flight are answered, and so is every request sent afterwards on one of
    32 keep-alive connections opened before it (with Connection: close); new connections are refused."""
    import http.client

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "textfit", "serve", runs["single"], "--port", str(port), "--max-wait-ms", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(url + "/ready", timeout=1).status == 200:
                    break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, (
                    proc.stderr.read() if proc.poll() is not None else "not ready"
                )
                time.sleep(0.25)
        body = json.dumps({"inputs": ["good film"] * 4})
        headers = {"content-type": "application/json"}
        idle = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(32)]
        for c in idle:  # each connection answered once, then kept open (HTTP/1.1 keep-alive)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            assert r.status == 200 and r.getheader("connection") != "close"
        results, after = [], []

        def post():
            req = urllib.request.Request(url + "/predict", data=body.encode(), headers=headers)
            results.append(urllib.request.urlopen(req, timeout=30).status)

        def post_on(c):
            try:
                c.request("POST", "/predict", body=body, headers=headers)
                r = c.getresponse()
                r.read()
                after.append((r.status, r.getheader("connection")))
            except OSError as e:
                after.append((type(e).__name__, None))

        threads = [threading.Thread(target=post) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.1)  # the requests are in flight, waiting for their batch
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the server has begun to drain
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        late = [threading.Thread(target=post_on, args=(c,)) for c in idle]
        for t in late:
            t.start()
        for t in threads + late:
            t.join(30)
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
        assert results == [200] * 6
        assert after == [(200, "close")] * 32
    finally:
        proc.kill()


def test_onnx_export_parity_and_backend(runs, tmp_path):
    from textfit.predict.export import export_onnx

    run = runs["single"]
    r = export_onnx(run, quantize="int8")
    assert r["files"] == ["model.onnx", "model.int8.onnx"]
    import onnx

    ops = [n.op_type for n in onnx.load(str(Path(r["folder"]) / "model.int8.onnx")).graph.node]
    layers = json.loads((Path(run) / "config.json").read_text())["num_hidden_layers"]
    # Every weight matrix of the encoder (query, key, value, output, two feed-forward) is int8; the
    # attention's own products (scores, weighted values) multiply activations and stay MatMul.
    assert ops.count("MatMulNBits") == 6 * layers and ops.count("MatMul") == 2 * layers
    assert r["parity"]["model.onnx"]["max_logit_diff"] < 1e-3 and r["parity"]["model.onnx"]["label_agreement"] == 1.0
    texts = [t for t, _ in make_rows(40, seed=3)]
    torch_labels = [p.label for p in Classifier.load(run, precision="fp32").predict(texts)]
    onnx = Classifier.load(run, backend="onnx")
    assert [p.label for p in onnx.predict(texts)] == torch_labels
    int8 = [p.label for p in Classifier.load(run, backend="onnx", quantize="int8").predict(texts)]
    assert sum(a == b for a, b in zip(int8, torch_labels)) >= 0.9 * len(texts)
    with client(run) as c:  # the server over the ONNX backend answers the same
        pass
    from fastapi.testclient import TestClient

    with TestClient(create_app(onnx, Limits(), run)) as c:
        got = c.post("/predict", json={"inputs": texts[:5]}).json()
        assert [g[0]["label"] for g in got] == torch_labels[:5]


def test_onnx_dynamic_int8_export(runs, tmp_path):
    from textfit.predict.export import export_onnx

    run = runs["single"]
    r = export_onnx(run, output=str(tmp_path / "onnx"), quantize="int8-dynamic")
    assert (
        r["files"] == ["model.onnx", "model.int8-dynamic.onnx"]
        and r["parity"]["model.int8-dynamic.onnx"]["label_agreement"] >= 0.95
    )
    texts = [t for t, _ in make_rows(40, seed=3)]
    torch_labels = [p.label for p in Classifier.load(run, precision="fp32").predict(texts)]
    got = [p.label for p in Classifier.load_onnx(run, quantize="int8-dynamic", folder=tmp_path / "onnx").predict(texts)]
    assert sum(a == b for a, b in zip(got, torch_labels)) >= 0.9 * len(texts)
    r = run_cli("predict", run, "--backend", "onnx", "--quantize", "int8-dynamic", "a text")
    assert (
        r.returncode == 2 and "no model.int8-dynamic.onnx" in r.stderr and "--quantize int8-dynamic' first" in r.stderr
    )
