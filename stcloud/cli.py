"""``stcloud`` console script: serve | scheduler | db upgrade | jobs ... (+ commands that
other packages contribute, listed in ``EXTRA_COMMANDS``)."""
from __future__ import annotations

import importlib
import signal
import threading

import click

from stcloud import resources
from stcloud.cli_options import fail
from stcloud.jobs import job_secrets

# (group or None for top level, "module:attr")
EXTRA_COMMANDS = [
    (None, "stcloud.jobs.cli:jobs_group"),
    (None, "stcloud.workers.agent:worker_command"),
    (None, "stcloud.costs.cli:cost_group"),
    (None, "stcloud.snapshots.cli:configs_group"),
    (None, "stcloud.accounts.cli:login_command"),
    (None, "stcloud.accounts.cli:logout_command"),
    (None, "stcloud.accounts.cli:audit_group"),
    (None, "stcloud.accounts.cli:users_group"),
    (None, "stcloud.cli_completion:completion_command"),
    (None, "stcloud.ops.cli:backup_command"),
    (None, "stcloud.ops.cli:restore_command"),
    ("jobs", "stcloud.jobs.approval_cli:approve_command"),
    ("jobs", "stcloud.jobs.approval_cli:reject_command"),
    (None, "stcloud.pipelines.cli:pipelines_group"),
]


def alembic_config(url: str, home: str | None = None):
    """``home``: STCLOUD_HOME, whose secret store the migrations that move secrets use."""
    from alembic.config import Config

    cfg = Config(str(resources.ALEMBIC_INI))
    cfg.set_main_option("script_location", str(resources.MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if home is not None:
        cfg.attributes.update(job_secrets.migration_hooks(home))
    return cfg


def upgrade_db(app) -> None:
    from alembic import command

    command.upgrade(alembic_config(app.config["STCLOUD_DATABASE_URL"], app.config["STCLOUD_HOME"]), "head")


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
    command.upgrade(alembic_config(app.config["STCLOUD_DATABASE_URL"], app.config["STCLOUD_HOME"]), revision)
    click.echo(f"database at {app.config['STCLOUD_DATABASE_URL']} is at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision):
    from alembic import command

    from stcloud import create_app

    app = create_app()
    command.downgrade(alembic_config(app.config["STCLOUD_DATABASE_URL"], app.config["STCLOUD_HOME"]), revision)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--local-worker/--no-local-worker", default=False, show_default=True,
              help="Run the embedded local worker beside the server.")
@click.option("--scheduler/--no-scheduler", default=True, show_default=True,
              help="Run the scheduler in this process (turn off when `stcloud scheduler` runs).")
@click.option("--login-link", is_flag=True,
              help="Print a one-time sign-in link for the first admin (what `make run` does).")
def serve(host, port, local_worker, scheduler, login_link):
    """Serve the dashboard and API (migrates the database first)."""
    from werkzeug.serving import make_server

    from stcloud import create_app
    from stcloud import scheduler as sched_mod
    from stcloud.accounts import bootstrap
    from stcloud.errors import StcloudError
    from stcloud.web import auth

    try:
        app = create_app()
    except StcloudError as exc:
        fail(exc.detail, 2)
    if not auth.auth_enabled(app) and not auth.is_loopback_host(host):
        fail(f"STCLOUD_AUTH=off is refused on a non-loopback address (--host {host}); "
             "bind to 127.0.0.1 or turn authentication on", 2)
    upgrade_db(app)
    bootstrap.ensure_admin(app)
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
    if login_link and auth.auth_enabled(app):
        click.echo(f"Sign in: {bootstrap.login_link_url(app, url)}  (one-time link, valid 15 minutes)", err=True)

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


def _attach_extras():
    for group, path in EXTRA_COMMANDS:
        module, _, attr = path.partition(":")
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # that feature is not installed in this tree
                continue
            raise
        (main.commands[group] if group else main).add_command(cmd)


_attach_extras()


def init_app(app):
    """``flask --app app db-upgrade`` convenience."""

    @app.cli.command("db-upgrade")
    def _flask_db_upgrade():
        upgrade_db(app)


if __name__ == "__main__":  # `python -m stcloud.cli` (the serve_process test fixture uses it)
    main()
