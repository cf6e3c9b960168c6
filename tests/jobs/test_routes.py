"""Jobs API: each route, filters, and bad input -> the right problem+json."""
import pytest

from stcloud.jobs import service
from stcloud.jobs.service import JobUpdate
from tests.jobs.factories import age, make_job


def problem(resp, status):
    assert resp.status_code == status, resp.data
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


@pytest.fixture
def seeded(app):
    ids = {
        "a": make_job(app, "running", name="alpha lora"),
        "b": make_job(app, "completed", name="beta lora", provider="worker"),
        "c": make_job(app, "failed", name="gamma", provider="local"),
        "d": make_job(app, "queued", name="delta lora"),
    }
    for i, key in enumerate("abcd"):
        age(app, ids[key], 100 - i)  # d newest
    return ids


def test_list_with_filters_and_total(client, seeded):
    body = client.get("/api/cloud/jobs").get_json()
    assert body["total"] == 4 and [j["name"] for j in body["jobs"]][0] == "delta lora"
    body = client.get("/api/cloud/jobs?status=running,queued").get_json()
    assert {j["id"] for j in body["jobs"]} == {seeded["a"], seeded["d"]}
    assert client.get("/api/cloud/jobs?provider=worker").get_json()["total"] == 1
    assert client.get("/api/cloud/jobs?q=LORA").get_json()["total"] == 3
    page = client.get("/api/cloud/jobs?limit=1&offset=1").get_json()
    assert page["total"] == 4 and len(page["jobs"]) == 1 and page["jobs"][0]["id"] == seeded["c"]


@pytest.mark.parametrize("qs,needle", [
    ("limit=abc", "limit"), ("limit=0", "limit"), ("limit=501", "limit"), ("offset=-1", "offset"),
    ("status=done", "status"), ("provider=aws", "provider"), ("offset=1e3", "offset"),
])
def test_list_bad_parameters_400(client, qs, needle):
    assert needle in problem(client.get(f"/api/cloud/jobs?{qs}"), 400)["detail"]


def test_get_one_and_unknown(client, seeded):
    job = client.get(f"/api/cloud/jobs/{seeded['a']}").get_json()["job"]
    assert job["status"] == "running" and job["config"] == {"max_train_steps": 10}
    problem(client.get("/api/cloud/jobs/job_nope"), 404)
    problem(client.post("/api/cloud/jobs/job_nope/cancel", json={}), 404)
    problem(client.delete("/api/cloud/jobs/job_nope"), 404)
    problem(client.get("/api/cloud/jobs/job_nope/logs"), 404)
    problem(client.get("/api/cloud/jobs/job_nope/events"), 404)


def test_cancel_is_idempotent(client, seeded):
    r = client.post(f"/api/cloud/jobs/{seeded['d']}/cancel", json={})
    assert r.status_code == 200 and r.get_json()["job"]["status"] == "cancelled"
    r = client.post(f"/api/cloud/jobs/{seeded['d']}/cancel", json={})
    assert r.status_code == 200 and r.get_json()["job"]["status"] == "cancelled"
    events = client.get(f"/api/cloud/jobs/{seeded['d']}/events").get_json()["events"]
    assert [e["to"] for e in events].count("cancelled") == 1


def test_cancel_calls_the_provider(app, client):
    from stcloud.providers import registry
    from tests.jobs.memory_provider import MemoryProvider

    mem = MemoryProvider()
    with registry.override("replicate", lambda: mem):
        jid = make_job(app, "running", provider_job_id="pred_1")
        assert client.post(f"/api/cloud/jobs/{jid}/cancel", json={}).status_code == 200
        assert mem.cancelled == ["pred_1"]
        client.post(f"/api/cloud/jobs/{jid}/cancel", json={})  # already terminal: no second call
        assert mem.cancelled == ["pred_1"]
        mem.fail_cancel = True
        jid2 = make_job(app, "running", provider_job_id="pred_2")
        body = problem(client.post(f"/api/cloud/jobs/{jid2}/cancel", json={}), 502)
        assert "cancel" in body["detail"]
        assert client.get(f"/api/cloud/jobs/{jid2}").get_json()["job"]["status"] == "running"


def test_delete_terminal_only(client, seeded):
    problem(client.delete(f"/api/cloud/jobs/{seeded['a']}"), 409)
    assert client.delete(f"/api/cloud/jobs/{seeded['b']}").status_code == 204
    problem(client.get(f"/api/cloud/jobs/{seeded['b']}"), 404)


