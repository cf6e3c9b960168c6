"""Compare runs: ``GET /api/cloud/jobs/compare`` (series + table figures + config diff), its
errors, ownership (members compare only their own jobs), and the page."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner

from stcloud import db
from stcloud.cli import main
from stcloud.jobs import service
from stcloud.models import Job, utcnow
from tests.accounts.helpers import set_owner, team
from tests.jobs.factories import make_job
from tests.jobs.test_checkpoints_api import agent_checkpoint, put

URL = "/api/cloud/jobs/compare"


def _run(app, name, lr, losses, *, secs=60, cost=0.5, status="completed", extra=None):
    job_id = make_job(app, status, provider="worker", name=name)
    now = utcnow()
    with app.app_context(), db.transaction() as s:
        job = s.get(Job, job_id)
        job.config = {"max_train_steps": losses[-1][0], "learning_rate": lr, "lora_rank": 16,
                      "hf_token": "hf_secret_value", **(extra or {})}
        job.dataloader_config = [{"id": "pics", "type": "local", "instance_data_dir": "/data/pics"}]
        # the loss history arrives as log lines, like a running job's
        service.append_log(s, job, "".join(f"step {st}/{losses[-1][0]} loss={loss}\n" for st, loss in losses))
        job.started_at, job.completed_at, job.cost_usd = now - timedelta(seconds=secs), now, cost
    return job_id


@pytest.fixture
def runs(app):
    a = _run(app, "lr-1e-4", 1e-4, [[1, 0.9], [2, 0.5], [3, 0.6]], secs=90, cost=0.42)
    b = _run(app, "lr-3e-4", 3e-4, [[1, 0.8], [2, 0.4], [3, 0.3]], secs=60, cost=0.3,
             extra={"lr_scheduler": "cosine"})
    c = _run(app, "lr-1e-3", 1e-3, [[1, 0.7]], status="failed")
    return a, b, c


def test_compare_returns_series_table_and_diff(client, runs):
    a, b, c = runs
    r = client.get(f"{URL}?ids={a},{b}")
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert [j["id"] for j in body["jobs"]] == [a, b]
    ja, jb = body["jobs"]
    assert ja["series"] == [[1, 0.9], [2, 0.5], [3, 0.6]]
    assert ja["final_loss"] == 0.6 and ja["best_loss"] == 0.5
    assert ja["duration_seconds"] == 90 and ja["cost_usd"] == 0.42
    assert ja["steps"] == 3 and ja["learning_rate"] == 1e-4
    assert jb["lr_scheduler"] == "cosine" and jb["best_loss"] == 0.3
    changes = {c["key"]: c for c in body["diff"]["changes"]}
    assert body["diff"]["jobs"] == [a, b]
    assert changes["config.learning_rate"]["values"] == {a: 1e-4, b: 3e-4}
    assert changes["config.lr_scheduler"]["missing"] == [a]
    assert "config.lora_rank" not in changes and "dataloader_config[0].id" not in changes
    assert "hf_secret_value" not in r.get_data(as_text=True)


def test_compare_three_jobs_and_a_pair_diff(client, runs):
    a, b, c = runs
    body = client.get(f"{URL}?ids={a}&ids={b}&ids={c}&diff={b},{c}").get_json()
    assert len(body["jobs"]) == 3 and body["diff"]["jobs"] == [b, c]
    lr = next(x for x in body["diff"]["changes"] if x["key"] == "config.learning_rate")
    assert lr["values"] == {b: 3e-4, c: 1e-3}


@pytest.mark.parametrize("qs, field", [("", "ids"), ("?ids=one", "ids"),
                                       ("?ids=" + ",".join(f"j{i}" for i in range(11)), "ids")])
def test_compare_bad_ids_400(client, qs, field):
    r = client.get(URL + qs)
    assert r.status_code == 400 and r.mimetype == "application/problem+json"
    assert r.get_json()["field"] == field


def test_compare_bad_pair_and_unknown_job(client, runs):
    a, b, c = runs
    r = client.get(f"{URL}?ids={a},{b}&diff={a},{c}")
    assert r.status_code == 400 and r.get_json()["field"] == "diff"
    r = client.get(f"{URL}?ids={a},job_doesnotexist")
    assert r.status_code == 404 and "job_doesnotexist" in r.get_json()["detail"]


def test_members_compare_only_their_own_jobs(make_app):
    app = make_app(STCLOUD_AUTH="on")
    crew = team(app)
    mine1 = _run(app, "mine1", 1e-4, [[1, 0.5]])
    mine2 = _run(app, "mine2", 2e-4, [[1, 0.4]])
    theirs = _run(app, "theirs", 3e-4, [[1, 0.3]])
    for job_id, who in ((mine1, "member"), (mine2, "member"), (theirs, "member2")):
        set_owner(app, job_id, crew[who].user_id)
    client = app.test_client()
    r = client.get(f"{URL}?ids={mine1},{mine2}", headers=crew["member"].headers)
    assert r.status_code == 200 and len(r.get_json()["jobs"]) == 2
    r = client.get(f"{URL}?ids={mine1},{theirs}", headers=crew["member"].headers)
    assert r.status_code == 404
    r = client.get(f"/jobs/compare?ids={mine1},{theirs}", headers=crew["member"].headers)
    assert r.status_code == 404
    r = client.get(f"{URL}?ids={mine1},{theirs}", headers=crew["admin"].headers)
    assert r.status_code == 200


def test_compare_page_renders_table_and_diff(client, runs):
    a, b, c = runs
    html = client.get(f"/jobs/compare?ids={a},{b}").get_data(as_text=True)
    assert 'id="compare-chart"' in html and "chart-4.5.1" in html
    assert "lr-1e-4" in html and "lr-3e-4" in html and "config.learning_rate" in html
    assert "$0.42" in html and "1m 30s" in html
    assert "hf_secret_value" not in html


def test_compare_page_without_ids_says_how_to_start(client):
    r = client.get("/jobs/compare")
    assert r.status_code == 200 and b"compare-empty" in r.data and b"Compare selected" in r.data


def test_compare_lists_each_jobs_samples_per_step(app, client, runs):
    a, b, c = runs
    agent_checkpoint(app, a, 10)
    agent_checkpoint(app, a, 20)
    agent_checkpoint(app, b, 20)
    put(app, f"{b}/output/validation_images/step_30_portrait_512x512.png", b"\x89PNG\r\n\x1a\nv")
    body = client.get(f"{URL}?ids={a},{b},{c}").get_json()
    samples = {j["id"]: j["samples"] for j in body["jobs"]}
    assert samples[a] == [{"step": 10, "url": f"/api/cloud/jobs/{a}/checkpoints/10/files/sample.png"},
                          {"step": 20, "url": f"/api/cloud/jobs/{a}/checkpoints/20/files/sample.png"}]
    assert samples[b] == [
        {"step": 20, "url": f"/api/cloud/jobs/{b}/checkpoints/20/files/sample.png"},
        {"step": 30, "url": f"/api/cloud/jobs/{b}/checkpoints/30/files/validation_images/step_30_portrait_512x512.png"}]
    assert samples[c] == []
    for url in (s["url"] for s in samples[a] + samples[b]):  # each url serves the image
        r = client.get(url)
        assert r.status_code == 200 and r.data.startswith(b"\x89PNG")

    page = client.get(f"/jobs/compare?ids={a},{b},{c}").get_data(as_text=True)
    assert page.count('loading="lazy"') == 4 and 'id="compare-samples"' in page


def test_cli_compare_human_and_json(app, live_server, runs):
    a, b, c = runs
    agent_checkpoint(app, b, 2)

    def cli(*args):
        return CliRunner().invoke(main, ["jobs", "compare", "--server", live_server, *args], catch_exceptions=False)

    r = cli(a, b, c)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["JOB", "NAME", "STATUS", "PROVIDER"]
    assert re.search(rf"^  {a}\s+lr-1e-4\s+completed\s+worker\s+0\.6000\s+0\.5000\s+1m 30s\s+\$0\.42\s+3/3\s+0\.0001\s+-$",
                     r.stdout, re.MULTILINE)
    assert re.search(rf"^\* {b}\s+lr-3e-4\s+.*\s+0\.3000\s+0\.3000\s+.*\s+2$", r.stdout, re.MULTILINE)  # the best
    assert f"best final loss: {b} (lr-3e-4) 0.3000" in r.stdout
    assert re.search(r"^  config\.learning_rate\s+0\.0001\s+0\.0003\s+0\.001$", r.stdout, re.MULTILINE)
    assert re.search(r"^  config\.lr_scheduler\s+\(absent\)\s+\"cosine\"\s+\(absent\)$", r.stdout, re.MULTILINE)

    body = json.loads(cli(a, b, "--diff", f"{a},{b}", "--json").stdout)
    assert body["diff"]["jobs"] == [a, b] and [j["id"] for j in body["jobs"]] == [a, b]
    assert body["jobs"][1]["samples"] == [{"step": 2, "url": f"/api/cloud/jobs/{b}/checkpoints/2/files/sample.png"}]

    r = cli(a)
    assert r.exit_code == 1 and r.stdout == "" and r.stderr == "error: give at least two different job ids to compare\n"
    r = cli(a, "job_nope")
    assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1 and "job_nope" in r.stderr
