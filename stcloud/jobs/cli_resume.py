"""``stcloud jobs resume`` and ``stcloud jobs checkpoints`` (REST clients).

``resume JOB_ID [--provider P] [--checkpoint N] [--yes]``: shows the plan (checkpoint, steps
left, estimated cost left, spent so far), asks before starting (``--yes`` skips the question;
without a terminal the answer must be given with ``--yes``), then starts the new attempt.
"""
from __future__ import annotations

import sys

import click

from stcloud.cli_options import call, fail, json_opt, server_opt, token_opt
from stcloud.cli_output import bytes_h, echo_json, money, table
from stcloud.client import Client


def _plan_lines(p: dict) -> list[str]:
    left = (f"{p['remaining_steps']} of {p['total_steps']} steps" if p.get("remaining_steps") is not None
            else "unknown steps (no max_train_steps)")
    return [f"resume {p['job_id']} ({p['from_provider']}, {p['status']}) from the checkpoint at step {p['step']}",
            f"  runs on     {p['provider']}" + (f" · {p['hardware']}" if p.get("hardware") else ""),
            f"  left        {left}",
            f"  estimate    {money(p['estimated_cost_usd'])} for what is left"
            + (f"  ({p['estimate_basis']})" if p.get("estimate_basis") else ""),
            f"  spent       {money(p['chain_cost_usd'])} so far (this is attempt {p['attempt']} of the chain)"]


@click.command("resume")
@server_opt
@token_opt
@click.argument("job_id")
@click.option("--provider", default=None, help="run the new attempt here (default: the job's provider)")
@click.option("--checkpoint", "step", type=click.IntRange(0), default=None,
              help="the step of the checkpoint to start from (default: the newest)")
@click.option("--yes", "-y", is_flag=True, help="start without asking")
@click.option("--data-consent", is_flag=True, help="agree to upload the dataset when the provider asks")
@json_opt
def resume_command(server, token, job_id, provider, step, yes, data_consent, as_json):
    """Resume a failed, cancelled or timed-out JOB_ID from its checkpoint, here or elsewhere."""
    c = Client(server, token)
    params = {k: v for k, v in (("provider", provider), ("checkpoint", step)) if v is not None}
    p = call(lambda: c.get(f"/api/cloud/jobs/{job_id}/resume", params=params))["plan"]
    if not as_json:
        for line in _plan_lines(p):
            click.echo(line)
    if not yes:
        if as_json or not sys.stdin.isatty():
            if as_json:
                echo_json({"plan": p, "started": False})
            fail("not started: pass --yes to resume without a question")
        if not click.confirm("Start it?", default=True):
            fail("not started")
    body = {"provider": p["provider"], "checkpoint": p["step"]}
    if data_consent:
        body["data_consent"] = True
    answer = call(lambda: c.post(f"/api/cloud/jobs/{job_id}/resume", json=body))
    job = answer["job"]
    if as_json:
        echo_json({"plan": answer["plan"], "job": job, "started": True})
    else:
        click.echo(f"started {job['id']} on {job['provider']} ({job['status']}), resuming from step {p['step']}")


@click.command("checkpoints")
@server_opt
@token_opt
@click.argument("job_id")
@json_opt
def checkpoints_command(server, token, job_id, as_json):
    """List the checkpoints and sample images JOB_ID uploaded."""
    c = Client(server, token)
    listing = call(lambda: c.get(f"/api/cloud/jobs/{job_id}/checkpoints"))["checkpoints"]
    if as_json:
        echo_json({"job_id": job_id, "checkpoints": listing})
        return
    if not listing:
        click.echo(f"job {job_id} uploaded no checkpoints")
        return
    rows = [[str(ck["step"]), str(len(ck["files"])), bytes_h(ck["size"]) if ck["downloadable"] else "-",
             str(len(ck["samples"]))] for ck in listing]
    for line in table(["step", "files", "size", "samples"], rows, right={0, 1, 2, 3}):
        click.echo(line)
    click.echo(f"download one: stcloud jobs download {job_id} --checkpoint STEP", err=True)
