"""Signed Replicate webhook deliveries per second under ``gunicorn -w 2``, next to a bare
Flask endpoint on the same server, load from ``wrk`` (Debian package), interleaved rounds.

Every stcloud delivery is a real one: a distinct ``webhook-id``, a Standard Webhooks
signature checked against the secret fetched from a fake Replicate, the whole log resent
each time (Replicate's way, the log grows a line per delivery up to ``LOG_LINES``), spread
over ``--jobs`` predictions, deduplicated and applied to the jobs in SQLite. The bare
endpoint reads and parses the same bodies and answers 200.

wrk cannot sign, so the deliveries are prepared here: one file per wrk thread, one line per
delivery (id, timestamp, signature, job, log length); the Lua script rebuilds each body
from the same template. After each stcloud round the database is checked: every answered
delivery stored once, all ``applied``, each job's log exactly the longest log it was sent
(appended once, in order), its progress parsed from it.

    python -m bench webhooks -- --duration 20 --rounds 3
    python -m bench webhooks -- --quick
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from flask import Flask, jsonify, request

from bench import report
from stcloud.cli import alembic_config
from stcloud.webhooks.verify import sign
from tests.conftest import free_port
from tests.fakes.replicate_fake import FakeReplicate

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "r8_bench_token"
LOG_LINES = 200  # the log grows to this many lines, then is resent unchanged
WRK_THREADS = 2
CONNECTIONS = 8
PATH = "/api/webhooks/replicate"


# ---- the bare peer (``gunicorn 'bench.webhooks_bench:bare_app()'``) ----------------------

def bare_app():
    app = Flask("bare")

    @app.get("/healthz")
    def health():
        return "ok"

    @app.post(PATH)
    def hook():
        payload = json.loads(request.get_data(cache=False))
        return jsonify({"outcome": "ok", "id": payload.get("id")})

    return app


# ---- deliveries: the same bytes in Python (to sign) and in Lua (to send) -----------------

def log_line(j: int) -> str:
    return f"step {j}/{LOG_LINES} loss=0.{(997 * j) % 10000:04d} lr=1e-4 " + "." * 20 + "\n"


def body(pred_id: str, k: int) -> bytes:
    logs = "".join(log_line(j) for j in range(1, min(k, LOG_LINES) + 1)).replace("\n", "\\n")
    return ('{"id":"' + pred_id + '","status":"processing","logs":"' + logs + '","output":null,'
            '"error":null,"created_at":"2025-01-01T00:00:00.000Z","started_at":"2025-01-01T00:00:05.000Z",'
            '"completed_at":null,"urls":{},"input":{},"metrics":{}}').encode()


LUA = r"""
local lines = {}
local logs = {[0] = ""}
for j = 1, %(log_lines)d do
  logs[j] = logs[j - 1] .. string.format("step %%d/%%d loss=0.%%04d lr=1e-4 ", j, %(log_lines)d, (997 * j) %% 10000)
            .. string.rep(".", 20) .. "\\n"
end
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  f = io.open(args[1] .. "/deliveries-" .. tid .. ".txt", "r")
end
function request()
  local line = f:read("*l")
  if line == nil then
    f:seek("set", 0)  -- exhausted: the replays that follow show up as duplicates
    line = f:read("*l")
  end
  local wid, ts, sig, pred, k = line:match("^(%%S+)\t(%%S+)\t(%%S+)\t(%%S+)\t(%%d+)$")
  k = math.min(tonumber(k), %(log_lines)d)
  local body = '{"id":"' .. pred .. '","status":"processing","logs":"' .. logs[k] .. '","output":null,'
    .. '"error":null,"created_at":"2025-01-01T00:00:00.000Z","started_at":"2025-01-01T00:00:05.000Z",'
    .. '"completed_at":null,"urls":{},"input":{},"metrics":{}}'
  return wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json", ["webhook-id"] = wid,
                    ["webhook-timestamp"] = ts, ["webhook-signature"] = sig}, body)
