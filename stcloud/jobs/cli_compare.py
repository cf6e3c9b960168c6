"""``stcloud jobs compare JOB_ID JOB_ID… [--diff A,B] [--json]`` — the compare page in the
terminal (``GET /api/cloud/jobs/compare``): one row per job (final and best loss, duration,
cost, steps, learning rate, sample steps), the best final loss marked, then the config diff."""
from __future__ import annotations

import json

import click

from stcloud.cli_completion import complete_job_id
from stcloud.cli_options import call, fail, json_opt, server_opt, token_opt
from stcloud.cli_output import duration, echo_json, money, table
from stcloud.client import Client

MAX_CELL = 40


def _loss(value) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _cell(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def best_by_final_loss(jobs: list[dict]) -> dict | None:
    """The job with the lowest final loss (None when no job reported one)."""
    scored = [j for j in jobs if j.get("final_loss") is not None]
    return min(scored, key=lambda j: j["final_loss"]) if scored else None


def _row(j: dict, best_id: str | None) -> list[str]:
    steps = "-" if j.get("steps") is None else f"{j['steps']}" + (f"/{j['total_steps']}" if j.get("total_steps") else "")
    sample_steps = sorted({s["step"] for s in j.get("samples") or []})
    return [("* " if j["id"] == best_id else "  ") + j["id"], j["name"], j["status"], j["provider"],
            _loss(j.get("final_loss")), _loss(j.get("best_loss")),
            duration(j.get("duration_seconds")) if j.get("duration_seconds") is not None else "-",
            money(j["cost_usd"]) if j.get("cost_usd") is not None else "-", steps,
            "-" if j.get("learning_rate") is None else str(j["learning_rate"]),
            ",".join(map(str, sample_steps)) or "-"]


@click.command("compare")
@server_opt
@token_opt
@click.argument("job_ids", nargs=-1, required=True, shell_complete=complete_job_id)
@click.option("--diff", "pair", default=None, metavar="A,B", help="diff the configs of these two jobs only")
@json_opt
def compare_command(server, token, job_ids, pair, as_json):
    """Compare 2-10 jobs: losses, duration, cost, learning rate, sample steps and config diff."""
    if len(set(job_ids)) < 2:
        fail("give at least two different job ids to compare")
    params = {"ids": ",".join(job_ids)}
    if pair:
        params["diff"] = pair
    data = call(lambda: Client(server, token).get("/api/cloud/jobs/compare", params=params))
    if as_json:
        echo_json(data)
        return
    jobs = data["jobs"]
    best = best_by_final_loss(jobs)
    headers = ["  JOB", "NAME", "STATUS", "PROVIDER", "FINAL LOSS", "BEST LOSS", "TIME", "COST", "STEPS", "LR",
               "SAMPLES AT"]
    for line in table(headers, [_row(j, best and best["id"]) for j in jobs], right={4, 5, 6, 7, 8}):
        click.echo(line)
    if best is not None:
        click.echo(f"\nbest final loss: {best['id']} ({best['name']}) {_loss(best['final_loss'])}")
    names = {j["id"]: j["name"] for j in jobs}
    diff = data["diff"]
    changes = diff["changes"]
    if not changes:
        click.echo("\nconfigs: identical")
        return
    click.echo(f"\nconfig diff ({len(changes)} key{'s' if len(changes) != 1 else ''}):")
    rows = [[c["key"], *("(absent)" if jid in c["missing"] else _cell(c["values"][jid]) for jid in diff["jobs"])]
            for c in changes]
    for line in table(["KEY", *(names[jid] for jid in diff["jobs"])], rows):
        click.echo("  " + line)
