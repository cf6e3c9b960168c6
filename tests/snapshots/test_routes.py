"""Snapshot API, pages and CLI (no submit service needed)."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from stcloud.snapshots import git as gitmod
from stcloud.snapshots.cli import configs_group
from tests.conftest import csrf_of
from tests.snapshots.helpers import ALL_SECRETS, config, get_job, repo, seed_job


def problem(resp, status):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    return resp.get_json()


@pytest.fixture
def three_runs(app):
    a = seed_job(app, message="baseline")
    o = seed_job(app, name="portrait", cfg=config(lr=5e-5))
    b = seed_job(app, cfg=config(lr=2e-4), message="double the lr")
    return {"a": a, "b": b, "other": o}


def test_configs_list_empty_then_filled(app, client, three_runs):
    data = client.get("/api/cloud/configs").get_json()
    assert data["enabled"] is True and data["error"] is None and data["git"].startswith("git version")
    by_name = {c["name"]: c for c in data["configs"]}
    assert set(by_name) == {"my-lora", "portrait"}
    assert by_name["my-lora"]["snapshots"] == 2
    assert by_name["my-lora"]["last_job_id"] == three_runs["b"]
    assert by_name["my-lora"]["last_commit"] == get_job(app, three_runs["b"]).snapshot
    assert by_name["my-lora"]["last_message"] == "double the lr"
    assert [c["name"] for c in data["configs"]] == ["my-lora", "portrait"]  # most recent first


def test_configs_list_without_any_snapshot(client):
    data = client.get("/api/cloud/configs").get_json()
    assert data["configs"] == [] and data["error"] is None


def test_history_and_files_at_commit(app, client, three_runs):
    hist = client.get("/api/cloud/configs/my-lora/history").get_json()
    assert [h["job_id"] for h in hist["history"]] == [three_runs["b"], three_runs["a"]]
    assert hist["history"][1]["message"] == "baseline"
    old = hist["history"][1]["commit"]
    at = client.get(f"/api/cloud/configs/my-lora/at/{old}").get_json()
    assert at["commit"] == old and at["job_id"] == three_runs["a"]
    assert at["config"]["--learning_rate"] == 1e-4 and at["dataloader_config"][0]["id"] == "photos"
    assert set(at["files"]) == {"config.json", "dataloader.json"}
    assert not any(s in json.dumps(at) for s in ALL_SECRETS)
    assert at["previous"] is None
    new = client.get(f"/api/cloud/configs/my-lora/at/{hist['history'][0]['commit'][:12]}").get_json()
    assert new["previous"]["commit"] == old and "+  \"--learning_rate\": 0.0002," in new["diff"]
    assert client.get("/api/cloud/configs/my-lora/history?limit=1").get_json()["history"][0]["job_id"] == three_runs["b"]


@pytest.mark.parametrize("url, status", [
    ("/api/cloud/configs/nothing-here/history", 404),
    ("/api/cloud/configs/..%2F..%2Fetc/history", 404),
    ("/api/cloud/configs/my%20lora/history", 404),  # names are the sanitised directory names
    ("/api/cloud/configs/my-lora/history?limit=0", 400),
    ("/api/cloud/configs/my-lora/at/HEAD", 400),
    ("/api/cloud/configs/my-lora/at/--output=x", 400),
    ("/api/cloud/configs/my-lora/at/" + "0" * 40, 404),
    ("/api/cloud/jobs/job_nope/snapshot", 404),
])
def test_bad_input_is_problem_json(client, three_runs, url, status):
    problem(client.get(url), status)


def test_files_at_commit_where_the_config_did_not_exist(app, client, three_runs):
    first = get_job(app, three_runs["a"]).snapshot
    assert "does not exist" in problem(client.get(f"/api/cloud/configs/portrait/at/{first}"), 404)["detail"]


def test_job_snapshot_api_shape(app, client, three_runs):
    data = client.get(f"/api/cloud/jobs/{three_runs['b']}/snapshot").get_json()
    assert data["commit"] == get_job(app, three_runs["b"]).snapshot
    assert data["previous"] == {"job_id": three_runs["a"], "commit": get_job(app, three_runs["a"]).snapshot,
                                "at": data["previous"]["at"]}
    assert set(data["files"]) == {"config.json", "dataloader.json"}
    assert '-  "--learning_rate": 0.0001,' in data["diff"] and '+  "--learning_rate": 0.0002,' in data["diff"]
    assert data["config_name"] == "my-lora" and data["config_blob"]
    # the job API carries the sha too
    assert client.get(f"/api/cloud/jobs/{three_runs['b']}").get_json()["job"]["snapshot"] == data["commit"]


def test_no_git_configs_api_explains(client, three_runs, monkeypatch):
    monkeypatch.setattr(gitmod, "GIT_BINARY", "no-such-git")
    data = client.get("/api/cloud/configs").get_json()
    assert data["git"] is None and "git not installed" in data["error"] and data["configs"] == []
    assert "git not installed" in problem(client.get("/api/cloud/configs/my-lora/history"), 503)["detail"]
    snap = client.get(f"/api/cloud/jobs/{three_runs['a']}/snapshot").get_json()
    assert snap["files"] is None and "git not installed" in snap["error"]
    assert "git not installed" in client.get("/configs").get_data(as_text=True)


def test_broken_repo_configs_api_explains(client, home, three_runs):
    (repo(home) / ".git" / "HEAD").write_text("garbage")
    assert "broken" in client.get("/api/cloud/configs").get_json()["error"]
    assert "broken" in problem(client.get("/api/cloud/configs/my-lora/history"), 503)["detail"]
    assert "broken" in client.get("/configs").get_data(as_text=True)


def test_rerun_bad_input(client, three_runs):
    problem(client.post(f"/api/cloud/jobs/{three_runs['a']}/rerun", json={"exact": "sometimes"}), 400)
    problem(client.post("/api/cloud/jobs/job_nope/rerun", json={"exact": True}), 404)
    problem(client.post(f"/api/cloud/jobs/{three_runs['a']}/rerun", data="[1]",
                        content_type="application/json"), 400)


# ---- pages -----------------------------------------------------------------------------

def test_configs_page_lists_and_links_to_submit(client, three_runs, app):
    html = client.get("/configs").get_data(as_text=True)
    assert "my-lora" in html and "portrait" in html
    sha = get_job(app, three_runs["b"]).snapshot
    assert f"/submit?config_name=my-lora&amp;commit={sha}" in html
    frag = client.get("/configs/my-lora", headers={"HX-Request": "true"})
    text = frag.get_data(as_text=True)
    assert "<html" not in text and "double the lr" in text and three_runs["a"] in text
    assert frag.headers["Vary"] == "HX-Request"
    assert "<html" in client.get("/configs/my-lora").get_data(as_text=True)
    version = client.get(f"/configs/my-lora/at/{sha}").get_data(as_text=True)
    assert 'class="dl dl-add"' in version and "Use this version" in version


def test_job_page_includes_section_and_snapshot_fragment_renders_diff(client, three_runs, app):
    job_html = client.get(f"/jobs/{three_runs['b']}").get_data(as_text=True)
    assert 'id="snapshot-section"' in job_html and f"/jobs/{three_runs['b']}/snapshot" in job_html
    frag = client.get(f"/jobs/{three_runs['b']}/snapshot", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in frag
    assert re.search(r'<ins class="dl dl-add">\+  &#34;--learning_rate&#34;: 0.0002,</ins>', frag)
    assert re.search(r'<del class="dl dl-del">-  &#34;--learning_rate&#34;: 0.0001,</del>', frag)
    assert "Re-run exactly" in frag and "Re-run with current data" in frag
    assert three_runs["a"] in frag  # the previous run is linked
    first = client.get(f"/jobs/{three_runs['a']}/snapshot").get_data(as_text=True)
    assert "<html" in first and "first run of this config" in first


def test_job_without_snapshot_shows_the_reason(client, app):
    jid = seed_job(app, take_snapshot=False, snapshot_error="git not installed: snapshot skipped")
    assert "git not installed: snapshot skipped" in client.get(f"/jobs/{jid}").get_data(as_text=True)
    frag = client.get(f"/jobs/{jid}/snapshot", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "git not installed: snapshot skipped" in frag and "Re-run exactly" in frag


def test_rerun_page_needs_csrf(client, three_runs):
    assert client.post(f"/jobs/{three_runs['a']}/rerun", data={"exact": "1"}).status_code == 403


def test_settings_form_toggles(client):
    token = csrf_of(client)
    resp = client.post("/configs/settings", data={"enabled": "0", "csrf_token": token})
    assert resp.status_code == 303
    assert client.get("/api/cloud/configs").get_json()["enabled"] is False
    assert "Turn on" in client.get("/configs").get_data(as_text=True)


def test_identical_configs_are_one_entry(app, client, three_runs):
    """The same config saved under three names: the API says which are the same, the page
    shows one row (the most recently used name) naming the others."""
    seed_job(app, name="copy-1", cfg=config(lr=2e-4))  # byte-identical to my-lora's latest
    seed_job(app, name="copy-2", cfg=config(lr=2e-4))
    by_name = {c["name"]: c for c in client.get("/api/cloud/configs").get_json()["configs"]}
    assert by_name["copy-2"]["same_as"] == ["copy-1", "my-lora"]
    assert by_name["my-lora"]["same_as"] == ["copy-2", "copy-1"]
    assert by_name["portrait"]["same_as"] == []
    html = client.get("/configs").get_data(as_text=True)
    rows = re.findall(r'<tr data-config="([^"]+)"', html)
    assert rows == ["copy-2", "portrait"]
    same = re.search(r'<div class="muted small same-as">(.*?)</div>', html, re.S).group(1)
    assert re.sub(r"<[^>]+>|\s+", " ", same).split() == ["the", "same", "config", "is", "also", "saved", "as",
                                                           "copy-1", ",", "my-lora"]


# ---- CLI -------------------------------------------------------------------------------

def test_cli_list_history_show(live_server, three_runs, app):
    runner = CliRunner()
    out = runner.invoke(configs_group, ["list", "--server", live_server])
    assert out.exit_code == 0, out.output
    assert "my-lora" in out.output and "portrait" in out.output
    assert out.output.splitlines()[0].split() == ["NAME", "SNAPSHOTS", "LAST", "COMMIT", "LAST", "JOB", "LAST", "AT"]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", out.output.splitlines()[1])  # as on the pages
    out = runner.invoke(configs_group, ["history", "my-lora", "--server", live_server])
    assert out.exit_code == 0 and three_runs["a"] in out.output and "double the lr" in out.output
    assert re.search(rf"^\w{{10}}  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC  {three_runs['a']}  ", out.output, re.MULTILINE)
    out = runner.invoke(configs_group, ["show", three_runs["b"], "--server", live_server, "--files"])
    assert out.exit_code == 0, out.output
    assert get_job(app, three_runs["b"]).snapshot in out.output
    assert '+  "--learning_rate": 0.0002,' in out.output and "== config.json ==" in out.output
    out = runner.invoke(configs_group, ["history", "nope", "--server", live_server])
    assert out.exit_code == 1 and "404" in out.output
    out = runner.invoke(configs_group, ["show", three_runs["a"], "--server", live_server, "--json"])
    assert json.loads(out.output)["previous"] is None


def test_cli_is_attached_to_the_console_script():
    from stcloud.cli import main

    assert "configs" in main.commands
    assert set(main.commands["configs"].commands) >= {"list", "history", "show", "rerun"}
