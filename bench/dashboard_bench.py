"""Dashboard under load: 100 running jobs streaming logs while a browser refreshes the job list
and a job page (the htmx requests the pages poll), under ``gunicorn -w 2``.

A writer process appends a log batch (and a progress step) to every running job each second
through ``jobs.service.apply_update`` (the worker-report path). Refresh latency p50/p95 and server CPU
per refresh are measured with the writer running, beside the same refreshes with the writer
paused (the peer), in alternating phases. Then, with the writer paused, server CPU per
request of the job page's panel and a list row, unconditional vs with If-None-Match (what
static/poll.js sends: 304 while the job did not change).

    python -m bench dashboard                # 4 phases of 15 s
    python -m bench dashboard -- --quick     # 4 phases of 5 s
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
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


def _write_batches(config: dict, ids: list[str], active, stopped, batches) -> None:
    """The writer process: every second, a log batch and a progress step for every running job
    through ``service.apply_update`` (the worker-report path), while ``active`` is set."""
    app = create_app(config)
    step = 0
    with app.app_context():
        while not stopped.is_set():
            if not active.wait(0.2):
                continue
            started = time.monotonic()
            step += 5
            lines = "".join(f"step {step + k}/100000 loss=0.{k}123 lr=1e-4\n" for k in range(5))
            progress = {"step": step, "total_steps": 100000}
            for jid in ids:
                service.apply_update(jid, service.JobUpdate(logs_append=lines, progress=progress), source="worker")
            with batches.get_lock():
                batches.value += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


class Writer:
    """The writer in a process of its own (spawned), so it shares no GIL with the timed client."""

    def __init__(self, config: dict, ids: list[str]):
        ctx = multiprocessing.get_context("spawn")
        self.active, self.stopped, self.batches_v = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
        self.proc = ctx.Process(target=_write_batches, daemon=True,
                                args=(config, ids, self.active, self.stopped, self.batches_v))

    def start(self) -> None:
        self.proc.start()

    @property
    def batches(self) -> int:
        return self.batches_v.value

    def join(self, timeout: float) -> None:
        self.stopped.set()
        self.active.set()
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()


KINDS = ("job list", "job page", "list row", "log tail", "job page, If-None-Match", "list row, If-None-Match")


def refresh_round(base: str, http: requests.Session, job_id: str, offsets: dict, etags: dict,
                  statuses: dict) -> dict[str, float]:
    """One refresh of each kind; returns ms per kind. The If-None-Match kinds send the tag of
    the previous answer for that job, as static/poll.js does; ``statuses`` counts answers."""
    out = {}
    for kind, url in zip(KINDS, (f"{base}/jobs", f"{base}/jobs/{job_id}", f"{base}/jobs/{job_id}/row",
                                 f"{base}/jobs/{job_id}/log?offset={offsets.get(job_id, 0)}",
                                 f"{base}/jobs/{job_id}", f"{base}/jobs/{job_id}/row"), strict=True):
        headers = dict(HX)
        if "If-None-Match" in kind and (kind, job_id) in etags:
            headers["If-None-Match"] = etags[kind, job_id]
        t0 = time.perf_counter()
        r = http.get(url, headers=headers, timeout=30)
        out[kind] = (time.perf_counter() - t0) * 1000
        if r.status_code not in (200, 204, 304):
            r.raise_for_status()
            raise RuntimeError(f"{url}: {r.status_code}")
        statuses.setdefault(kind, {}).setdefault(r.status_code, 0)
        statuses[kind][r.status_code] += 1
        if r.headers.get("ETag"):
            etags[kind, job_id] = r.headers["ETag"]
        if kind == "log tail" and r.status_code == 200 and "offset=" in r.text:
            offsets[job_id] = int(r.text.rsplit("offset=", 1)[1].split('"')[0].split("&")[0])
    return out


def cpu_per_kind(base: str, http: requests.Session, ids: list[str], workers: list[int], writer: Writer,
                 seconds: float) -> dict[str, tuple[float, int, dict]]:
    """Server CPU ms per request for the job page's panel refresh and a list row, unconditional
    vs with If-None-Match (what static/poll.js sends), ``seconds`` each, round-robin over the
    running jobs, with the writer paused: jobs that did not change since the last poll (queued,
    stalled, between log batches). Under the writer every job changes every second, so a poll
    that comes back after a full round finds it changed and costs what an unconditional one does.
    ``{kind: (cpu ms per request, requests, answers)}``."""
    writer.active.clear()
    time.sleep(1.0)
    out = {}
    for kind, path in (("panel", "/jobs/{}"), ("row", "/jobs/{}/row")):
        for conditional in (False, True):
            etags, answers, n = {}, {}, 0
            if conditional:  # the tags a browser holds from its previous poll of each job
                for jid in ids:
                    etags[jid] = http.get(base + path.format(jid), headers=HX, timeout=30).headers.get("ETag", "")
            c0 = server_cpu(workers)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                jid = ids[n % RUNNING]
                headers = {**HX, **({"If-None-Match": etags[jid]} if conditional and jid in etags else {})}
                r = http.get(base + path.format(jid), headers=headers, timeout=30)
                answers[r.status_code] = answers.get(r.status_code, 0) + 1
                etags[jid] = r.headers.get("ETag", "")
                n += 1
            out[f"{kind}{', If-None-Match' if conditional else ''}"] = ((server_cpu(workers) - c0) / n * 1000, n, answers)
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
        config = {"STCLOUD_HOME": str(home), "STCLOUD_DATABASE_URL": url, "STCLOUD_AUTH": "off"}
        app = create_app(config)
        ids = seed(app)
        app.extensions["stcloud.db"].dispose()
        port = free_port()
        proc = gunicorn("app:create_app()", port, {"STCLOUD_HOME": str(home), "STCLOUD_DATABASE_URL": url,
                                                   "STCLOUD_ADMIN_TOKEN": "", "STCLOUD_PUBLIC_URL": "",
                                                   "STCLOUD_AUTH": "off"},  # loopback only
                        tmp / "gunicorn.log")
        _wait(port, proc, tmp / "gunicorn.log")
        workers = [c.pid for c in psutil.Process(proc.pid).children()]
        writer = Writer(config, ids)
        writer.start()
        base, http, offsets, etags, statuses = f"http://127.0.0.1:{port}", requests.Session(), {}, {}, {}
        samples = {"loaded": {}, "idle": {}}
        cpu = {"loaded": [0.0, 0], "idle": [0.0, 0]}
        for p in range(phases):
            mode = "loaded" if p % 2 == 0 else "idle"
            (writer.active.set if mode == "loaded" else writer.active.clear)()
            time.sleep(1.0)  # let the writer reach (or leave) its pace
            c0, n, k = server_cpu(workers), 0, 0
            deadline = time.monotonic() + phase_seconds
            while time.monotonic() < deadline:
                for kind, ms in refresh_round(base, http, ids[k % RUNNING], offsets, etags,
                                              statuses.setdefault(mode, {})).items():
                    samples[mode].setdefault(kind, []).append(ms)
                n += len(KINDS)
                k += 1
            cpu[mode][0] += server_cpu(workers) - c0
            cpu[mode][1] += n
        batches = writer.batches  # all written while a loaded phase (or its 1 s lead-in) ran
        loaded_s = sum(phase_seconds + 1.0 for p in range(phases) if p % 2 == 0)
        cpu_kinds = cpu_per_kind(base, http, ids, workers, writer, phase_seconds)
        writer.join(30)
        return {"samples": samples, "cpu": cpu, "batches": batches, "loaded_s": loaded_s, "phase_s": phase_seconds,
                "statuses": statuses, "cpu_kinds": cpu_kinds}
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
        row = report.Row("dashboard", f"{kind}: refresh p95", report.pct(lo, 0.95), report.pct(idle, 0.95), "ms",
                         min(lo), min(idle), goal="p95 < 100 ms")
        row.met = row.ours < 100
        report.ROWS.append(row)
        answers = ", ".join(f"{n} x {code}" for code, n in sorted(res["statuses"]["loaded"][kind].items()))
        print(f"  {kind:24s} loaded p50 {report.med(lo):6.1f} p95 {report.pct(lo, 0.95):6.1f} ms (n={len(lo)}: "
              f"{answers}) | idle p50 {report.med(idle):6.1f} p95 {report.pct(idle, 0.95):6.1f} ms")
    (lc, ln), (ic, inn) = res["cpu"]["loaded"], res["cpu"]["idle"]
    cpu_row = report.Row("dashboard", "server CPU per refresh (all kinds)", lc / ln * 1000 if ln else 0,
                         ic / inn * 1000 if inn else 0, "ms", goal="measured")
    report.ROWS.append(cpu_row)
    print(f"  server CPU per refresh: loaded {cpu_row.ours:.2f} ms, idle {cpu_row.peer:.2f} ms; writer batches "
          f"{res['batches']} ({RUNNING} jobs each, {os.cpu_count()} CPUs)")
    rate = res["batches"] * RUNNING / res["loaded_s"]
    row = report.Row("dashboard", "log appends/s while loaded", rate, float(RUNNING), "/s", higher_is_better=True,
                     goal=f"{RUNNING} jobs x 1 batch/s")
    row.met = rate >= 0.95 * RUNNING
    report.ROWS.append(row)
    print(f"  log appends: {rate:.1f}/s achieved while loaded (wanted {RUNNING}/s)")
    ck = res["cpu_kinds"]
    for kind in ("panel", "row"):
        (full, n_full, _), (cond, n_cond, answers) = ck[kind], ck[f"{kind}, If-None-Match"]
        row = report.Row("dashboard", f"server CPU per {kind} poll, If-None-Match, job unchanged", cond, full,
                         "ms", goal="measured (peer = unconditional)")
        report.ROWS.append(row)
        print(f"  server CPU per {kind} poll: unconditional {full:.2f} ms (n={n_full}), If-None-Match {cond:.2f} ms "
              f"(n={n_cond}: " + ", ".join(f"{n} x {code}" for code, n in sorted(answers.items())) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
