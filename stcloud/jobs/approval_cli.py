"""``stcloud jobs approve JOB_ID`` and ``stcloud jobs reject JOB_ID [--reason TEXT]`` (admin):
a REST client of ``POST /api/cloud/jobs/<id>/approve|reject``. A job that is not awaiting
approval is an error (the server's 409, one line, exit 1)."""
from __future__ import annotations

import click

from stcloud.cli_options import call, json_opt, server_opt, token_opt
from stcloud.cli_output import echo_json
from stcloud.client import Client
from stcloud.jobs.cli import job_id_arg


@click.command("approve")
@server_opt
@token_opt
@job_id_arg
@json_opt
def approve_command(server, token, job_id, as_json):
    """Approve JOB_ID, waiting in pending_approval: it launches on its provider."""
    job = call(lambda: Client(server, token).post(f"/api/cloud/jobs/{job_id}/approve"))["job"]
    if as_json:
        echo_json({"job": job})
    else:
        click.echo(f"approved {job_id}: {job['status']} on {job['provider']}")


@click.command("reject")
@server_opt
@token_opt
@job_id_arg
@click.option("--reason", default=None, help="Why (recorded on the job and in the audit log).")
@json_opt
def reject_command(server, token, job_id, reason, as_json):
    """Reject JOB_ID, waiting in pending_approval: it ends cancelled and costs nothing."""
    body = {"reason": reason} if reason else {}
    job = call(lambda: Client(server, token).post(f"/api/cloud/jobs/{job_id}/reject", json=body))["job"]
    if as_json:
        echo_json({"job": job})
    else:
        click.echo(f"rejected {job_id}: {job['status']}" + (f" ({reason})" if reason else ""))
