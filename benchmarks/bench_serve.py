"""Load test of `textfit serve` on loopback: requests/s and latency at a few concurrency levels.

    python benchmarks/bench_serve.py                  # fine-tunes a quick SST-2 run first
    python benchmarks/bench_serve.py --run runs/sst2 --concurrency 1,8,32 --requests 400

Each request carries one SST-2 dev sentence (and, in a second round, 16 of them). The server runs in its own process on 127.0.0.1;
the client is bounded (a fixed number of requests per level) and stops by itself. For
comparison, the same texts through the batch-prediction path (Classifier.predict_proba) in texts/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


async def level(url: str, texts: list[str], concurrency: int, n: int, per_request: int = 1) -> dict:
    import httpx

    latencies, errors, statuses = [], 0, {}
    queue = list(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            i = queue.pop()
            t = time.perf_counter()
            try:
                body = texts[i % len(texts)] if per_request == 1 else [texts[(i * per_request + k) % len(texts)] for k in range(per_request)]
                r = await client.post(url + "/predict", json={"inputs": body})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        wall = time.perf_counter() - t
    q = statistics.quantiles(latencies, n=100)
    return {"concurrency": concurrency, "per_request": per_request, "requests": n, "rps": n / wall, "tps": n * per_request / wall, "p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000,
            "errors": errors, "statuses": statuses}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=None, help="a textfit run (default: fine-tune the packaged model on 2000 SST-2 rows)")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    p.add_argument("--texts-per-request", default="1,16", help="request sizes; each is run at every concurrency level")
    a = p.parse_args()

    import pandas as pd

    from bench_predict import quick_run
    from textfit import Classifier

    run = a.run or quick_run(tempfile.mkdtemp() + "/run")
    texts = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3)["sentence"].astype(str).tolist()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "textfit", "serve", run, "--port", str(port)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("server did not become ready: " + (server.stderr.read().decode()[-2000:] if server.poll() is not None else ""))
            time.sleep(0.3)
        rows = [asyncio.run(level(url, texts, int(c), a.requests, int(k)))
                for k in a.texts_per_request.split(",") for c in a.concurrency.split(",")]
    finally:
        server.terminate()
        server.wait(30)

    clf = Classifier.load(run)
    clf.predict_proba(texts[:16])
    t = time.perf_counter()
    clf.predict_proba(texts)
    batch_rate = len(texts) / (time.perf_counter() - t)

    print(f"machine: {os.cpu_count()} CPUs; run {run}; one SST-2 sentence per request; server defaults (max batch 128, 5 ms wait)")
    head = f"{'texts/req':>9} {'concurrency':>11} {'requests':>8} {'req/s':>8} {'texts/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}  statuses"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['per_request']:>9} {r['concurrency']:>11} {r['requests']:>8} {r['rps']:>8.1f} {r['tps']:>8.1f} {r['p50']:>8.1f} {r['p95']:>8.1f} "
              f"{r['p99']:>8.1f} {r['errors']:>6}  {r['statuses']}")
    print(f"\nbatch-prediction path on the same {len(texts)} texts: {batch_rate:.1f} texts/s")


if __name__ == "__main__":
    main()
