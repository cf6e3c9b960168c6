"""Signed Replicate webhook deliveries per second against a running ``stcloud serve``, next to
a bare Flask endpoint on the same kind of server, measured in the same run.

Both servers are separate processes on loopback (werkzeug's threaded server, the one
``stcloud serve`` uses). Every stcloud delivery is a real one: a distinct ``webhook-id``,
Standard Webhooks signature checked against the secret fetched from a fake Replicate, the
whole log resent each time (Replicate's way), deduplicated and applied to a job in SQLite.
The bare endpoint reads and parses the same bodies and answers 200. The ratio
stcloud / bare is the figure; absolute numbers depend on the machine.

    python -m bench webhooks -- --duration 5 --concurrency 8
    python -m bench.webhooks_bench --duration 5

Bounded: each measurement stops after ``--duration`` seconds or ``--max-requests``
deliveries, whichever comes first; every request has a timeout.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "r8_bench_token"
REQUEST_TIMEOUT = 10.0
MAX_LOG_LINES = 200  # the log grows to this many lines, then is resent unchanged


# ---- the bare peer ----------------------------------------------------------------------

def _bare_app():
    from flask import Flask, jsonify, request

    app = Flask("bare")

    @app.get("/healthz")
    def health():
        return "ok"

    @app.post("/hook")
    def hook():
        payload = json.loads(request.get_data(cache=False))
        return jsonify({"outcome": "ok", "id": payload.get("id")})

    return app


def serve_bare(port: int) -> None:
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *a, **k):
            pass

    make_server("127.0.0.1", port, _bare_app(), threaded=True, request_handler=Quiet).serve_forever()


# ---- load generation --------------------------------------------------------------------

class Load:
    """``concurrency`` threads, each with one keep-alive connection, sending
    ``requests[i]`` for i = 0, 1, ... until the deadline or the end of the list."""

    def __init__(self, port: int, path: str, requests: list[tuple[bytes, dict]], concurrency: int,
                 duration: float):
        self.port, self.path, self.requests = port, path, requests
        self.concurrency, self.duration = concurrency, duration
        self._next = 0
        self._lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.outcomes: dict[str, int] = {}
        self.errors = 0
        self.elapsed = 0.0

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self.requests) or time.monotonic() >= self._deadline:
                return None
            i = self._next
            self._next += 1
            return i

    def _worker(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        lat, statuses, outcomes, errors = [], {}, {}, 0
        try:
            while (i := self._take()) is not None:
                body, headers = self.requests[i]
                t0 = time.perf_counter()
                try:
                    conn.request("POST", self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException):
                    errors += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
                    continue
                lat.append(time.perf_counter() - t0)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                try:
                    outcome = json.loads(data).get("outcome", "?")
                except ValueError:
                    outcome = "?"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        finally:
            conn.close()
            with self._lock:
                self.latencies += lat
                self.errors += errors
                for k, v in statuses.items():
                    self.statuses[k] = self.statuses.get(k, 0) + v
                for k, v in outcomes.items():
                    self.outcomes[k] = self.outcomes.get(k, 0) + v

    def run(self) -> "Load":
        self._deadline = time.monotonic() + self.duration
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.concurrency)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.duration + REQUEST_TIMEOUT + 5)
        self.elapsed = time.perf_counter() - t0
        return self

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000

    def summary(self) -> str:
        return (f"{self.rate:8.1f}/s  n={self.count:<5d} p50={self.pct(0.5):6.1f} ms  "
                f"p95={self.pct(0.95):6.1f} ms  statuses={self.statuses} outcomes={self.outcomes}"
                + (f" errors={self.errors}" if self.errors else ""))


# ---- set-up -----------------------------------------------------------------------------

def _deliveries(secret: str, prediction_id: str, n: int, prefix: str) -> list[tuple[bytes, dict]]:
    from stcloud.webhooks.verify import sign

    lines = [f"step {k}/{MAX_LOG_LINES} loss={1 / (k + 1):.4f} lr=1e-4 {'.' * 40}\n"
             for k in range(1, MAX_LOG_LINES + 1)]
    ts = int(time.time())
    out = []
    for i in range(n):
        pred = {"id": prediction_id, "status": "processing", "logs": "".join(lines[: min(i + 1, MAX_LOG_LINES)]),
                "output": None, "error": None, "created_at": "2025-01-01T00:00:00.000000Z",
                "started_at": "2025-01-01T00:00:05.000000Z", "completed_at": None, "urls": {},
                "input": {}, "metrics": {}}
        body = json.dumps(pred).encode()
        wid = f"msg_{prefix}{i:07d}"
        out.append((body, {"Content-Type": "application/json", "webhook-id": wid,
                           "webhook-timestamp": str(ts), "webhook-signature": sign(secret, wid, ts, body)}))
    return out


def _make_job(home: Path, prediction_id: str) -> str:
    from stcloud import create_app, db
    from stcloud.models import Job

    app = create_app({"STCLOUD_HOME": str(home), "STCLOUD_DATABASE_URL": f"sqlite:///{home / 'stcloud.db'}"})
    try:
        with app.app_context(), db.session() as s:
            job = Job(name="bench", provider="replicate", provider_job_id=prediction_id, status="queued",
                      rate_usd_per_second=0.001, config={}, dataloader_config=[])
            s.add(job)
            s.flush()
            return job.id
    finally:
        app.extensions["stcloud.db"].dispose()


def _wait_http(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("bare server exited")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("bare server not ready")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run(duration: float = 5.0, max_requests: int = 20000, concurrency: int = 8, rounds: int = 2) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import ServeProcess, free_port
    from tests.fakes.replicate_fake import FakeReplicate

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="stcloud-bench-") as tmp, FakeReplicate(tokens=(TOKEN,)) as fake:
        home = Path(tmp) / "home"
        home.mkdir()
        env = {"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": fake.base_url,
               "STCLOUD_DATABASE_URL": "", "STCLOUD_ADMIN_TOKEN": "", "STCLOUD_PUBLIC_URL": ""}
        stc = ServeProcess(home, args=("--no-scheduler",), env=env)
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-m", "bench.webhooks_bench", "--bare-server", str(bare_port)],
                                cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            stc.wait_ready()
            _wait_http(bare_port, bare)
            pred_id = secrets.token_hex(13)
            job_id = _make_job(home, pred_id)
            per_round = max_requests // rounds
            # warm-up (the first stcloud delivery also fetches the signing secret)
            warm = _deliveries(fake.webhook_secret, pred_id, 50, "warm")
            Load(bare_port, "/hook", warm, concurrency, 10).run()
            Load(stc.port, "/api/webhooks/replicate", warm, concurrency, 10).run()
            bare_runs, stc_runs = [], []
            for r in range(rounds):  # alternate, so drift on the machine hits both alike
                reqs = _deliveries(fake.webhook_secret, pred_id, per_round, f"r{r}_")
                bare_runs.append(Load(bare_port, "/hook", reqs, concurrency, duration).run())
                stc_runs.append(Load(stc.port, "/api/webhooks/replicate", reqs, concurrency, duration).run())
            bare_best = max(bare_runs, key=lambda x: x.rate)
            stc_best = max(stc_runs, key=lambda x: x.rate)
            # nothing may be refused or lost: every delivery applied exactly once
            from stcloud import create_app, db
            from stcloud.models import WebhookDelivery

            app = create_app({"STCLOUD_HOME": str(home),
                              "STCLOUD_DATABASE_URL": f"sqlite:///{home / 'stcloud.db'}"})
            with app.app_context(), db.session() as s:
                stored = s.query(WebhookDelivery).filter_by(job_id=job_id).count()
            app.extensions["stcloud.db"].dispose()
            sent = sum(x.count for x in stc_runs) + 50
            results = {
                "stcloud": stc_best, "bare": bare_best, "ratio": stc_best.rate / bare_best.rate,
                "stored": stored, "sent": sent,
                "stcloud_rates": [round(x.rate, 1) for x in stc_runs],
                "bare_rates": [round(x.rate, 1) for x in bare_runs],
                "secret_fetches": len(fake.requests_to("GET", r"/v1/webhooks/default/secret")),
            }
        finally:
            stc.stop()
            _stop(bare)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="webhooks_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    ap.add_argument("--max-requests", type=int, default=20000, help="deliveries per side, all rounds")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.bare_server:
        serve_bare(args.bare_server)
        return 0
    r = run(args.duration, args.max_requests, args.concurrency, args.rounds)
    stc, bare = r["stcloud"], r["bare"]
    print(f"stcloud  signed deliveries : {stc.summary()}")
    print(f"bare Flask endpoint        : {bare.summary()}")
    print(f"rounds: stcloud {r['stcloud_rates']} /s, bare {r['bare_rates']} /s "
          f"(best of each; {args.concurrency} connections, {os.cpu_count()} CPUs)")
    print(f"deliveries sent {r['sent']}, stored {r['stored']}, secret fetched {r['secret_fetches']}x")
    print(f"RATIO stcloud/bare = {r['ratio']:.2f}")
    ok = (stc.statuses.keys() == {200} and r["stored"] == r["sent"] and not stc.errors)
    if not ok:
        print("error: some deliveries were refused, failed or not stored", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
