"""``stcloud jobs submit``: submit through the REST API with the consent prompt and a terminal
progress bar (scan -> package -> upload -> submit) that follows the job until it is queued.

The submit request runs in a thread; the main thread polls
``GET /api/cloud/jobs/submit/progress?idempotency_key=...`` (every submit carries a key, a
fresh one unless ``--idempotency-key`` is given) and draws the bar on stderr. Only the job
id goes to stdout, so ``JOB=$(stcloud jobs submit ...)`` works.
"""
from __future__ import annotations

import json
import sys
import threading
import uuid
from pathlib import Path

import click

from stcloud.cli_options import fail, json_opt, server_opt, token_opt
from stcloud.cli_output import echo_json
from stcloud.client import ApiError, Client

STAGE_LABELS = {"scan": "scanning", "package": "packaging", "upload": "uploading", "submit": "submitting",
                "submitted": "submitted", "failed": "failed"}
BAR_WIDTH = 28


def _read_json(path: str, what: str, kind: type):
    try:
        text = Path(path).read_text()
    except OSError as exc:
        fail(f"cannot read {what} file {path}: {exc.strerror or exc}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"{what} file {path} is not valid JSON: {exc}")
    if not isinstance(value, kind):
        fail(f"{what} file {path} must contain a JSON {'object' if kind is dict else 'list'}")
    return value


def human_bytes(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def format_summary(summary: dict) -> str:
    totals = summary.get("totals") or {}
    lines = [f"Data to upload: {totals.get('files', 0)} files, {human_bytes(totals.get('bytes'))} "
             f"from {totals.get('datasets', 0)} local dataset(s)"]
    for ds in summary.get("datasets") or []:
        lines.append(f"  - {ds['id']}: {ds['files']} files, {human_bytes(ds['bytes'])} ({ds['source_dir']})")
    for ds in summary.get("not_packaged") or []:
        lines.append(f"  - {ds['id']}: not uploaded ({ds['reason']})")
    excluded = summary.get("excluded") or []
    if excluded:
        lines.append(f"Excluded ({totals.get('excluded', len(excluded))}):")
        for e in excluded[:20]:
            lines.append(f"  - {e['dataset']}/{e['path']}: {e['reason']}")
        more = len(excluded) - 20 + int(summary.get("excluded_more") or 0)
        if more > 0:
            lines.append(f"  ... and {more} more")
    return "\n".join(lines)


class ProgressBar:
    """One line on stderr, redrawn in place on a terminal, one line per stage otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_stage = None
        self.drawn = False

    def show(self, progress: dict | None, status: str | None = None):
        progress = progress or {}
        stage = progress.get("stage") or "scan"
        pct = float(progress.get("submit_percent") or 0)
        label = STAGE_LABELS.get(stage, stage)
        detail = ""
        if stage == "upload" and progress.get("upload_total"):
            detail = f" {human_bytes(progress.get('upload_bytes'))}/{human_bytes(progress.get('upload_total'))}"
        elif stage == "package" and progress.get("stage_total"):
            detail = f" {human_bytes(progress.get('stage_done'))}/{human_bytes(progress.get('stage_total'))}"
        filled = int(BAR_WIDTH * min(100.0, pct) / 100)
        line = f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {pct:5.1f}% {label}{detail}"
        if status and stage in ("submitted", "failed"):
            line += f" ({status})"
        if self.tty:
            self.stream.write("\r" + line.ljust(78))
            self.stream.flush()
            self.drawn = True
        elif stage != self.last_stage:
            self.stream.write(line + "\n")
            self.stream.flush()
        self.last_stage = stage

    def done(self):
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def run_submit(client: Client, body: dict, *, show_progress: bool = True, interval: float = 0.3):
    """POST the submit in a thread while polling its progress. Returns the response body or
    raises ApiError."""
    result: dict = {}

    def worker():
        try:
            result["body"] = client.post("/api/cloud/jobs/submit", json=body)
        except ApiError as exc:
            result["error"] = exc
        except Exception as exc:  # noqa: BLE001 - reported on the main thread
            result["error"] = ApiError(0, str(exc))

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    bar = ProgressBar() if show_progress else None
    key = body["idempotency_key"]
    while t.is_alive():
        t.join(interval)
        if bar is None or not t.is_alive():
            break
        try:
            job = client.get("/api/cloud/jobs/submit/progress", params={"idempotency_key": key}).get("job")
        except ApiError:
            job = None
        if job is not None:
            bar.show(job.get("progress"), job.get("status"))
    t.join()
    if bar is not None:
        final = (result.get("body") or {}).get("job")
        if final is not None:
            bar.show({**(final.get("progress") or {}), "stage": "submitted", "submit_percent": 100},
                     final.get("status"))
        elif bar.last_stage is not None:
            bar.show({"stage": "failed", "submit_percent": 100})
        bar.done()
    if "error" in result:
        raise result["error"]
    return result["body"]


@click.command("submit")
@server_opt
@token_opt
@click.option("--provider", required=True, help="a provider the server lists (GET /api/cloud/providers)")
@click.option("--config", "config_path", required=True, help="training config (JSON file)")
@click.option("--dataloader", "dataloader_path", required=True, help="dataloader config (JSON list file)")
@click.option("--name", default=None, help="job name")
@click.option("--hardware", default=None,
              help="the provider's hardware profile (`stcloud cost rates` lists them), e.g. gpu-l40s")
@click.option("--max-cost", "max_cost", type=float, default=None, help="per-job cost cap in USD")
@click.option("--idempotency-key", "idempotency_key", default=None,
              help="retrying with the same key within 24 h returns the first job")
@click.option("--config-name", default=None, help="name the config snapshot is filed under")
@click.option("--message", "snapshot_message", default=None, help="config snapshot message")
@click.option("--delivery", "delivery_json", default=None, help="delivery settings as JSON, e.g. '{\"type\": \"hub\", ...}'")
@click.option("-y", "--yes", is_flag=True, help="consent to uploading the data without asking")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--auto-resume", "auto_resume", type=click.IntRange(1, 20), default=None,
              help="on failure, resume from the last checkpoint automatically, up to this many attempts in all")
@json_opt
def submit_command(server, token, provider, config_path, dataloader_path, name, hardware, max_cost,
                   idempotency_key, config_name, snapshot_message, delivery_json, yes, no_progress, as_json,
                   auto_resume=None):
    """Submit a training job; prints the job id.

    Local datasets are scanned and summarised; for a cloud provider you are asked before
    anything is uploaded (unless --yes). Dataset paths are the server's: a relative
    instance_data_dir is relative to the server's first dataset root (STCLOUD_DATASET_ROOTS),
    the same as in the dashboard and the API, and is sent as written.
    """
    config = _read_json(config_path, "config", dict)
    dataloader = _read_json(dataloader_path, "dataloader", list)
    body: dict = {"provider": provider, "config": config, "dataloader_config": dataloader,
                  "idempotency_key": idempotency_key or f"cli-{uuid.uuid4().hex}"}
    for key, value in (("name", name), ("hardware", hardware), ("max_cost_usd", max_cost),
                       ("config_name", config_name), ("snapshot_message", snapshot_message)):
        if value is not None:
            body[key] = value
    if delivery_json:
        try:
            body["delivery"] = json.loads(delivery_json)
        except ValueError as exc:
            fail(f"--delivery is not valid JSON: {exc}")
    if yes:
        body["data_consent"] = True
    if auto_resume:
        body["auto_resume"] = {"max_attempts": auto_resume}
    client = Client(server, token, timeout=3600)
    try:
        try:
            data = run_submit(client, body, show_progress=not no_progress)
        except ApiError as exc:
            summary = exc.body.get("summary") if exc.status == 409 else None
            if summary is None or not exc.body.get("consent_required"):
                raise
            click.echo(format_summary(summary), err=True)
            try:
                agreed = click.confirm(f"Upload this data to {provider}?", default=False, err=True)
            except click.Abort:  # no terminal to ask on
                fail("consent needed to upload this data; run again with --yes to confirm")
            if not agreed:
                fail("not submitted: consent declined", code=2)
            body["data_consent"] = True
            data = run_submit(client, body, show_progress=not no_progress)
    except ApiError as exc:
        job_id = exc.body.get("job_id")
        fail(" ".join(str(exc).split()) + (f" (job {job_id})" if job_id else ""))
    job = data["job"]
    if as_json:
        echo_json(data)
        return
    for w in data.get("warnings") or []:
        click.echo(f"warning: {w}", err=True)
    if data.get("idempotent"):
        click.echo(f"already submitted with this idempotency key: {job['id']} ({job['status']})", err=True)
    else:
        click.echo(f"submitted {job['id']} to {job['provider']}: {job['status']}", err=True)
    click.echo(job["id"])