end
"""


def write_deliveries(folder: Path, secret: str, preds: list[str], n: int, prefix: str) -> None:
    """``n`` deliveries round-robin over ``preds`` (k = the log length sent), split by thread."""
    folder.mkdir(parents=True, exist_ok=True)
    ts = int(time.time())
    files = [open(folder / f"deliveries-{t}.txt", "w") for t in range(WRK_THREADS)]
    try:
        for i in range(n):
            p, k = i % len(preds), i // len(preds) + 1
            wid = f"msg_{prefix}_{p}_{k}_{hashlib.sha1(f'{prefix}{i}'.encode()).hexdigest()[:8]}"
            files[i % WRK_THREADS].write(f"{wid}\t{ts}\t{sign(secret, wid, ts, body(preds[p], k))}\t{preds[p]}\t{k}\n")
    finally:
        for f in files:
            f.close()
    (folder / "send.lua").write_text(LUA % {"log_lines": LOG_LINES, "path": PATH})


# ---- servers and load -------------------------------------------------------------------

def _wait(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    import http.client

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server not ready: {log.read_text()[-2000:]}")


def gunicorn(app_spec: str, port: int, env: dict, log: Path, workers: int = 2) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "--timeout", "60", app_spec],
        cwd=str(ROOT), env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class WrkRun:
    rate: float
    requests: int
    non_2xx: int
    errors: int
    p50_ms: float
    p99_ms: float


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    num, unit = float(m.group(1)), m.group(2)
    return num / 1000 if unit == "us" else num * 1000 if unit == "s" else num


def wrk(port: int, folder: Path, duration: float) -> WrkRun:
    out = subprocess.run(
        ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--latency", "--timeout", "10s",
         "-s", str(folder / "send.lua"), f"http://127.0.0.1:{port}", "--", str(folder)],
        capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    return WrkRun(rate, total, int(non2xx.group(1)) if non2xx else 0,
                  sum(int(x) for x in errs.groups()) if errs else 0, _ms(lat["50"]), _ms(lat["99"]))


# ---- checks -----------------------------------------------------------------------------

def make_jobs(db_path: Path, preds: list[str]) -> None:
    conn = sqlite3.connect(db_path)
    with conn:
        conn.executemany(
            """INSERT INTO jobs (id, name, provider, provider_job_id, status, config, dataloader_config,
               gpu_count, created_at, updated_at, progress, outputs, attempt, max_attempts, log_size,
               log_seq, poll_failures, rate_usd_per_second)
               VALUES (?, ?, 'replicate', ?, 'queued', '{}', '[]', 1, strftime('%Y-%m-%d %H:%M:%f000', 'now'),
               strftime('%Y-%m-%d %H:%M:%f000', 'now'), '{}', '[]', 1, 3, 0, 0, 0, 0.001)""",
            [(f"job_bench_{p}", f"bench {p}", p) for p in preds])
    conn.close()


def check_round(db_path: Path, prefix: str, preds: list[str], answered: int) -> dict:
    """Every answered delivery stored once and applied; each job's log = the longest sent."""
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT webhook_id, outcome FROM webhook_deliveries WHERE webhook_id LIKE ?",
                            (f"msg_{prefix}_%",)).fetchall()
        outcomes: dict[str, int] = {}
        longest: dict[int, int] = {}
        for wid, outcome in rows:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            p, k, _ = wid[len(f"msg_{prefix}_"):].split("_")
            longest[int(p)] = max(longest.get(int(p), 0), int(k))
        bad_logs = 0
        for p, k in longest.items():
            size, progress = conn.execute("SELECT log_size, progress FROM jobs WHERE provider_job_id = ?",
                                          (preds[p],)).fetchone()
            text = b"".join(r[0] for r in conn.execute(
                "SELECT data FROM job_log_chunks WHERE job_id = ? ORDER BY \"offset\"", (f"job_bench_{preds[p]}",)))
            want = "".join(log_line(j) for j in range(1, min(k, LOG_LINES) + 1)).encode()
            if text != want or size != len(want) or f'"step": {min(k, LOG_LINES)}' not in progress:
                bad_logs += 1
        return {"stored": len(rows), "outcomes": outcomes, "bad_logs": bad_logs,
                "ok": answered <= len(rows) <= answered + CONNECTIONS and set(outcomes) == {"applied"}
                and not bad_logs}
    finally:
        conn.close()


# ---- the benchmark ----------------------------------------------------------------------

