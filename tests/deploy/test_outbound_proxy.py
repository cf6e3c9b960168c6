"""Every outbound call goes through the configured forward proxy (a real tinyproxy on
loopback): Replicate's API (account, file upload, predictions, webhook secret), Replicate's
status page, output downloads, external S3 (moto) and the Hugging Face Hub (the fake).
``NO_PROXY`` and the Providers-page setting are honoured."""
from __future__ import annotations

import json

import boto3
import pytest

from stcloud import db, secrets
from stcloud.models import Job, utcnow
from stcloud.providers import replicate_factory, replicate_status
from stcloud.publishing import service as publishing
from stcloud.webhooks import service as webhooks
from tests.deploy.conftest import VIA_NAME
from tests.fakes.replicate_fake import FakeReplicate

TOKEN = "r8_test_token"
STATUS = json.dumps({"status": {"indicator": "none", "description": "All Systems Operational"}}).encode()


@pytest.fixture
def fake():
    with FakeReplicate(tokens=(TOKEN,)) as f:
        yield f


@pytest.fixture
def proxied_app(make_app, fake, filehost, no_proxy_env):
    no_proxy_env.setenv("REPLICATE_API_TOKEN", TOKEN)
    filehost.files["status.json"] = STATUS
    return make_app(REPLICATE_BASE_URL=fake.base_url, REPLICATE_STATUS_URL=f"{filehost.url}/status.json")


def _replicate_calls(app, tmp_path):
    """Account, upload, versions, prediction create + read, webhook secret, status page."""
    archive = tmp_path / "data.zip"
    archive.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with app.app_context():
        app.extensions.pop("stcloud.replicate_status", None)
        svc = replicate_factory.create()
        assert svc.validate_credentials()["username"]
        svc.upload_file(archive, job_id="job_proxy")
        version = svc.resolve_version()
        created = svc.create_prediction(job_id="job_proxy", input={"x": 1}, version=version)
        svc.get_prediction(created.prediction["id"])
        webhooks.secret_cache().clear()
        assert webhooks.secret_cache().get(TOKEN, app.config["REPLICATE_BASE_URL"]).startswith("whsec_")
        assert replicate_status.status_page()["available"] is True


def _deliveries(app, home, filehost, moto_server, hub, monkeypatch):
    """One job delivered to external S3 (moto) and one to the Hub: downloads + uploads."""
    monkeypatch.setenv("HF_TOKEN", hub.token)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    filehost.files["lora.safetensors"] = b"weights" * 1000
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="team")
    ids = []
    with app.app_context():
        _c, _e, s3_record = publishing.prepare_for_submit(
            "j1", "replicate", {"type": "s3", "endpoint_url": moto_server, "bucket": "team",
                                "access_key": "testing", "secret_key": "testing"}, {})
        _c, _e, hf_record = publishing.prepare_for_submit("j2", "replicate",
                                                          {"type": "hf", "hub_model_id": "me/lora"}, {})
        with db.transaction() as s:
            for record in (s3_record, hf_record):
                job = Job(name="remote", provider="replicate", status="completed", completed_at=utcnow(),
                          delivery=record, outputs=[{"name": "lora.safetensors",
                                                     "url": f"{filehost.url}/lora.safetensors",
                                                     "destination": "replicate"}])
                s.add(job)
                s.flush()
                ids.append(job.id)
        secrets.put(home, f"delivery_s3_secret:{ids[0]}", "testing")
        _deliver_through_retries(ids)
        with db.session() as s:
            for job_id in ids:
                job = s.get(Job, job_id)
                assert job.delivery["state"] == "delivered", job.delivery_error
    assert hub.repos["me/lora"]["files"]["lora.safetensors"] == b"weights" * 1000


def _deliver_through_retries(ids: list[str]) -> None:
    """Run the scheduler's delivery pass until nothing is left to retry. tinyproxy closes every
    connection after one answer without saying so; a POST (the Hub's commit) sent on it in that
    instant is lost, is not sent twice by the transport, and the delivery's own retry sends it
    again. Only that error may cause a retry here, and the backoff is skipped."""
    for _ in range(publishing.MAX_ATTEMPTS):
        publishing.deliver_pending()
        with db.transaction() as s:
            waiting = [job for job in (s.get(Job, i) for i in ids) if job.delivery["state"] == "retry"]
            for job in waiting:
                assert "without sending a response" in job.delivery["last_error"], job.delivery_error
                job.delivery = {**job.delivery, "next_attempt_at": None}
        if not waiting:
            return


