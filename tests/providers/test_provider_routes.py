"""``/api/cloud/providers/*``, the settings API and the Providers / Settings pages."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from stcloud import secrets
from stcloud.models import Job, utcnow
from tests.conftest import csrf_of
from tests.providers.fixtures import dump, submit_body

pytestmark = pytest.mark.timeout(60)

BASE = "/api/cloud/providers/replicate"
SECRET_TOKEN = "r8_Sup3rSecretTokenValue0123456789"


def secrets_file(app) -> Path:
    return Path(app.config["STCLOUD_HOME"]) / "secrets.enc"


# ---- token ------------------------------------------------------------------------------------

def test_token_is_stored_0600_and_never_echoed(rapp, rclient, fake, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    fake.tokens.add(SECRET_TOKEN)
    bodies = []
    r = rclient.put(f"{BASE}/token", json={"token": f"  {SECRET_TOKEN}\n"})
    assert r.status_code == 200, dump(r)
    assert r.get_json() == {"token_set": True, "token_source": "stored"}
    path = secrets_file(rapp)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert SECRET_TOKEN not in path.read_text()  # encrypted
    assert secrets.get(rapp.config["STCLOUD_HOME"], "replicate_api_token") == SECRET_TOKEN  # stored, trimmed
    for url in ("", "/validate", "/versions", "/billing", "/token"):
        resp = rclient.get(BASE + url) if url != "/token" else rclient.put(f"{BASE}/token", json={"token": "bad"})
        bodies.append(resp.get_data(as_text=True))
    assert rclient.get(f"{BASE}/validate").get_json()["valid"] is True
    bodies.append(rclient.get("/api/cloud/providers").get_data(as_text=True))
    bodies.append(rclient.get("/providers").get_data(as_text=True))
    for body in bodies:
        assert SECRET_TOKEN not in body
    assert SECRET_TOKEN not in caplog.text

    r = rclient.delete(f"{BASE}/token")
    assert r.status_code == 200 and r.get_json()["token_set"] is False
    assert "REPLICATE_API_TOKEN not set" in r.get_json()["note"]
    assert secrets.get(rapp.config["STCLOUD_HOME"], "replicate_api_token") is None


@pytest.mark.parametrize("token", ["", "sk_abc123456789", "r8_has space inside", "r8_", None, 42])
def test_bad_tokens_are_refused_without_echo(rclient, token):
    r = rclient.put(f"{BASE}/token", json={"token": token})
    assert r.status_code == 400 and r.get_json()["field"] == "token"
    if isinstance(token, str) and token:
        assert token not in r.get_json()["detail"]


def test_environment_token_wins(rapp, rclient):
    r = rclient.put(f"{BASE}/token", json={"token": "r8_storedtoken123"})
    assert r.get_json()["token_source"] == "env" and "precedence" in r.get_json()["note"]
    assert rclient.get(BASE).get_json()["token_source"] == "env"


# ---- validate / versions / billing / status ----------------------------------------------------

def test_validate_with_good_and_bad_tokens(rclient, monkeypatch):
    r = rclient.get(f"{BASE}/validate")
    assert r.status_code == 200
    assert r.get_json() == {"valid": True, "token_source": "env",
                            "account": {"type": "user", "username": "stcloud-test", "name": "stcloud test",
                                        "github_url": "https://github.com/stcloud-test"}}
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_badbadbad")
    body = rclient.get(f"{BASE}/validate").get_json()
    assert body["valid"] is False and body["error"].startswith("invalid token")
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    r = rclient.get(f"{BASE}/validate")
    assert r.status_code == 400 and r.get_json()["detail"].startswith("REPLICATE_API_TOKEN not set")
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_x12345678")
    monkeypatch.setenv("REPLICATE_BASE_URL", "http://127.0.0.1:9")
    r = rclient.get(f"{BASE}/validate")
    assert r.status_code == 502 and "connection to Replicate" in r.get_json()["detail"]


def test_versions_list_newest_and_pinned(rclient, fake):
    r = rclient.get(f"{BASE}/versions")
    assert r.status_code == 200, dump(r)
    body = r.get_json()
    ids = [v["id"] for v in fake.versions["simpletuner/advanced-trainer"]]
    assert [v["id"] for v in body["versions"]] == ids[::-1]
    assert body["newest"] == ids[-1] and body["pinned"] is None and body["in_use"] == ids[-1]
    assert body["model"] == "simpletuner/advanced-trainer"
    rclient.put(BASE, json={"version": ids[0]})
    body = rclient.get(f"{BASE}/versions").get_json()
    assert body["pinned"] == ids[0] and [v["pinned"] for v in body["versions"]] == [False, False, True]
    rclient.put(BASE, json={"model": "someone/missing"})
    r = rclient.get(f"{BASE}/versions")
    assert r.status_code == 502 and "not found" in r.get_json()["detail"]


def test_billing_has_no_balance_but_our_spend(rapp, rclient):
    from stcloud import db

    with rapp.app_context(), db.transaction() as s:
        s.add(Job(name="done", provider="replicate", status="completed", cost_usd=1.25, completed_at=utcnow()))
        s.add(Job(name="run", provider="replicate", status="running", estimated_cost_usd=2.0))
        s.add(Job(name="w", provider="worker", status="completed", cost_usd=9.0, completed_at=utcnow()))
    body = rclient.get(f"{BASE}/billing").get_json()
    assert body["balance"] is None and "no API for the account balance" in body["note"]
    assert body["spend"]["today_usd"] == 1.25 and body["spend"]["all_time_usd"] == 1.25
    assert body["spend"]["jobs_billed"] == 1
    assert body["active"] == {"jobs": 1, "estimated_usd": 2.0}


def test_status_page_degrades_offline(rclient):
    r = rclient.get(f"{BASE}/status")
    assert r.status_code == 200
    assert r.get_json()["available"] is False and "works without it" in r.get_json()["error"]


def test_providers_list(rclient, monkeypatch):
    provs = {p["name"]: p for p in rclient.get("/api/cloud/providers").get_json()["providers"]}
    assert {"replicate", "worker", "local", "simpletuner_io"} <= set(provs)
    assert provs["replicate"]["configured"] is True
    assert provs["replicate"]["uploads_data"] and provs["replicate"]["supports_webhooks"]
    assert provs["replicate"]["max_upload_bytes"] == 100 * 1024 * 1024
    assert provs["worker"]["worker_pool"] == "shared" and not provs["worker"]["uploads_data"]
    assert provs["local"]["worker_pool"] == "embedded"
    assert provs["simpletuner_io"]["status"] == "coming soon"
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    provs = {p["name"]: p for p in rclient.get("/api/cloud/providers").get_json()["providers"]}
    assert provs["replicate"]["configured"] is False and provs["replicate"]["note"] == "REPLICATE_API_TOKEN not set"
    body = rclient.get("/api/cloud/providers/nope").get_json()
    assert body["status"] == 400 and "replicate" in body["detail"] and "simpletuner_io" in body["detail"]


def test_coming_soon_provider_is_refused_at_submit(rclient, dataset):
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="simpletuner_io"))
    body = r.get_json()
    assert r.status_code == 400 and body["field"] == "provider"
    assert "SimpleTuner.io is coming soon" in body["detail"]
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="nope"))
    assert r.status_code == 400 and "unknown provider 'nope'" in r.get_json()["detail"]


# ---- config ------------------------------------------------------------------------------------

def test_seeds_curl_example(rclient):
    r = rclient.put(BASE, data='{\n    "webhook_allowed_ips": ["34.82.0.0/16", "35.185.0.0/16"]\n  }',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200, dump(r)
    assert r.get_json()["webhook_allowed_ips"] == ["34.82.0.0/16", "35.185.0.0/16"]
    assert rclient.get(BASE).get_json()["webhook_allowed_ips"] == ["34.82.0.0/16", "35.185.0.0/16"]


def test_get_shows_defaults_and_the_derived_webhook_endpoint(rclient):
    body = rclient.get(BASE).get_json()
    assert body["model"] == "simpletuner/advanced-trainer" and body["version"] is None
    assert body["hardware"] == "gpu-l40s" and body["webhook_require_signature"] is True
    assert body["trusted_proxies"] == [] and body["webhook_endpoint"] is None
    hw = {h["name"]: h for h in body["hardware_profiles"]}
    assert {"gpu-l40s", "gpu-a100-large"} <= set(hw) and hw["gpu-l40s"]["default"] is True
    assert hw["gpu-l40s"]["usd_per_second"] > 0
    r = rclient.put(BASE, json={"webhook_url": "https://training.example.com/api/webhooks/replicate"})
    body = r.get_json()
    assert body["public_url"] == "https://training.example.com" == body["webhook_url"]
    assert body["webhook_endpoint"] == "https://training.example.com/api/webhooks/replicate"
    r = rclient.put(BASE, json={"hardware": "gpu-a100-large", "trusted_proxies": ["127.0.0.1"],
                                "webhook_require_signature": False, "model": "me/trainer"})
    assert r.status_code == 200
    body = r.get_json()
    assert (body["hardware"], body["trusted_proxies"], body["webhook_require_signature"], body["model"]) == (
        "gpu-a100-large", ["127.0.0.1/32"], False, "me/trainer")


@pytest.mark.parametrize("change,field", [
    ({"webhook_allowed_ips": ["34.82.0.0/16", "not-an-ip"]}, "webhook_allowed_ips"),
    ({"webhook_allowed_ips": "34.82.0.0/16"}, "webhook_allowed_ips"),
    ({"trusted_proxies": ["10.0.0.300"]}, "trusted_proxies"),
    ({"public_url": "ftp://example.com"}, "public_url"),
    ({"webhook_url": "not a url"}, "public_url"),
    ({"webhook_require_signature": "yes"}, "webhook_require_signature"),
    ({"model": "no-slash"}, "model"),
    ({"version": "abc-def"}, "version"),
    ({"hardware": "gpu-h9000"}, "hardware"),
    ({"hardware_rates": {"gpu-l40s": -1}}, "hardware_rates"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_config_values_are_400_naming_the_field(rclient, change, field):
    before = rclient.get(BASE).get_json()
    r = rclient.put(BASE, json={"public_url": "https://ok.example.com", **change})
    assert r.status_code == 400, dump(r)
    assert r.mimetype == "application/problem+json" and r.get_json()["field"] == field
    assert rclient.get(BASE).get_json() == before  # nothing half-written


def test_bad_bodies(rclient):
    assert rclient.put(BASE, data="[1]", content_type="application/json").status_code == 400
    assert rclient.put(BASE, data="{", content_type="application/json").status_code == 400
    assert rclient.put(BASE, json={}).status_code == 400


def test_hardware_rates_are_recorded_dated(rapp, rclient):
    from stcloud import db
    from stcloud.models import HardwareRate

    r = rclient.put(BASE, json={"hardware_rates": {"gpu-l40s": {"usd_per_hour": 3.6}, "gpu-h100": 0.0015}})
    assert r.status_code == 200, dump(r)
    with rapp.app_context(), db.session() as s:
        rows = {h.hardware: h for h in s.query(HardwareRate).filter_by(provider="replicate")}
    assert rows["gpu-l40s"].usd_per_second == pytest.approx(0.001)
    assert rows["gpu-h100"].usd_per_second == 0.0015 and rows["gpu-h100"].effective_from is not None
    assert rclient.put(BASE, json={"hardware": "gpu-h100"}).status_code == 200  # now a known profile


# ---- settings API ------------------------------------------------------------------------------

def test_public_url_setting(rclient):
    r = rclient.put("/api/cloud/settings/public-url", json={"public_url": "https://abc.trycloudflare.com/"})
    assert r.status_code == 200
    body = r.get_json()
    assert body["public_url"] == "https://abc.trycloudflare.com" and body["source"] == "settings"
    assert body["webhook_endpoint"] == "https://abc.trycloudflare.com/api/webhooks/replicate"
    assert rclient.get(BASE).get_json()["public_url"] == "https://abc.trycloudflare.com"
    r = rclient.put("/api/cloud/settings/public-url", json={"public_url": "abc"})
    assert r.status_code == 400 and r.get_json()["field"] == "public_url"
    assert rclient.put("/api/cloud/settings/public-url", json={}).status_code == 400
    r = rclient.put("/api/cloud/settings/public-url", json={"public_url": None})
    assert r.get_json()["public_url"] is None and r.get_json()["webhook_endpoint"] is None


def test_env_public_url_is_the_fallback(make_app, monkeypatch):
    monkeypatch.setenv("STCLOUD_PUBLIC_URL", "https://env.example.com")
    client = make_app().test_client()
    body = client.get("/api/cloud/settings/public-url").get_json()
    assert body == {"public_url": "https://env.example.com", "source": "env",
                    "webhook_endpoint": "https://env.example.com/api/webhooks/replicate",
                    "help": "set your public URL without the path; stcloud appends /api/webhooks/replicate"}


# ---- pages -------------------------------------------------------------------------------------

def test_providers_page(rclient):
    html = rclient.get("/providers").get_data(as_text=True)
    assert "set your public URL without the path; stcloud appends /api/webhooks/replicate" in html
    assert 'type="password" name="token"' in html and "Validate" in html and "Load versions" in html
    assert "from the environment" in html


def test_provider_page_fragments(rapp, rclient, fake, monkeypatch):
    hx = {"HX-Request": "true", "X-CSRF-Token": csrf_of(rclient)}
    r = rclient.get("/providers/replicate/validate", headers=hx)
    assert r.status_code == 200 and "stcloud-test" in r.get_data(as_text=True)
    r = rclient.get("/providers/replicate/versions", headers=hx)
    assert "versions-table" in r.get_data(as_text=True)
    r = rclient.get("/providers/replicate/status", headers=hx)
    assert r.status_code == 200 and "status page not reachable" in r.get_data(as_text=True)
    r = rclient.post("/providers/replicate/settings", headers=hx, data={
        "public_url": "https://x.example.com", "webhook_allowed_ips": "34.82.0.0/16\n35.185.0.0/16",
        "trusted_proxies": "", "model": "simpletuner/advanced-trainer", "version": "", "hardware": "gpu-l40s",
        "webhook_require_signature_present": "1", "webhook_require_signature": "1"})
    assert r.status_code == 200 and "Settings saved" in r.get_data(as_text=True)
    assert "https://x.example.com/api/webhooks/replicate" in r.get_data(as_text=True)
    r = rclient.post("/providers/replicate/settings", headers=hx, data={"public_url": "nope", "model": "a/b"})
    assert r.status_code == 422 and "public_url" in r.get_data(as_text=True)
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    r = rclient.post("/providers/replicate/token", headers=hx, data={"token": "nope"})
    assert r.status_code == 422 and "must start with r8_" in r.get_data(as_text=True)
    r = rclient.post("/providers/replicate/token", headers=hx, data={"token": "r8_formtoken1234"})
    assert r.status_code == 200 and "r8_formtoken1234" not in r.get_data(as_text=True)
    assert "Token saved" in r.get_data(as_text=True)
    r = rclient.post("/providers/replicate/token", data={"token": "r8_formtoken1234"})
    assert r.status_code == 403  # a form post without the CSRF token


def test_settings_page_and_forms(rclient):
    assert "Never Upload" in rclient.get("/settings").get_data(as_text=True)
    hx = {"HX-Request": "true", "X-CSRF-Token": csrf_of(rclient)}
    r = rclient.post("/settings/consent", headers=hx, data={"consent": "deny"})
    assert r.status_code == 200 and "Saved: Never Upload" in r.get_data(as_text=True)
    assert rclient.get("/api/cloud/settings/consent").get_json()["consent"] == "deny"
    r = rclient.post("/settings/consent", headers=hx, data={"consent": "whatever"})
    assert r.status_code == 422
    r = rclient.post("/settings/public-url", headers=hx, data={"public_url": "https://p.example.com"})
    assert r.status_code == 200 and "https://p.example.com/api/webhooks/replicate" in r.get_data(as_text=True)


def test_per_job_settings_go_to_the_provider_that_declares_them(rclient, dataset):
    """The body key named after the provider carries its per-job settings (e.g. ``slurm``);
    a provider that declares none refuses them, naming the field."""
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="local", local={"gpus": 2}))
    body = r.get_json()
    assert r.status_code == 400 and body["field"] == "local" and "takes no per-job settings" in body["detail"]
