"""``stcloud jobs list | show | logs | cancel | submit`` — a REST client of the jobs API."""
from __future__ import annotations

import json
import time

import click

from stcloud.cli_options import call, server_opt, token_opt
from stcloud.client import Client
from stcloud.jobs.cli_submit import submit_command


@click.group("jobs")
def jobs_group():
    """List, inspect, follow and cancel jobs."""


jobs_group.add_command(submit_command)


@jobs_group.command("list")
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
    data = call(lambda: c.get("/api/cloud/jobs", params=params))
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


@jobs_group.command("show")
@server_opt
@token_opt
@click.argument("job_id")
def jobs_show(server, token, job_id):
    c = Client(server, token)
    job = call(lambda: c.get(f"/api/cloud/jobs/{job_id}"))["job"]
    events = call(lambda: c.get(f"/api/cloud/jobs/{job_id}/events"))["events"]
    click.echo(json.dumps({"job": job, "events": events}, indent=2))


@jobs_group.command("logs")
@server_opt
@token_opt
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="keep following until the job ends")
@click.option("--interval", default=2.0, show_default=True)
def jobs_logs(server, token, job_id, follow, interval):
    c = Client(server, token)
    offset = 0
    while True:
        data = call(lambda: c.get(f"/api/cloud/jobs/{job_id}/logs", params={"offset": offset}))
        if data["text"]:
            click.echo(data["text"], nl=False)
        offset = data["next_offset"]
        if data["complete"] or not follow:
            break
        if offset >= data.get("size", 0):
            time.sleep(interval)


@jobs_group.command("cancel")
@server_opt
@token_opt
@click.argument("job_id")
def jobs_cancel(server, token, job_id):
    c = Client(server, token)
    job = call(lambda: c.post(f"/api/cloud/jobs/{job_id}/cancel"))["job"]
    click.echo(f"{job['id']} {job['status']}")
