"""``stcloud jobs resume`` (plan, confirmation, human and --json output) and ``stcloud jobs
checkpoints`` against a live server."""
from __future__ import annotations

import json

from click.testing import CliRunner

from stcloud.cli import main
from tests.jobs.test_checkpoints_api import agent_checkpoint, make_job


def cli(server, *args, input=None):
    return CliRunner().invoke(main, ["jobs", *args], input=input, catch_exceptions=False,
                              env={"STCLOUD_SERVER": server})


def test_resume_shows_the_plan_and_asks(app, live_server):
    jid = make_job(app, "failed", provider="worker", config={"max_train_steps": 100})
    agent_checkpoint(app, jid, 20)
    agent_checkpoint(app, jid, 60)

    r = cli(live_server, "resume", jid, "--provider", "local")  # no terminal, no --yes: nothing starts
    assert r.exit_code == 1 and r.stderr == "error: not started: pass --yes to resume without a question\n"
    assert f"resume {jid} (worker, failed) from the checkpoint at step 60" in r.stdout
    assert "left        40 of 100 steps" in r.stdout

    r = cli(live_server, "resume", jid, "--provider", "local", "--checkpoint", "20", "--yes")
    assert r.exit_code == 0, r.stderr
    assert "left        80 of 100 steps" in r.stdout
    new_id = r.stdout.strip().splitlines()[-1].split()[1]
    assert r.stdout.strip().endswith(f"started {new_id} on local (queued), resuming from step 20")

    r = cli(live_server, "resume", jid, "--checkpoint", "60", "--yes", "--json")
    data = json.loads(r.stdout)
    assert r.exit_code == 0 and data["started"] and data["plan"]["step"] == 60 and data["job"]["resumed_from"] == jid

    r = cli(live_server, "resume", jid, "--checkpoint", "30", "--yes")
    assert r.exit_code == 1 and "no checkpoint at step 30 (stored: 20, 60)" in r.stderr

    r = cli(live_server, "checkpoints", jid, "--json")
    assert [ck["step"] for ck in json.loads(r.stdout)["checkpoints"]] == [20, 60]
