"""``stcloud pipelines submit FILE | show ID | cancel ID | list`` — a REST client."""
from __future__ import annotations

from pathlib import Path

import click
import yaml

from stcloud.cli_options import call, fail, json_opt, server_opt, token_opt
from stcloud.cli_output import echo_json, first_line, table
from stcloud.client import Client
from stcloud.pipelines import spec


def _print(p: dict) -> None:
    """The pipeline's head line, then one aligned row per step."""
    click.echo(f"{p['id']}  {p['name']}  {p['status']}")
    rows = []
    for st in p["steps"]:
        after = f"{', '.join(st['depends_on_steps'])} (on {st['on']})" if st["depends_on"] else "-"
        rows.append([st["step"], st["job_id"], st["status"], st["provider"], after,
                     first_line(st.get("reason") or st.get("error"))])
    for line in table(["STEP", "JOB", "STATUS", "PROVIDER", "AFTER", "NOTE"], rows):
        click.echo("  " + line)


@click.group("pipelines")
def pipelines_group():
    """Pipelines of jobs that wait for each other (docs/pipelines.md)."""


@pipelines_group.command("submit")
@server_opt
@token_opt
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_opt
def submit_cmd(server, token, file, as_json):
    """Submit a pipeline document (YAML or JSON)."""
    try:
        doc = spec.load_yaml(file.read_text())
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        fail(f"{file} is not valid YAML/JSON: {' '.join(str(exc).split())}")
    if not isinstance(doc, dict):
        fail(f"{file}: a pipeline document is an object with steps")
    c = Client(server, token)
    data = call(lambda: c.post("/api/cloud/pipelines", json=doc))
    if as_json:
        echo_json(data)
    else:
        _print(data["pipeline"])


@pipelines_group.command("show")
@server_opt
@token_opt
@click.argument("pipeline_id")
@json_opt
def show_cmd(server, token, pipeline_id, as_json):
    """A pipeline's steps and their states."""
    c = Client(server, token)
    data = call(lambda: c.get(f"/api/cloud/pipelines/{pipeline_id}"))
    if as_json:
        echo_json(data)
    else:
        _print(data["pipeline"])


@pipelines_group.command("list")
@server_opt
@token_opt
@json_opt
def list_cmd(server, token, as_json):
    """Pipelines, newest first."""
    c = Client(server, token)
    data = call(lambda: c.get("/api/cloud/pipelines"))
    if as_json:
        echo_json(data)
        return
    rows = [[p["id"], p["name"], p["status"], len(p["steps"])] for p in data["pipelines"]]
    if not rows:
        click.echo("no pipelines")
        return
    for line in table(["ID", "NAME", "STATUS", "STEPS"], rows, right={3}):
        click.echo(line)


@pipelines_group.command("cancel")
@server_opt
@token_opt
@click.argument("pipeline_id")
@json_opt
def cancel_cmd(server, token, pipeline_id, as_json):
    """Cancel every step that has not finished."""
    c = Client(server, token)
    data = call(lambda: c.post(f"/api/cloud/pipelines/{pipeline_id}/cancel"))
    if as_json:
        echo_json(data)
    else:
        _print(data["pipeline"])
