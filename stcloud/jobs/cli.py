"""``stcloud jobs list | show | logs | wait | download | cancel | submit | compare`` — a REST client of
the jobs API. Human output by default, ``--json`` for scripts; every error is one line on
stderr and a non-zero exit.

Exit codes of ``logs -f`` and ``wait``: 0 the job completed, 1 it failed or was cancelled
(or the command itself failed), 2 ``wait --timeout`` ran out.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path, PurePosixPath

import click
from tqdm import tqdm

from stcloud.cli_completion import complete_job_id
from stcloud.cli_options import call, fail, json_opt, server_opt, token_opt
from stcloud.cli_output import (
    bytes_h,
    duration,
    echo_json,
    first_line,
    is_tty,
    money,
    seconds_between,
    table,
    text_bar,
    when,
)
from stcloud.client import ApiError, Client
from stcloud.jobs.cli_compare import compare_command
from stcloud.jobs.cli_resume import checkpoints_command, resume_command
from stcloud.jobs.cli_submit import submit_command

EXIT_COMPLETED, EXIT_ENDED_BADLY, EXIT_TIMEOUT = 0, 1, 2
LOG_TAIL_BYTES = 16 * 1024


job_id_arg = click.argument("job_id", shell_complete=complete_job_id)


@click.group("jobs")
def jobs_group():
    """List, inspect, follow, wait for, download and cancel jobs."""


jobs_group.add_command(submit_command)
jobs_group.add_command(resume_command)
jobs_group.add_command(checkpoints_command)
jobs_group.add_command(compare_command)


# ---- what a job says about itself ------------------------------------------------------

def get_job(c: Client, job_id: str) -> dict:
    return call(lambda: c.get(f"/api/cloud/jobs/{job_id}"))["job"]


def get_events(c: Client, job_id: str) -> list[dict]:
    return call(lambda: c.get(f"/api/cloud/jobs/{job_id}/events"))["events"]


def read_log(c: Client, job_id: str, offset: int) -> dict:
    return call(lambda: c.get(f"/api/cloud/jobs/{job_id}/logs", params={"offset": offset}))


def run_seconds(job: dict) -> float | None:
    """How long it ran (or has been running); from submission when it never started."""
    return seconds_between(job.get("started_at") or job.get("created_at"), job.get("completed_at"))


def end_reason(job: dict, events: list[dict]) -> str | None:
    """Why a job ended as it did: its error, else the detail of the move into its status."""
    if job["status"] == "failed" and job.get("error"):
        lines = [ln.strip() for ln in job["error"].strip().splitlines() if ln.strip()]
        cause = next((ln for ln in reversed(lines[1:]) if "error" in ln.lower()), None)
        return first_line(lines[0] + (f" — {cause}" if cause else ""), 300)
    for ev in reversed(events):
        if ev.get("accepted") and ev.get("to") == job["status"] and ev.get("detail"):
            return first_line(ev["detail"])
    return None


def final_line(job: dict, events: list[dict]) -> str:
    """``completed in 1m 12s, $0.42`` / ``failed: <reason> (after 3s, $0.00)``."""
    cost = job.get("cost_usd")
    tail = f"{duration(run_seconds(job))}, {money(cost) if cost is not None else 'cost unknown'}"
    if job["status"] == "completed":
        return f"completed in {tail}"
    return f"{job['status']}: {end_reason(job, events) or 'no reason recorded'} (after {tail})"


def exit_code_of(job: dict) -> int:
    return EXIT_COMPLETED if job["status"] == "completed" else EXIT_ENDED_BADLY


def progress_text(job: dict) -> str:
    prog = job.get("progress") or {}
    total, step = prog.get("total_steps"), prog.get("step") or 0
    parts = []
    if total:
        parts.append(f"{text_bar(step / total)} {100 * step / total:.0f}%  step {step}/{total}")
    if prog.get("loss") is not None:
        parts.append(f"loss {prog['loss']:.4f}")
    if job["status"] == "running" and total and step:
        secs = seconds_between(job.get("started_at"))
        if secs:
            rate = step / secs
            parts.append(f"{rate:.2f} steps/s, ETA {duration((total - step) / rate) if rate else '—'}")
    if prog.get("stage") and not job.get("terminal"):
        parts.append(f"stage {prog['stage']}")
    return "  ".join(parts) or "—"


def cost_text(job: dict) -> str:
    actual, est = job.get("cost_usd"), job.get("estimated_cost_usd")
    basis = (job.get("estimate") or {}).get("basis_text")
    parts = [f"{money(actual)} actual" if actual is not None else "no actual cost yet"]
    if est is not None:
        parts.append(f"estimate {money(est)}" + (f" ({basis})" if basis else ""))
    if job.get("max_cost_usd") is not None:
        parts.append(f"cap {money(job['max_cost_usd'])}")
    return " · ".join(parts)


def output_link(c: Client, out: dict) -> str | None:
    link = out.get("download_url") or out.get("url")
    if link and link.startswith("/"):
        return c.server + link
    return link


def log_tail(c: Client, job: dict, lines: int) -> list[str]:
    size = int(job.get("log_size") or 0)
    if lines <= 0 or size == 0:
        return []
    start = max(0, size - LOG_TAIL_BYTES)
    text = read_log(c, job["id"], start)["text"]
    got = text.splitlines()
    if start > 0 and got:
        got = got[1:]  # the first line is cut
    return got[-lines:]


# ---- list / show -------------------------------------------------------------------------

def _list_row(j: dict) -> list[str]:
    prog = j.get("progress") or {}
    pct = j.get("percent")
    progress = f"{pct:.0f}% {prog.get('step', 0)}/{prog['total_steps']}" if prog.get("total_steps") else "-"
    loss = f"{prog['loss']:.4f}" if prog.get("loss") is not None else "-"
    ran = duration(run_seconds(j)) if j.get("started_at") else "-"
    if j.get("cost_usd") is not None:
        cost = money(j["cost_usd"])
    elif j.get("estimated_cost_usd") is not None:
        cost = "~" + money(j["estimated_cost_usd"])
    else:
        cost = "-"
    name = j["name"]
    if j["status"] == "failed" and j.get("error"):
        name += f"  ({first_line(j['error'], 80)})"
    return [j["id"], j["status"], j["provider"], progress, loss, ran, cost, name]


@jobs_group.command("list")
@server_opt
@token_opt
@click.option("--status", default=None, help="comma-separated statuses")
@click.option("--provider", default=None)
@click.option("-q", "query", default=None, help="name contains")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@json_opt
def jobs_list(server, token, status, provider, query, limit, as_json):
    """Jobs, newest first (a cost with ~ is the estimate; the job has no actual cost yet)."""
    c = Client(server, token)
    params = {k: v for k, v in {"status": status, "provider": provider, "q": query, "limit": limit}.items() if v}
    data = call(lambda: c.get("/api/cloud/jobs", params=params))
    if as_json:
        echo_json(data)
        return
    jobs = data["jobs"]
    if not jobs:
        click.echo("no jobs" + (" match these filters" if (status or provider or query) else " yet"), err=True)
        return
    for line in table(["ID", "STATUS", "PROVIDER", "PROGRESS", "LOSS", "TIME", "COST", "NAME"],
                      [_list_row(j) for j in jobs], right={4, 5, 6}):
        click.echo(line)
    if data["total"] > len(jobs):
        click.echo(f"showing {len(jobs)} of {data['total']} jobs (--limit for more)", err=True)


@jobs_group.command("show")
@server_opt
@token_opt
@job_id_arg
@click.option("--lines", default=10, show_default=True, type=click.IntRange(0, 500), help="log lines to show")
@json_opt
def jobs_show(server, token, job_id, lines, as_json):
    """Status, progress, cost, times, outputs and the last log lines of JOB_ID
    (--json: the job and its status events as the API returns them)."""
    c = Client(server, token)
    job = get_job(c, job_id)
    events = get_events(c, job_id)
    if as_json:
        echo_json({"job": job, "events": events})
        return
    status = job["status"]
    where = [job["provider"]]
    if job.get("hardware"):
        where.append(job["hardware"])
    if job.get("worker_id"):
        where.append(f"worker {job['worker_id']}")
    if (job.get("attempt") or 1) > 1:  # a retry
        where.append(f"attempt {job['attempt']}/{job['max_attempts']}")
    rows = [("status", f"{status}  ({', '.join(where)})")]
    if job.get("terminal") and status != "completed":
        rows.append(("reason", end_reason(job, events) or "no reason recorded"))
    rows += [("progress", progress_text(job)), ("cost", cost_text(job)),
             ("created", when(job.get("created_at")))]
    if job.get("started_at"):
        rows.append(("started", when(job["started_at"])))
    if job.get("completed_at"):
        rows.append(("ended", f"{when(job['completed_at'])}  (ran {duration(run_seconds(job))})"))
    elif job.get("started_at"):
        rows.append(("running", f"for {duration(run_seconds(job))}"))
    if job.get("snapshot"):
        rows.append(("config", f"{job.get('config_name') or '-'} @ {job['snapshot'][:10]}"))
    if job.get("delivery_error"):
        rows.append(("delivery", f"error: {first_line(job['delivery_error'])}"))
    if job.get("checkpoint"):
        ck = job["checkpoint"]
        rows.append(("checkpoint", f"step {ck.get('step')} ({len(ck.get('files') or [])} files)"))
    click.echo(f"{job['id']}  {job['name']}")
    for key, value in rows:
        click.echo(f"  {key:<10}  {value}")
    if status == "failed" and job.get("error") and "\n" in job["error"].strip():
        click.echo("\nerror:")
        for line in job["error"].strip().splitlines():
            click.echo(f"  {line}")
    outputs = job.get("outputs") or []
    if outputs:
        click.echo(f"\noutputs ({len(outputs)}; stcloud jobs download {job['id']}):")
        rows = [[o.get("name") or "-", bytes_h(o["size"]) if o.get("size") is not None else "-",
                 output_link(c, o) or "-"] for o in outputs]
        for line in table(["NAME", "SIZE", "LINK"], rows, right={1})[1:]:
            click.echo(f"  {line}")
    else:
        click.echo("\noutputs: none" + ("" if job.get("terminal") else " yet"))
    tail = log_tail(c, job, lines)
    if tail:
        click.echo(f"\nlast {len(tail)} log lines (stcloud jobs logs {job['id']} for all):")
        for line in tail:
            click.echo(f"  {line}")


# ---- logs / wait ------------------------------------------------------------------------

def _unsized_terminal(stream) -> bool:
    """A terminal that reports no size (a pty nobody sized, e.g. under ``script``): tqdm would
    draw nothing there, so it gets a fixed 80x24."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return True
    return not (size.columns and size.lines)


