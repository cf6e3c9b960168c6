"""``GET|PUT /api/cloud/providers/slurm``: every key validated (400 naming the field), the
REST token write-only, defaults from this instance, per-job overrides."""
from __future__ import annotations

import json
import os
import stat

import pytest

from stcloud import secrets
from stcloud.errors import BadRequest
from stcloud.providers import slurm_factory, slurm_settings
from stcloud.workers import service as workers_service

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdW4iOiJyb290In0.c2lnbmF0dXJl"


def put(client, body):
    return client.put("/api/cloud/providers/slurm", data=json.dumps(body), content_type="application/json")


def test_defaults_then_a_full_round_trip(client, app, home):
    view = client.get("/api/cloud/providers/slurm").get_json()
    assert view["transport"] == "cli" and view["rest_token_set"] is False and "rest_token" not in view
    assert view["defaults"]["output_dir"] == str(home / "slurm")
    assert view["defaults"]["agent_python"] == "python3"
    body = {"transport": "rest", "partition": "gpu", "account": "lab-1", "qos": "normal", "time_limit": 120,
            "gpus_per_job": 0, "cpus_per_job": 2, "mem_per_job_mb": 4096,
            "extra_sbatch": ["#SBATCH --constraint=a100", "--exclusive"],
            "trainer_command": "simpletuner train --config {config}", "server_url": "http://login1:8080/",
            "agent_python": "/opt/stcloud/venv/bin/python", "output_dir": "/scratch/stcloud",
            "rest_url": "http://slurm-api:6820", "rest_user": "alice", "rest_token": "SLURM_JWT=" + JWT,
            "gpu_hour_usd": 1.25}
    resp = put(client, body)
    assert resp.status_code == 200, resp.get_json()
    got = resp.get_json()
    assert "rest_token" not in got and got["rest_token_set"] is True
    assert got["extra_sbatch"] == ["--constraint=a100", "--exclusive"]
    assert got["server_url"] == "http://login1:8080" and got["gpus_per_job"] == 0 and got["gpu_hour_usd"] == 1.25
    assert JWT not in json.dumps(client.get("/api/cloud/providers/slurm").get_json())
    # write-only: kept in the encrypted secret store (0600), not in the database
    mode = stat.S_IMODE(os.stat(home / "secrets.enc").st_mode)
    assert mode == 0o600 and JWT not in (home / "secrets.enc").read_text()
    assert secrets.get(home, slurm_settings.TOKEN_SECRET_KEY) == JWT
    with app.app_context():
        assert slurm_settings.rest_token() == JWT
    # a later PUT without the token keeps it; the token can be removed
    assert put(client, {"partition": "debug"}).get_json()["rest_token_set"] is True
    assert client.delete("/api/cloud/providers/slurm/token").get_json()["rest_token_set"] is False


@pytest.mark.parametrize("field,value", [
    ("transport", "ssh"), ("partition", "gpu; rm -rf"), ("account", 5), ("qos", "a b"),
    ("time_limit", 0), ("time_limit", "ten"), ("time_limit", 1.5), ("gpus_per_job", -1), ("gpus_per_job", True),
    ("cpus_per_job", 0), ("mem_per_job_mb", "lots"), ("extra_sbatch", "--exclusive"),
    ("extra_sbatch", ["--exclusive\n#SBATCH --x"]), ("extra_sbatch", ["rm -rf /"]),
    ("extra_sbatch", ["--output=/tmp/x"]), ("trainer_command", "a 'b"), ("server_url", "login1:8080"),
    ("server_url", "ftp://x"), ("agent_python", "python3"), ("output_dir", "relative/dir"),
    ("rest_url", "not a url"), ("rest_user", "bad user"), ("rest_token", "not-a-jwt"), ("rest_token", 42),
    ("gpu_hour_usd", -1), ("gpu_hour_usd", "free"), ("gpu_hour_usd", float("inf")), ("surprise", 1),
])
def test_bad_values_are_400_naming_the_field(client, field, value):
    body = {field: value}
    resp = client.put("/api/cloud/providers/slurm", data=json.dumps(body, allow_nan=True),
                      content_type="application/json")
    assert resp.status_code == 400, (field, value, resp.get_json())
    problem = resp.get_json()
    assert resp.content_type.startswith("application/problem+json")
    assert problem["field"] == field and field in problem["detail"]
    assert client.get("/api/cloud/providers/slurm").get_json()["transport"] == "cli"  # nothing stored


