"""``stcloud cost status|limits|rates|estimate`` — a REST client of the cost API."""
from __future__ import annotations

import json

import click

from stcloud.cli_options import call, json_opt, server_opt, token_opt
from stcloud.cli_output import echo_json
from stcloud.client import Client


def _money(v) -> str:
    return "-" if v is None else f"${v:,.2f}"


def _status_line(st: dict) -> str:
    scope = "global" if st["provider"] == "all" else st["provider"]
    if not st["enabled"]:
        return (f"{scope:<10} no limit      spent {_money(st['spent_usd'])} + reserved {_money(st['reserved_usd'])}"
                f" this {st['period']} period")
    flag = "EXCEEDED" if st["is_exceeded"] else ("WARNING" if st["is_warning"] else "ok")
    return (f"{scope:<10} {st['period']:<8} {st['action']:<5}{' +stop' if st.get('stop_running') else '      '} "
            f"spent {_money(st['spent_usd'])} + reserved {_money(st['reserved_usd'])} of {_money(st['amount_usd'])}"
            f" = {st['percent_used']:.1f}%  {flag}  ({st['period_start']} .. {st['period_end']} {st['timezone']})")


@click.group("cost")
def cost_group():
    """Spend, spending limits, hardware rates and estimates."""


@cost_group.command("status")
@server_opt
@token_opt
@click.option("--provider", default=None, help="one limit: a provider name or 'all' (default: all of them)")
@json_opt
def cost_status(server, token, provider, as_json):
    """Spend against the limits in the current period."""
    c = Client(server, token)
    if provider:
        data = call(lambda: c.get("/api/cloud/cost-limit/status", params={"provider": provider}))
        items = [data]
    else:
        data = call(lambda: c.get("/api/cloud/cost-limits"))
        items = data["limits"]
    if as_json:
        echo_json(data)
        return
    for st in items:
        click.echo(_status_line(st))


@cost_group.group("limits")
def limits_group():
    """Show or set spending limits."""


@limits_group.command("show")
@server_opt
@token_opt
@json_opt
def limits_show(server, token, as_json):
    c = Client(server, token)
    data = call(lambda: c.get("/api/cloud/cost-limits"))
    if as_json:
        echo_json(data)
        return
    for st in data["limits"]:
        click.echo(_status_line(st))


@limits_group.command("set")
@server_opt
@token_opt
@click.argument("provider")
@click.option("--amount", type=float, required=True, help="limit in USD (>= 0)")
@click.option("--period", type=click.Choice(("daily", "weekly", "monthly")), required=True)
@click.option("--action", type=click.Choice(("warn", "block")), required=True)
@click.option("--timezone", default=None, help="IANA time zone of the calendar periods (default: unchanged / UTC)")
@click.option("--stop-running/--no-stop-running", default=None,
              help="with block: cancel running jobs once the actual spend reaches the limit")
@click.option("--disable", is_flag=True, help="store the limit but switch it off")
@json_opt
def limits_set(server, token, provider, amount, period, action, timezone, stop_running, disable, as_json):
    """Set the limit of PROVIDER (a provider the server lists, or all for the global one)."""
    body = {"enabled": not disable, "amount_usd": amount, "period": period, "action": action}
    if timezone:
        body["timezone"] = timezone
    if stop_running is not None:
        body["stop_running"] = stop_running
    c = Client(server, token)
    st = call(lambda: c.put(f"/api/cloud/cost-limits/{provider}", json=body))
    if as_json:
        echo_json(st)
        return
    click.echo(_status_line(st))


@cost_group.command("rates")
@server_opt
@token_opt
@click.option("--set", "set_rate", nargs=3, type=(str, str, float), default=None,
              metavar="PROVIDER PROFILE USD_PER_HOUR", help="add a dated rate effective now")
@json_opt
def cost_rates(server, token, set_rate, as_json):
    """List hardware rates (or add one with --set)."""
    c = Client(server, token)
    if set_rate:
        p, hw, per_hour = set_rate
        data = call(lambda: c.put("/api/cloud/rates", json={"provider": p, "hardware": hw, "usd_per_hour": per_hour}))
    else:
        data = call(lambda: c.get("/api/cloud/rates"))
    if as_json:
        echo_json(data)
        return
    for r in data["rates"]:
        per_hour = "-" if r.get("usd_per_hour") is None else f"${r['usd_per_hour']:.4f}/h"
        click.echo(f"{r['provider']:<10} {r['hardware']:<20} {per_hour:>12}  {r.get('effective_from') or 'default'}")


@cost_group.command("estimate")
@server_opt
@token_opt
@click.option("--provider", default="replicate", show_default=True, help="a provider name the server knows")
@click.option("--hardware", default=None)
@click.option("--steps", type=int, default=None, help="max_train_steps")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a training config JSON file")
@json_opt
def cost_estimate(server, token, provider, hardware, steps, config_path, as_json):
    """What a job would cost, and what it would meet at the limits."""
    config = {}
    if config_path:
        with open(config_path, encoding="utf-8") as fh:
            config = json.load(fh)
    if steps:
        config["max_train_steps"] = steps
    c = Client(server, token)
    data = call(lambda: c.post("/api/cloud/cost-estimate",
                                json={"provider": provider, "hardware": hardware, "config": config}))
    if as_json:
        echo_json(data)
        return
    rng = f" (p50 {_money(data['p50_usd'])}, p90 {_money(data['p90_usd'])})" if data.get("p90_usd") is not None else ""
    click.echo(f"estimate {_money(data['estimated_cost_usd'])}{rng}")
    click.echo(f"basis: {data.get('basis_text') or data['basis']}")
    for w in data.get("warnings", []):
        click.echo(f"warning: {w}")
    if data.get("would_block"):
        click.echo(f"would be refused: {data.get('block_reason')}")
