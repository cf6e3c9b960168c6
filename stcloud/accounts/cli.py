"""``stcloud login`` / ``logout`` (REST: a per-user API key kept in the user's config file),
``stcloud audit verify|export`` and ``stcloud users login-link|set-password`` (run on the
server: they open the database directly)."""
from __future__ import annotations

import json
import socket
import sys

import click
import requests

from stcloud import clientconfig, create_app
from stcloud.accounts import audit, bootstrap, service
from stcloud.cli_options import fail, server_opt
from stcloud.client import ApiError, Client
from stcloud.errors import StcloudError
from stcloud.timeutil import parse_iso


def _problem(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    return f"{resp.status_code} {body.get('detail') or body.get('title') or resp.reason}"


@click.command("login")
@server_opt
@click.option("-u", "--username", default=None, help="prompted when missing")
@click.option("--password", default=None, envvar="STCLOUD_PASSWORD",
              help="prompted when missing (or STCLOUD_PASSWORD)")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option("--name", "key_name", default=None, help="name of the API key [default: stcloud CLI on <host>]")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), default=None)
def login_command(server, username, password, password_stdin, key_name, expires_in_days):
    """Sign in and keep an API key for this server in your config file (mode 0600)."""
    server = clientconfig.normalize(server or clientconfig.default_server())
    if username is None:
        username = click.prompt("Username")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is None:
        password = click.prompt("Password", hide_input=True)
    http = requests.Session()
    try:
        resp = http.post(f"{server}/api/auth/login", json={"username": username, "password": password}, timeout=30)
        if resp.status_code != 200:
            fail(f"sign-in refused: {_problem(resp)}")
        user = resp.json()["user"]
        name = key_name or f"stcloud CLI on {socket.gethostname()}"
        body = {"name": name, **({"expires_in_days": expires_in_days} if expires_in_days else {})}
        created = http.post(f"{server}/api/cloud/tokens", json=body, timeout=30)
        if created.status_code != 201:
            fail(f"could not create an API key: {_problem(created)}")
        key = created.json()
        http.post(f"{server}/api/auth/logout", json={}, timeout=30)
    except requests.RequestException as exc:
        fail(f"cannot reach stcloud at {server}: {exc.__class__.__name__}")
    try:
        path = clientconfig.remember(server, key["token"], key["id"], user["username"])
    except (OSError, ValueError) as exc:
        fail(f"could not store the API key: {exc}")
    click.echo(f"Signed in to {server} as {user['username']} ({user['role']}); "
               f"API key {key['id']} stored in {path}")


@click.command("logout")
@server_opt
def logout_command(server):
    """Revoke the API key `stcloud login` stored for this server and forget it."""
    server = clientconfig.normalize(server or clientconfig.default_server())
    found = clientconfig.entry(server)
    if not found:
        fail(f"not signed in to {server}")
    try:
        Client(server, found.get("token")).delete(f"/api/cloud/tokens/{found.get('key_id')}")
    except ApiError as exc:
        if exc.status not in (401, 404):  # already revoked or expired: forgetting it is enough
            fail(f"could not revoke the API key: {exc}")
    clientconfig.forget(server)
    click.echo(f"Signed out of {server}")


# ---- on the server ----------------------------------------------------------------------------

def _app():
    return create_app()


@click.group("audit")
def audit_group():
    """The audit log (run on the server)."""


@audit_group.command("verify")
def audit_verify():
    """Check the hash chain; exits 1 when a record was changed or removed."""
    app = _app()
    with app.app_context():
        result = audit.verify()
    if not result.ok:
        click.echo(f"audit log BROKEN after {result.count} good records: {result.problem}", err=True)
        sys.exit(1)
    click.echo(f"audit log intact: {result.count} records")


@audit_group.command("export")
@click.option("--actor", default=None)
@click.option("--action", default=None, help="exact, or a prefix ending in * (job.*)")
@click.option("--since", default=None, help="ISO-8601 time")
def audit_export(actor, action, since):
    """Write the records as JSON Lines to standard output, oldest first."""
    when = parse_iso(since) if since else None
    if since and when is None:
        fail(f"--since must be an ISO-8601 time, got {since!r}")
    app = _app()
    with app.app_context():
        for line in audit.export_lines(actor=actor, action=action, since=when):
            click.echo(line, nl=False)


@click.group("users")
def users_group():
    """Accounts (run on the server)."""


@users_group.command("login-link")
@click.argument("username", required=False)
@click.option("--base-url", default=None, help="[default: STCLOUD_PUBLIC_URL, else http://127.0.0.1:8080]")
def users_login_link(username, base_url):
    """Print a one-time sign-in link (single use, 15 minutes) for USERNAME or the first admin."""
    app = _app()
    base = base_url or app.config.get("STCLOUD_PUBLIC_URL") or clientconfig.DEFAULT_SERVER
    try:
        click.echo(bootstrap.login_link_url(app, base, username))
    except StcloudError as exc:
        fail(exc.detail)


@users_group.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="read the new password from standard input")
def users_set_password(username, password_stdin):
    """Set a user's password (recovery when nobody can sign in)."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else \
        click.prompt("New password", hide_input=True, confirmation_prompt=True)
    app = _app()
    try:
        with app.app_context():
            user = service.update_user(username, {"password": password}, home=app.config["STCLOUD_HOME"])
    except StcloudError as exc:
        fail(exc.detail)
    click.echo(json.dumps({"user": user["username"], "password": "changed"}))