def test_rest_transport_needs_url_user_and_token(client):
    for body, field in (({"transport": "rest"}, "rest_url"),
                        ({"transport": "rest", "rest_url": "http://h:6820"}, "rest_user"),
                        ({"transport": "rest", "rest_url": "http://h:6820", "rest_user": "bob"}, "rest_token")):
        resp = put(client, body)
        assert resp.status_code == 400 and resp.get_json()["field"] == field
    assert put(client, {"transport": "rest", "rest_url": "http://h:6820", "rest_user": "bob",
                        "rest_token": JWT}).status_code == 200
    assert put(client, {"not": "json object"}).status_code == 400
    # slurmrestd takes only options that are job properties: the others are refused by name
    bad = put(client, {"extra_sbatch": ["--constraint=a100", "--nodelist=node1"]})
    assert bad.status_code == 400 and bad.get_json()["field"] == "extra_sbatch"
    assert "--nodelist" in bad.get_json()["detail"]
    assert put(client, {"extra_sbatch": ["--constraint=a100", "--exclusive"]}).status_code == 200
    assert put(client, {"transport": "cli", "extra_sbatch": ["--nodelist=node1"]}).status_code == 200
    assert client.put("/api/cloud/providers/slurm", data="[1]", content_type="application/json").status_code == 400


def test_per_job_override():
    assert slurm_settings.parse_override(None) == {}
    assert slurm_settings.parse_override({"partition": "gpu", "time_limit": 30, "gpus_per_job": 0}) == \
        {"partition": "gpu", "time_limit": 30, "gpus_per_job": 0}
    for bad, field in (({"account": "x"}, "slurm.account"), ({"time_limit": -5}, "slurm.time_limit"),
                       ({"partition": "a b"}, "slurm.partition"), ("gpu", "slurm")):
        with pytest.raises(BadRequest) as err:
            slurm_settings.parse_override(bad)
        assert err.value.extra["field"] == field


def test_factory_builds_the_adapter_from_the_settings(client, app):
    put(client, {"partition": "debug", "gpus_per_job": 2, "server_url": "http://10.0.0.5:8080",
                 "extra_sbatch": ["--constraint=a100"], "gpu_hour_usd": 2.0, "trainer_command": "train {config}"})
    with app.app_context():
        svc = slurm_factory.create()
        token = svc.mint_job_token("job_x", 1)
    assert svc.provider_name == "slurm" and svc.config.gpus_per_job == 2 and token.startswith("stj_1.")
    assert svc.config.extra_sbatch == ("--constraint=a100",)
    with app.app_context():
        assert token == workers_service.mint_job_token("job_x", 1) != workers_service.mint_job_token("job_x", 2)


def test_providers_page_form_uses_the_same_validation(client):
    from tests.conftest import csrf_of

    page = client.get("/providers").get_data(as_text=True)
    assert "Slurm cluster" in page and 'action="/providers/slurm/settings"' in page
    token = csrf_of(client)
    form = {"csrf_token": token, "partition": "gpu", "extra_sbatch": "--constraint=a100 --exclusive",
            "gpus_per_job": "2", "rest_token": ""}
    resp = client.post("/providers/slurm/settings", data=form)
    assert resp.status_code == 200 and "Settings saved." in resp.get_data(as_text=True)
    view = client.get("/api/cloud/providers/slurm").get_json()
    assert view["extra_sbatch"] == ["--constraint=a100", "--exclusive"] and view["gpus_per_job"] == 2
    assert view["rest_token_set"] is False
    # the form posts every field back as it showed them: nothing untouched is re-parsed
    shown = {"csrf_token": token, "partition": "gpu", "extra_sbatch": str(view["extra_sbatch"]),
             "gpus_per_job": "2", "time_limit": "", "server_url": "", "qos": "queue-a"}
    assert client.post("/providers/slurm/settings", data=shown).status_code == 200
    view = client.get("/api/cloud/providers/slurm").get_json()
    assert view["extra_sbatch"] == ["--constraint=a100", "--exclusive"] and view["qos"] == "queue-a"
    bad = client.post("/providers/slurm/settings", data={"csrf_token": token, "time_limit": "-3"})
    assert bad.status_code == 422 and "time_limit" in bad.get_data(as_text=True)
    assert client.get("/api/cloud/providers/slurm").get_json()["time_limit"] is None


