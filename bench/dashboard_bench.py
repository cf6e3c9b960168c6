"""Dashboard under load: 100 running jobs streaming logs while a browser refreshes the job list
and a job page (the htmx requests the pages poll), under ``gunicorn -w 2``.

The writer appends a log batch to every running job each second through
``jobs.service.apply_update`` (the worker-report path). Refresh latency p50/p95 and server CPU
per refresh are measured with the writer running, beside the same refreshes with the writer
paused (the peer), in alternating phases.

    python -m bench dashboard                # 4 phases of 15 s
    python -m bench dashboard -- --quick     # 4 phases of 5 s
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
from alembic import command

from bench import report
from bench.webhooks_bench import _wait, gunicorn, stop
from stcloud import create_app, db
from stcloud.cli import alembic_config
from stcloud.jobs import service
from stcloud.models import Job
from tests.conftest import free_port

RUNNING = 100
HX = {"HX-Request": "true"}


def seed(app) -> list[str]:
    ids = []
    with app.app_context(), db.transaction() as s:
        for i in range(1000):
            s.add(Job(name=f"old {i}", provider="worker", status="completed", config={}, dataloader_config=[]))
        for i in range(RUNNING):
            job = Job(name=f"running {i}", provider="worker", status="running", config={}, dataloader_config=[],
                      progress={"step": 0, "total_steps": 100000})
            s.add(job)
            s.flush()
            ids.append(job.id)
    return ids


class Writer(threading.Thread):
    """Every second: a batch of log lines for every running job."""

    def __init__(self, app, ids: list[str]):
        super().__init__(daemon=True)
        self.app, self.ids = app, ids
        self.active = threading.Event()
        self.stopped = threading.Event()
        self.batches = 0
        self.step = 0

    def run(self):
        with self.app.app_context():
            while not self.stopped.is_set():
                if not self.active.wait(0.2):
                    continue
                started = time.monotonic()
                self.step += 5
                lines = "".join(f"step {self.step + k}/100000 loss=0.{k}123 lr=1e-4\n" for k in range(5))
                for jid in self.ids:
                    service.apply_update(jid, service.JobUpdate(logs_append=lines), source="worker")
                self.batches += 1
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def refresh_round(base: str, http: requests.Session, job_id: str, offsets: dict) -> dict[str, float]:
    """One refresh of each kind; returns ms per kind."""
    out = {}
    for kind, url in (("job list", f"{base}/jobs"), ("job page", f"{base}/jobs/{job_id}"),
                      ("list row", f"{base}/jobs/{job_id}/row"),
                      ("log tail", f"{base}/jobs/{job_id}/log?offset={offsets.get(job_id, 0)}")):
        t0 = time.perf_counter()
        r = http.get(url, headers=HX, timeout=30)
        out[kind] = (time.perf_counter() - t0) * 1000
        r.raise_for_status()
        if kind == "log tail" and "offset=" in r.text:
            offsets[job_id] = int(r.text.rsplit("offset=", 1)[1].split('"')[0].split("&")[0])
    return out


def server_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run(phase_seconds: float, phases: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="stcloud-bench-dash-"))
    proc = None
    try:
        home = tmp / "home"
        home.mkdir()
        url = f"sqlite:///{home / 'stcloud.db'}"
        command.upgrade(alembic_config(url), "head")
        app = create_app({"STCLOUD_HOME": str(home), "STCLOUD_DATABASE_URL": url})
        ids = seed(app)
        port = free_port()
        proc = gunicorn("app:create_app()", port, {"STCLOUD_HOME": str(home), "STCLOUD_DATABASE_URL": url,
                                                   "STCLOUD_ADMIN_TOKEN": "", "STCLOUD_PUBLIC_URL": ""},
                        tmp / "gunicorn.log")
        _wait(port, proc, tmp / "gunicorn.log")
        workers = [c.pid for c in psutil.Process(proc.pid).children()]
        writer = Writer(app, ids)
        writer.start()
        base, http, offsets = f"http://127.0.0.1:{port}", requests.Session(), {}
        samples = {"loaded": {}, "idle": {}}
        cpu = {"loaded": [0.0, 0], "idle": [0.0, 0]}
        for p in range(phases):
            mode = "loaded" if p % 2 == 0 else "idle"
            (writer.active.set if mode == "loaded" else writer.active.clear)()
            time.sleep(1.0)  # let the writer reach (or leave) its pace
            c0, n, k = server_cpu(workers), 0, 0
            deadline = time.monotonic() + phase_seconds
            while time.monotonic() < deadline:
                for kind, ms in refresh_round(base, http, ids[k % RUNNING], offsets).items():
                    samples[mode].setdefault(kind, []).append(ms)
                n += 4
                k += 1
            cpu[mode][0] += server_cpu(workers) - c0
            cpu[mode][1] += n
        writer.stopped.set()
        writer.active.set()
        writer.join(30)
        app.extensions["stcloud.db"].dispose()
        return {"samples": samples, "cpu": cpu, "batches": writer.batches, "phase_s": phase_seconds}
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dashboard_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase-seconds", type=float, default=15.0)
    ap.add_argument("--phases", type=int, default=4, help="alternating loaded / idle phases")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.phase_seconds = 5.0
    res = run(args.phase_seconds, args.phases)
    s = res["samples"]
    for kind in s["loaded"]:
        lo, idle = s["loaded"][kind], s["idle"][kind]
        row = report.Row("dashboard", f"{kind} refresh p95, {RUNNING} jobs streaming", report.pct(lo, 0.95),
                         report.pct(idle, 0.95), "ms",
                         goal=f"p95<100ms (p50 {report.med(lo):.1f} vs {report.med(idle):.1f} ms; peer = writer paused)")
        row.met = row.ours < 100
        report.ROWS.append(row)
        print(f"  {kind:10s} loaded p50 {report.med(lo):6.1f} p95 {report.pct(lo, 0.95):6.1f} ms (n={len(lo)}) | "
              f"idle p50 {report.med(idle):6.1f} p95 {report.pct(idle, 0.95):6.1f} ms")
    (lc, ln), (ic, inn) = res["cpu"]["loaded"], res["cpu"]["idle"]
    cpu_row = report.Row("dashboard", "server CPU per refresh", lc / ln * 1000 if ln else 0,
                         ic / inn * 1000 if inn else 0, "ms", goal="measured (peer = writer paused)")
    report.ROWS.append(cpu_row)
    print(f"  server CPU per refresh: loaded {cpu_row.ours:.2f} ms, idle {cpu_row.peer:.2f} ms; writer batches "
          f"{res['batches']} ({RUNNING} jobs each, {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