def test_logs_offsets(app, client, seeded):
    with app.app_context():
        service.apply_update(seeded["a"], JobUpdate(logs_append="one\ntwo\n"), source="worker")
    body = client.get(f"/api/cloud/jobs/{seeded['a']}/logs").get_json()
    assert body == {"text": "one\ntwo\n", "next_offset": 8, "complete": False, "size": 8}
    body = client.get(f"/api/cloud/jobs/{seeded['a']}/logs?offset=4").get_json()
    assert body["text"] == "two\n"
    problem(client.get(f"/api/cloud/jobs/{seeded['a']}/logs?offset=x"), 400)
    problem(client.get(f"/api/cloud/jobs/{seeded['a']}/logs?offset=-2"), 400)
    done = client.get(f"/api/cloud/jobs/{seeded['b']}/logs").get_json()
    assert done["complete"] is True


def test_events_route(client, seeded):
    evs = client.get(f"/api/cloud/jobs/{seeded['b']}/events").get_json()["events"]
    assert [(e["from"], e["to"]) for e in evs] == [("pending", "queued"), ("queued", "running"),
                                                   ("running", "completed")]
    assert all(e["accepted"] and e["at"].endswith("Z") for e in evs)


def test_healthz(client):
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["database"]["ok"] and "version" in body
    assert body["scheduler"]["alive"] is False


def test_healthz_reports_scheduler_beat(app, client):
    from stcloud import scheduler

    with app.app_context():
        scheduler.beat()
    assert client.get("/healthz").get_json()["scheduler"]["alive"] is True


def test_unknown_api_route_is_problem_json(client):
    problem(client.get("/api/cloud/nothing-here"), 404)
    problem(client.put("/api/cloud/jobs", json={}), 405)


def test_non_json_body_is_400_not_500(client, seeded):
    r = client.post(f"/api/cloud/jobs/{seeded['a']}/cancel", data="{{{", content_type="application/json")
    assert r.status_code in (200, 400)


def test_cancel_refuses_when_provider_unreachable(app, client):
    """No local-only cancel for a job that runs remotely: its run would keep billing."""
    from stcloud.errors import NotConfigured
    from stcloud.providers import registry

    def factory():
        raise NotConfigured("REPLICATE_API_TOKEN not set")

    with registry.override("replicate", factory):
        jid = make_job(app, "running", provider_job_id="pred_x")
        body = problem(client.post(f"/api/cloud/jobs/{jid}/cancel", json={}), 400)
        assert "REPLICATE_API_TOKEN not set" in body["detail"]
        assert client.get(f"/api/cloud/jobs/{jid}").get_json()["job"]["status"] == "running"
        # a job that never reached the provider is cancelled locally
        jid2 = make_job(app, "uploading")
        assert client.post(f"/api/cloud/jobs/{jid2}/cancel", json={}).get_json()["job"]["status"] == "cancelled"
    # no token: the adapter says why it cannot reach Replicate
    jid3 = make_job(app, "running", provider_job_id="pred_y")
    body = problem(client.post(f"/api/cloud/jobs/{jid3}/cancel", json={}), 400)
    assert "REPLICATE_API_TOKEN not set" in body["detail"]


def test_job_api_masks_secrets_in_config(app, client):
    jid = make_job(app, "queued", name="secretive")
    from stcloud import db
    from stcloud.models import Job

    with app.app_context(), db.transaction() as s:
        job = s.get(Job, jid)
        job.config = {"max_train_steps": 5, "hf_token": "hf_abcdefghijklmnopqrstu",
                      "publishing_config": [{"provider": "s3", "bucket": "outputs", "access_key": "AK",
                                             "secret_key": "SK-very-secret"}]}
    body = client.get(f"/api/cloud/jobs/{jid}").get_data(as_text=True)
    assert "SK-very-secret" not in body and "hf_abcdefghijklmnopqrstu" not in body
    cfg = client.get(f"/api/cloud/jobs/{jid}").get_json()["job"]["config"]
    assert cfg["max_train_steps"] == 5 and cfg["publishing_config"][0]["bucket"] == "outputs"
    assert cfg["publishing_config"][0]["secret_key"] == "[redacted]"
    with app.app_context(), db.session() as s:  # the stored config still has what the trainer needs
        assert s.get(Job, jid).config["publishing_config"][0]["secret_key"] == "SK-very-secret"