class TrainingBar:
    """A tqdm bar on stderr fed from the job's progress; log lines are printed above it.
    Off (plain lines) when stderr is not a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: tqdm | None = None

    def update(self, job: dict) -> None:
        if not self.enabled:
            return
        prog = job.get("progress") or {}
        total, step = prog.get("total_steps"), int(prog.get("step") or 0)
        if self.bar is None:
            if not total:
                return  # nothing to draw before the trainer said how many steps
            fixed = _unsized_terminal(sys.stderr)
            self.bar = tqdm(total=total, initial=step, unit="step", file=sys.stderr, leave=True, desc=job["status"],
                            dynamic_ncols=not fixed, ncols=80 if fixed else None, nrows=24 if fixed else None)
        if total and total != self.bar.total:
            self.bar.total = total
        if step >= self.bar.n:
            self.bar.update(step - self.bar.n)
        else:  # re-queued and resumed from an earlier checkpoint
            self.bar.reset(total=self.bar.total)
            self.bar.update(step)
        self.bar.set_description_str(job["status"], refresh=False)
        if prog.get("loss") is not None:
            self.bar.set_postfix_str(f"loss {prog['loss']:.4f}", refresh=False)
        self.bar.refresh()

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        click.echo(text, nl=False)
        if self.bar is not None:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@jobs_group.command("logs")
@server_opt
@token_opt
@job_id_arg
@click.option("-f", "--follow", is_flag=True,
              help="follow until the job ends, with a progress bar; exit 0 when it completed, 1 otherwise")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.05), help="seconds between polls")
@click.option("--no-progress", is_flag=True, help="no progress bar while following")
def jobs_logs(server, token, job_id, follow, interval, no_progress):
    """Print the log of JOB_ID (stdout); with -f keep following it until it ends and finish with
    a status line on stderr: "completed in 1m 12s, $0.42" or "failed: <reason>"."""
    c = Client(server, token)
    bar = TrainingBar(follow and not no_progress and is_tty(sys.stderr))
    offset, pending = 0, ""
    try:
        while True:
            data = read_log(c, job_id, offset)
            offset = data["next_offset"]
            text = pending + data["text"]
            head, nl, pending = text.rpartition("\n")
            if nl:
                bar.write(head + "\n")
            if not follow:
                break
            job = get_job(c, job_id)
            bar.update(job)
            if data["complete"]:
                break
            if offset >= data.get("size", 0):
                time.sleep(interval)
        if pending:
            bar.write(pending + "\n")
    finally:
        bar.close()
    if follow:
        click.echo(final_line(job, get_events(c, job_id)), err=True)
        sys.exit(exit_code_of(job))


@jobs_group.command("wait")
@server_opt
@token_opt
@job_id_arg
@click.option("--timeout", type=click.FloatRange(0), default=None, help="give up after this many seconds (exit 2)")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.05), help="seconds between polls")
@json_opt
def jobs_wait(server, token, job_id, timeout, interval, as_json):
    """Wait until JOB_ID ends: exit 0 completed, 1 failed or cancelled, 2 timed out."""
    c = Client(server, token)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = get_job(c, job_id)
        if job.get("terminal"):
            break
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            if as_json:
                echo_json({"job": job, "timed_out": True})
            click.echo(f"timeout: job {job_id} is still {job['status']} after {duration(timeout)}", err=True)
            sys.exit(EXIT_TIMEOUT)
        time.sleep(interval if left is None else min(interval, left))
    if as_json:
        echo_json({"job": job, "timed_out": False})
    else:
        click.echo(final_line(job, get_events(c, job_id)))
    sys.exit(exit_code_of(job))


# ---- download ----------------------------------------------------------------------------

def _safe_relpath(name: str) -> Path | None:
    """A relative path inside the target directory, or None for names that would leave it."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts):
        return None
    return Path(*p.parts)