def test_with_sign_in_on_only_an_admin_changes_the_settings(make_app):
    client = make_app(STCLOUD_AUTH="on").test_client()
    assert put(client, {"partition": "gpu"}).status_code == 401
    assert client.get("/api/cloud/providers/slurm").status_code == 401


def test_submit_body_slurm_object_is_validated_by_the_adapter(app):
    """The per-job ``slurm`` object reaches the adapter through the seam's validate_options:
    bad values are a 400 naming the field before any job exists."""
    from stcloud.jobs import request as job_request
    from stcloud.models import Job

    body = {"provider": "slurm", "config": {"max_train_steps": 10},
            "dataloader_config": [{"id": "hub", "type": "huggingface", "dataset_name": "user/set"}]}
    with app.app_context():
        assert job_request.parse_body({**body, "slurm": {"partition": "gpu", "time_limit": 5}}).options == \
            {"partition": "gpu", "time_limit": 5}
        for bad, field in (({"time_limit": -1}, "time_limit"), ({"nodes": 2}, "nodes"), ("gpu", "slurm")):
            with pytest.raises(BadRequest) as exc:
                job_request.parse_body({**body, "slurm": bad})
            assert field in exc.value.detail
        from stcloud import db
        with db.session() as s:
            assert s.query(Job).count() == 0


def test_server_url_defaults_to_the_public_url(make_app):
    """Compute nodes reach stcloud at ``server_url``; left empty it is the instance's public URL
    (the setting, else ``STCLOUD_PUBLIC_URL``), and the batch script's agent is pointed there."""
    from stcloud.providers.base import RunRequest

    app = make_app(STCLOUD_PUBLIC_URL="https://env.example.org")
    client = app.test_client()

    def effective():
        view = client.get("/api/cloud/providers/slurm").get_json()
        with app.app_context():
            svc = slurm_factory.create()
            script = svc.batch_job(RunRequest(job_id="job_url", name="u", config={}, dataloader_config=[])).script
        return view, svc, script

    view, svc, script = effective()
    assert view["server_url"] is None and view["defaults"]["server_url"] == "https://env.example.org"
    assert svc.config.server_url == "https://env.example.org" and svc.not_ready_reason() is None
    assert "--server https://env.example.org --job job_url" in script
    # the public URL set in the settings wins over the environment
    assert client.put("/api/cloud/settings/public-url", json={"public_url": "https://training.example.com/"}
                      ).status_code == 200
    view, svc, script = effective()
    assert view["defaults"]["server_url"] == "https://training.example.com"
    assert svc.config.server_url == "https://training.example.com"
    assert "--server https://training.example.com --job job_url" in script
    # an explicit server_url (the address the nodes use) wins; cleared, the default is back
    assert put(client, {"server_url": "http://10.1.0.5:8080"}).status_code == 200
    view, svc, script = effective()
    assert view["server_url"] == "http://10.1.0.5:8080" and "server_url" not in view["defaults"]
    assert "--server http://10.1.0.5:8080 --job job_url" in script
    assert put(client, {"server_url": None}).status_code == 200
    assert effective()[1].config.server_url == "https://training.example.com"


def test_without_any_url_slurm_is_not_ready(make_app):
    app = make_app()
    with app.app_context():
        app.config.pop("STCLOUD_LOCAL_URL", None)
        svc = slurm_factory.create()
    assert svc.config.server_url is None
    assert "server_url" in svc.not_ready_reason()
