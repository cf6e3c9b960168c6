"""``stcloud configs list | history NAME | show JOB_ID | rerun JOB_ID`` (REST client)."""
from __future__ import annotations

import sys
from urllib.parse import quote

import click

from stcloud.cli_options import call, json_opt, server_opt, token_opt
from stcloud.cli_output import echo_json, first_line, table, when
from stcloud.client import Client
from stcloud.snapshots.service import diff_lines


def _rerun_hint(exc) -> str | None:
    offer = (exc.body or {}).get("offer")
    if offer and offer.get("exact") is False:
        return ("the dataset changed since the original run; "
                "re-run with the current data: stcloud configs rerun --current-data JOB_ID")
    return None


DIFF_COLOURS = {"add": "green", "del": "red", "hunk": "cyan"}


def _echo_diff(text: str) -> None:
    color = sys.stdout.isatty()
    for line in diff_lines(text):
        fg = DIFF_COLOURS.get(line["kind"])
        click.echo(click.style(line["text"], fg=fg) if (color and fg) else line["text"])


@click.group("configs")
def configs_group():
    """Config snapshots (git): saved configs, their history, a job's snapshot, re-run."""


@configs_group.command("list")
@server_opt
@token_opt
@json_opt
def configs_list(server, token, as_json):
    """Saved configs, most recently used first."""
    data = call(lambda: Client(server, token).get("/api/cloud/configs"))
    if as_json:
        echo_json(data)
        return
    if data.get("error"):
        click.echo(f"warning: {data['error']}", err=True)
    if not data.get("enabled"):
        click.echo("note: snapshots are turned off", err=True)
    rows = [[c["name"], c["snapshots"], c["last_commit"][:10], c.get("last_job_id") or "-",
             when(c.get("last_at"))] for c in data.get("configs", [])]
    for line in table(["NAME", "SNAPSHOTS", "LAST COMMIT", "LAST JOB", "LAST AT"], rows, right={1}):
        click.echo(line)


@configs_group.command("history")
@server_opt
@token_opt
@json_opt
@click.argument("name")
@click.option("--limit", default=50, show_default=True, type=int)
def configs_history(server, token, as_json, name, limit):
    """Snapshots of config NAME, newest first."""
    data = call(lambda: Client(server, token).get(f"/api/cloud/configs/{quote(name, safe='')}/history",
                                                   params={"limit": limit}))
    if as_json:
        echo_json(data)
        return
    rows = [[h["commit"][:10], when(h["at"]), h.get("job_id") or "-", first_line(h.get("message"))]
            for h in data["history"]]
    for line in table(["COMMIT", "AT", "JOB", "MESSAGE"], rows):
        click.echo(line)


@configs_group.command("show")
@server_opt
@token_opt
@json_opt
@click.argument("job_id")
@click.option("--files/--no-files", default=False, help="also print config.json and dataloader.json")
def configs_show(server, token, as_json, job_id, files):
    """A job's snapshot commit and its diff against the previous run of the same config."""
    data = call(lambda: Client(server, token).get(f"/api/cloud/jobs/{job_id}/snapshot"))
    if as_json:
        echo_json(data)
        return
    if not data.get("commit"):
        click.echo(f"{job_id}: no snapshot" + (f" ({data['snapshot_error']})" if data.get("snapshot_error") else ""))
        return
    click.echo(f"job      {job_id}\nconfig   {data['config_name']}\ncommit   {data['commit']}")
    prev = data.get("previous")
    click.echo(f"previous {prev['job_id'] or '-'} ({prev['commit'][:10]})" if prev else "previous - (first run)")
    if data.get("error"):
        click.echo(f"warning: {data['error']}", err=True)
    if files and data.get("files"):
        for name, text in data["files"].items():
            click.echo(f"\n== {name} ==\n{text or '(absent)'}")
    if prev:
        click.echo("")
        if data.get("diff"):
            _echo_diff(data["diff"])
        else:
            click.echo("(no changes since the previous run)")


@configs_group.command("rerun")
@server_opt
@token_opt
@json_opt
@click.argument("job_id")
@click.option("--current-data", is_flag=True, help="use the dataset as it is now (not an exact re-run)")
@click.option("--yes", "consent", is_flag=True, default=None, help="consent to uploading the dataset")
@click.option("-m", "--message", default=None, help="snapshot message for the new run")
def configs_rerun(server, token, as_json, job_id, current_data, consent, message):
    """Re-run JOB_ID exactly (same config commit, dataset sha256, provider and hardware)."""
    body = {"exact": not current_data}
    if consent:
        body["data_consent"] = True
    if message:
        body["snapshot_message"] = message
    data = call(lambda: Client(server, token).post(f"/api/cloud/jobs/{job_id}/rerun", json=body), hint=_rerun_hint)
    if as_json:
        echo_json(data)
        return
    for w in data.get("warnings") or []:
        click.echo(f"warning: {w}", err=True)
    job = data["job"]
    click.echo(f"{job['id']} {job['status']} (re-run of {job_id}{', exact' if data.get('exact') else ''})")