def test_every_outbound_call_goes_through_the_environment_proxy(
        proxied_app, fake, filehost, moto_server, hub, forward_proxy, home, tmp_path, no_proxy_env):
    no_proxy_env.setenv("HTTP_PROXY", forward_proxy.url)
    no_proxy_env.setenv("HTTPS_PROXY", forward_proxy.url)
    _replicate_calls(proxied_app, tmp_path)
    _deliveries(proxied_app, home, filehost, moto_server, hub, no_proxy_env)

    # The fake Replicate saw every call, each one carrying the proxy's Via header.
    assert len(fake.requests) >= 6
    for rec in fake.requests:
        assert VIA_NAME in rec.headers.get("Via", ""), (rec.method, rec.path, rec.headers)
    paths = {(r.method, r.path) for r in fake.requests}
    assert {("GET", "/v1/account"), ("POST", "/v1/files"), ("GET", "/v1/webhooks/default/secret")} <= paths
    # The proxy's own log: the status page, the output download, S3 and the Hub.
    assert forward_proxy.targets(f"{filehost.url}/status.json")
    assert forward_proxy.targets(f"{filehost.url}/lora.safetensors")
    assert any(t.startswith(f"{moto_server}/team/") for t in forward_proxy.targets(moto_server))
    assert forward_proxy.targets(f"{hub.url}/api/repos/create")
    assert forward_proxy.targets(f"{hub.url}/api/models/me/lora/commit")


def test_no_proxy_is_respected(proxied_app, fake, filehost, forward_proxy, tmp_path, no_proxy_env):
    no_proxy_env.setenv("HTTP_PROXY", forward_proxy.url)
    fake_hostport = fake.base_url.split("://", 1)[1]
    no_proxy_env.setenv("NO_PROXY", f"example.invalid,{fake_hostport}")
    before = len(forward_proxy.targets(f"{filehost.url}/status.json"))
    _replicate_calls(proxied_app, tmp_path)
    assert fake.requests and not any("Via" in r.headers for r in fake.requests)
    assert not forward_proxy.targets(fake.base_url)
    # Another host on the same machine still goes through the proxy.
    assert len(forward_proxy.targets(f"{filehost.url}/status.json")) == before + 1


def test_the_providers_page_setting_replaces_the_environment(proxied_app, fake, filehost, forward_proxy,
                                                              tmp_path, no_proxy_env):
    client = proxied_app.test_client()
    bad = client.put("/api/cloud/settings/proxy", json={"proxy_url": "ftp://nope"})
    assert bad.status_code == 400 and bad.json["field"] == "proxy_url"
    saved = client.put("/api/cloud/settings/proxy",
                       json={"proxy_url": forward_proxy.url, "no_proxy": "example.invalid"})
    assert saved.status_code == 200, saved.json
    assert saved.json["source"] == "settings" and saved.json["effective"]["http"] == forward_proxy.url
    page = client.get("/settings/proxy")
    assert page.status_code == 200 and forward_proxy.url in page.text

    _replicate_calls(proxied_app, tmp_path)
    assert fake.requests and all(VIA_NAME in r.headers.get("Via", "") for r in fake.requests)

    cleared = client.put("/api/cloud/settings/proxy", json={"proxy_url": None})
    assert cleared.json["source"] is None
    fake.requests.clear()
    _replicate_calls(proxied_app, tmp_path)
    assert fake.requests and not any("Via" in r.headers for r in fake.requests)


def test_credentials_in_the_proxy_url_are_not_shown(proxied_app):
    client = proxied_app.test_client()
    saved = client.put("/api/cloud/settings/proxy", json={"proxy_url": "http://me:s3cret@proxy.example:3128"})
    assert saved.status_code == 200
    assert "s3cret" not in json.dumps(saved.json) and "s3cret" not in client.get("/settings/proxy").text
    assert saved.json["effective"]["https"] == "http://me:***@proxy.example:3128"
