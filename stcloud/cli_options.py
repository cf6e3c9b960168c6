"""Options and error handling shared by every REST-client command of the CLI."""
from __future__ import annotations

import sys

import click

from stcloud.client import ApiError

server_opt = click.option("--server", envvar="STCLOUD_SERVER", default=None,
                          help="stcloud base URL [default: the server of `stcloud login`, else "
                               "http://127.0.0.1:8080]")
token_opt = click.option("--token", envvar=["STCLOUD_TOKEN", "STCLOUD_ADMIN_TOKEN"], default=None,
                         help="API key (stc_…) or the admin token [default: the key `stcloud login` stored]")
json_opt = click.option("--json", "as_json", is_flag=True, help="print the API answer as JSON")


def fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def call(fn, hint=None):
    """Run an API call; on an API error print one line (and ``hint(exc)`` if given) and exit 1."""
    try:
        return fn()
    except ApiError as exc:
        click.echo(f"error: {' '.join(str(exc).split())}", err=True)  # one line, whatever the detail holds
        if hint is not None:
            extra = hint(exc)
            if extra:
                click.echo(f"hint: {extra}", err=True)
        sys.exit(1)