def run(duration: float, rounds: int, jobs: int, expected_rate: float, say=print) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="stcloud-bench-wh-"))
    procs: list[subprocess.Popen] = []
    try:
        with FakeReplicate(tokens=(TOKEN,)) as fake:
            home = tmp / "home"
            home.mkdir()
            db_path = home / "stcloud.db"
            command.upgrade(alembic_config(f"sqlite:///{db_path}"), "head")
            env = {"STCLOUD_HOME": str(home), "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": fake.base_url,
                   "STCLOUD_DATABASE_URL": f"sqlite:///{db_path}", "STCLOUD_ADMIN_TOKEN": "", "STCLOUD_PUBLIC_URL": ""}
            ours_port, bare_port = free_port(), free_port()
            procs.append(gunicorn("app:create_app()", ours_port, env, tmp / "stcloud.log"))
            procs.append(gunicorn("bench.webhooks_bench:bare_app()", bare_port, {}, tmp / "bare.log"))
            _wait(ours_port, procs[0], tmp / "stcloud.log")
            _wait(bare_port, procs[1], tmp / "bare.log")
            per_round = int(expected_rate * duration * 1.5) + 1000
            bare_runs, ours_runs, checks = [], [], []
            for r in range(rounds + 1):  # round 0 warms both up (secret fetch, imports)
                preds = [f"p{r}x{p:04d}" for p in range(jobs)]
                make_jobs(db_path, preds)
                folder = tmp / f"round{r}"
                write_deliveries(folder, fake.webhook_secret, preds, per_round if r else 400, f"r{r}")
                d = duration if r else 2
                b = wrk(bare_port, folder, d)
                o = wrk(ours_port, folder, d)
                time.sleep(0.5)  # requests in flight when wrk stopped
                check = check_round(db_path, f"r{r}", preds, o.requests)
                if r:
                    bare_runs.append(b)
                    ours_runs.append(o)
                    checks.append(check)
                    say(f"  round {r}: bare {b.rate:7.0f}/s p99 {b.p99_ms:5.1f} ms | stcloud {o.rate:7.0f}/s "
                        f"p99 {o.p99_ms:5.1f} ms non-2xx {o.non_2xx} errors {o.errors} | stored {check['stored']} "
                        f"{check['outcomes']} bad logs {check['bad_logs']}")
                    if o.requests >= per_round:
                        say(f"  warning: round {r} used all {per_round} prepared deliveries (raise --expected-rate)")
            secret_fetches = len(fake.requests_to("GET", r"/v1/webhooks/default/secret"))
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"bare": bare_runs, "ours": ours_runs, "checks": checks, "secret_fetches": secret_fetches}


def summary(res: dict) -> list[tuple]:
    """Rows for the ratio table: (what, ours, peer, ratio, unit, note)."""
    o = [x.rate for x in res["ours"]]
    b = [x.rate for x in res["bare"]]
    ok = all(c["ok"] for c in res["checks"]) and all(x.non_2xx == 0 and x.errors == 0 for x in res["ours"])
    note = "every delivery stored once, applied, logs exact" if ok else "CHECK FAILED"
    return [
        ("webhooks req/s (median)", statistics.median(o), statistics.median(b),
         statistics.median(o) / statistics.median(b), "req/s", note),
        ("webhooks req/s (best)", max(o), max(b), max(o) / max(b), "req/s", ""),
        ("webhooks p99 latency (median)", statistics.median(x.p99_ms for x in res["ours"]),
         statistics.median(x.p99_ms for x in res["bare"]), None, "ms", "lower is better"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="webhooks_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per wrk run (default 20)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=50, help="predictions the deliveries are spread over")
    ap.add_argument("--expected-rate", type=float, default=4000, help="deliveries prepared per second of run")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 5 s")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 5.0, 2
    if not shutil.which("wrk"):
        print("wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 2
    res = run(args.duration, args.rounds, args.jobs, args.expected_rate)
    rows = summary(res)
    o, b = [x.rate for x in res["ours"]], [x.rate for x in res["bare"]]
    row = report.Row("webhooks", "signed deliveries/s, gunicorn -w 2, wrk -c8", statistics.median(o),
                     statistics.median(b), "req/s", min(o), min(b), higher_is_better=True,
                     goal=">=0.5x bare; " + rows[0][5] + f"; p99 {rows[2][1]:.0f} vs {rows[2][2]:.0f} ms")
    row.met = row.ratio >= 0.5 and rows[0][5] != "CHECK FAILED"
    report.ROWS.append(row)
    for what, ours, peer, ratio, unit, note in rows:
        print(f"{what:32s} stcloud {ours:9.1f} {unit:5s} bare {peer:9.1f} {unit:5s}"
              + (f" ratio {ratio:.2f}" if ratio is not None else "") + (f"  ({note})" if note else ""))
    print(f"secret fetched {res['secret_fetches']}x (once per gunicorn worker)")
    return 0 if rows[0][5] != "CHECK FAILED" else 1


if __name__ == "__main__":
    sys.exit(main())
