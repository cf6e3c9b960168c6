"""``stcloud`` console script: serve | scheduler | db upgrade | jobs ... (+ commands that
other packages contribute, listed in ``EXTRA_COMMANDS``)."""
from __future__ import annotations

import importlib
import json
import signal
import threading
import time

import click

from stcloud import resources
from stcloud.cli_options import call as client_call
from stcloud.cli_options import fail, server_opt, token_opt  # noqa: F401 - fail is used by commands
from stcloud.client import Client

# (group or None for top level, "module:attr")
EXTRA_COMMANDS = [
    ("jobs", "stcloud.jobs.cli_submit:submit_command"),
    (None, "stcloud.workers.agent:worker_command"),
    (None, "stcloud.costs.cli:cost_group"),
    (None, "stcloud.snapshots.cli:configs_group"),
    (None, "stcloud.ops.cli:backup_command"),
    (None, "stcloud.ops.cli:restore_command"),
]


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config(str(resources.ALEMBIC_INI))
    cfg.set_main_option("script_location", str(resources.MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_db(app) -> None:
    from alembic import command

    command.upgrade(alembic_config(app.config["STCLOUD_DATABASE_URL"]), "head")


@click.group()
@click.version_option(package_name="stcloud")
def main():
    """stcloud — run and track training jobs on cloud GPUs and your own machines."""


@main.group()
def db():
    """Database migrations."""


@db.command("upgrade")
@click.option("--revision", default="head")
def db_upgrade(revision):
    """Apply migrations (alembic upgrade head)."""
    from alembic import command

    from stcloud import create_app

    app = create_app()
    command.upgrade(alembic_config(app.config["STCLOUD_DATABASE_URL"]), revision)
    click.echo(f"database at {app.config['STCLOUD_DATABASE_URL']} is at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision):
    from alembic import command

    from stcloud import create_app

    app = create_app()
    command.downgrade(alembic_config(app.config["STCLOUD_DATABASE_URL"]), revision)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--local-worker/--no-local-worker", default=False, show_default=True,
              help="Run the embedded local worker beside the server.")
@click.option("--scheduler/--no-scheduler", default=True, show_default=True,
              help="Run the scheduler in this process (turn off when `stcloud scheduler` runs).")
def serve(host, port, local_worker, scheduler):
    """Serve the dashboard and API (migrates the database first)."""
    from werkzeug.serving import make_server

    from stcloud import create_app
    from stcloud import scheduler as sched_mod

    app = create_app()
    upgrade_db(app)
    public = app.config.get("STCLOUD_PUBLIC_URL")
    server = make_server(host, port, app, threaded=True)
    url = f"http://{host}:{server.server_port}"
    app.config.setdefault("STCLOUD_LOCAL_URL", url)
    app.config["STCLOUD_LOCAL_URL"] = url
    if scheduler:
        sched_mod.start(app)
    worker = None
    if local_worker:
        from stcloud.workers.local import start_local_worker

        worker = start_local_worker(app, url)
    click.echo(f"stcloud serving on {url}" + (f" (public URL {public})" if public else "")
               + (" with the local worker" if local_worker else ""), err=True)

    def _stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.stop()
        sched = app.extensions.get("stcloud.scheduler")
        if sched:
            sched.shutdown(wait=False)


@main.command("scheduler")
def scheduler_cmd():
    """Run only the scheduler (pollers, liveness, spend limits) — one per installation."""
    from stcloud import create_app
    from stcloud import scheduler as sched_mod

    app = create_app()
    upgrade_db(app)
    sched_mod.start(app)
    click.echo("scheduler running; Ctrl-C to stop", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    app.extensions["stcloud.scheduler"].shutdown(wait=False)


# ---- jobs (REST client) ------------------------------------------------------------------



@main.group()
def jobs():
    """List, inspect, follow and cancel jobs."""


@jobs.command("list")
@server_opt
@token_opt
@click.option("--status", default=None, help="comma-separated statuses")
@click.option("--provider", default=None)
@click.option("-q", "query", default=None, help="name contains")
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
def jobs_list(server, token, status, provider, query, limit, as_json):
    c = Client(server, token)
    params = {k: v for k, v in {"status": status, "provider": provider, "q": query, "limit": limit}.items() if v}
    data = client_call(lambda: c.get("/api/cloud/jobs", params=params))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{'ID':<32} {'STATUS':<10} {'PROVIDER':<10} {'PROGRESS':<12} {'COST':>9}  NAME")
    for j in data["jobs"]:
        prog = j.get("progress") or {}
        p = f"{prog.get('step')}/{prog.get('total_steps')}" if prog.get("total_steps") else "-"
        cost = j.get("cost_usd") if j.get("cost_usd") is not None else j.get("estimated_cost_usd")
        cost_s = f"${cost:.2f}" if cost is not None else "-"
        click.echo(f"{j['id']:<32} {j['status']:<10} {j['provider']:<10} {p:<12} {cost_s:>9}  {j['name']}")
    click.echo(f"({len(data['jobs'])} of {data['total']})", err=True)


@jobs.command("show")
@server_opt
@token_opt
@click.argument("job_id")
def jobs_show(server, token, job_id):
    c = Client(server, token)
    job = client_call(lambda: c.get(f"/api/cloud/jobs/{job_id}"))["job"]
    events = client_call(lambda: c.get(f"/api/cloud/jobs/{job_id}/events"))["events"]
    click.echo(json.dumps({"job": job, "events": events}, indent=2))


@jobs.command("logs")
@server_opt
@token_opt
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="keep following until the job ends")
@click.option("--interval", default=2.0, show_default=True)
def jobs_logs(server, token, job_id, follow, interval):
    c = Client(server, token)
    offset = 0
    while True:
        data = client_call(lambda: c.get(f"/api/cloud/jobs/{job_id}/logs", params={"offset": offset}))
        if data["text"]:
            click.echo(data["text"], nl=False)
        offset = data["next_offset"]
        if data["complete"] or not follow:
            break
        if offset >= data.get("size", 0):
            time.sleep(interval)


@jobs.command("cancel")
@server_opt
@token_opt
@click.argument("job_id")
def jobs_cancel(server, token, job_id):
    c = Client(server, token)
    job = client_call(lambda: c.post(f"/api/cloud/jobs/{job_id}/cancel"))["job"]
    click.echo(f"{job['id']} {job['status']}")


def _attach_extras():
    groups = {"jobs": jobs}
    for group, path in EXTRA_COMMANDS:
        module, _, attr = path.partition(":")
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # that feature is not installed in this tree
                continue
            raise
        (groups[group] if group else main).add_command(cmd)


_attach_extras()


def init_app(app):
    """``flask --app app db-upgrade`` convenience."""

    @app.cli.command("db-upgrade")
    def _flask_db_upgrade():
        upgrade_db(app)


if __name__ == "__main__":  # `python -m stcloud.cli` (the serve_process test fixture uses it)
    main()