def _checkpoint_files(c: Client, job: dict, step: int) -> list[dict]:
    """The files of the checkpoint at ``step`` (``GET /api/cloud/jobs/<id>/checkpoints``), named
    ``checkpoint-<step>/<file>``. Exits with a clear message when there is none at that step."""
    listing = call(lambda: c.get(f"/api/cloud/jobs/{job['id']}/checkpoints"))["checkpoints"]
    stored = [ck["step"] for ck in listing if ck.get("downloadable")]
    ck = next((ck for ck in listing if ck["step"] == step and ck.get("downloadable")), None)
    if ck is None:
        fail(f"job {job['id']} has no checkpoint at step {step}"
             + (f" (stored: step {', '.join(map(str, sorted(stored)))})" if stored else " (it stored none)"))
    return [{"name": f"checkpoint-{step}/{f['name']}", "download_url": f["download_url"]} for f in ck["files"]]


@jobs_group.command("download")
@server_opt
@token_opt
@job_id_arg
@click.option("--checkpoint", "step", type=click.IntRange(0), default=None,
              help="the checkpoint saved at this step instead of the final outputs")
@click.option("-o", "--output-dir", "out_dir", type=click.Path(file_okay=False), default=None,
              help="where to write the files (default: ./JOB_ID)")
@json_opt
def jobs_download(server, token, job_id, step, out_dir, as_json):
    """Download the outputs of JOB_ID (or one checkpoint) through the API's download links."""
    c = Client(server, token, timeout=300)
    job = get_job(c, job_id)
    if step is not None:
        files = _checkpoint_files(c, job, step)
    else:
        files = [o for o in job.get("outputs") or [] if o.get("download_url") or o.get("url")]
        if not files:
            state = job["status"] if job.get("terminal") else f"{job['status']}; outputs arrive when it completes"
            fail(f"job {job_id} has no outputs to download ({state})")
    target = Path(out_dir or job_id)
    planned = []
    for f in files:
        rel = _safe_relpath(f.get("name") or "")
        if rel is None:
            fail(f"refusing to write output {f.get('name')!r} outside {target}")
        planned.append((f, target / rel))
    new_dirs = {d for _f, dest in planned for d in [dest.parent, *dest.parent.parents] if not d.exists()}
    done = []
    for f, dest in planned:
        try:
            size, sha = c.download(f.get("download_url") or f["url"], dest)
            if f.get("sha256") and f["sha256"] != sha:
                dest.unlink(missing_ok=True)
                raise ApiError(0, f"{f['name']}: sha256 mismatch (expected {f['sha256'][:16]}…, got {sha[:16]}…)")
        except ApiError as exc:
            for d in done:  # all or nothing: no half set of files left behind
                Path(d["path"]).unlink(missing_ok=True)
            for d in sorted(new_dirs, key=lambda p: len(p.parts), reverse=True):
                try:
                    d.rmdir()
                except OSError:
                    pass
            if step is not None and exc.status == 404:
                fail(f"the checkpoint at step {step} of job {job_id} is no longer stored")
            fail(f"{' '.join(str(exc).split())}; nothing was kept")
        done.append({"name": f["name"], "path": str(dest), "size": size, "sha256": sha})
        if not as_json:
            click.echo(f"{dest}  {bytes_h(size)}")
    if as_json:
        echo_json({"job_id": job_id, "directory": str(target), "checkpoint": step, "files": done})
    else:
        click.echo(f"downloaded {len(done)} file(s), {bytes_h(sum(d['size'] for d in done))} to {target}", err=True)


# ---- cancel ------------------------------------------------------------------------------

@jobs_group.command("cancel")
@server_opt
@token_opt
@job_id_arg
@json_opt
def jobs_cancel(server, token, job_id, as_json):
    """Cancel JOB_ID (at the provider first). A job that already ended is an error."""
    c = Client(server, token)
    before = get_job(c, job_id)
    if before.get("terminal"):
        fail(f"job {job_id} already finished ({before['status']}); nothing to cancel")
    job = call(lambda: c.post(f"/api/cloud/jobs/{job_id}/cancel"))["job"]
    if job["status"] != "cancelled":  # it ended on its own meanwhile
        fail(f"job {job_id} already finished ({job['status']}); nothing to cancel")
    if as_json:
        echo_json({"job": job})
    else:
        click.echo(f"cancelled {job_id}")
