"""Per-user limits under 20 concurrent submits: exactly the jobs that fit are accepted (the
check sits in the submit transaction with the spend limits), for a concurrent-job cap and a
per-user spend limit; other users are not held by someone else's limit."""
import threading

import pytest
import requests

from stcloud import db
from stcloud.models import Job
from tests.accounts.helpers import add_user, set_owner
from tests.conftest import serve_in_thread
from tests.jobs.factories import make_job

pytestmark = pytest.mark.timeout(180)

N, FITS, STEPS = 20, 5, 100


@pytest.fixture
def served(make_app, tmp_path):
    app = make_app(STCLOUD_AUTH="on")
    data = tmp_path / "dataset"
    data.mkdir()
    for i in range(3):
        (data / f"img{i}.txt").write_text(f"caption {i}\n")
        (data / f"img{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([i]))  # a dataset needs images
    with serve_in_thread(app) as url:
        yield app, url, str(data)


def _body(data_dir, i):
    return {"provider": "worker", "name": f"limited-{i}", "config": {"max_train_steps": STEPS},
            "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": data_dir}]}


def _fire(url, headers, data_dir) -> list[requests.Response]:
    barrier = threading.Barrier(N)
    results: list = [None] * N

    def go(i):
        barrier.wait(timeout=30)
        try:
            results[i] = requests.post(f"{url}/api/cloud/jobs/submit", json=_body(data_dir, i), headers=headers,
                                       timeout=120)
        except requests.RequestException as exc:
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert all(isinstance(r, requests.Response) for r in results), results
    return results


def _owned(app, user_id) -> int:
    with app.app_context(), db.session() as s:
        return s.query(Job).filter(Job.owner_id == user_id).count()


def test_concurrent_job_cap_under_20_concurrent_submits(served):
    app, url, data = served
    admin, mia = add_user(app, "ada", "admin"), add_user(app, "mia", "member")
    r = requests.patch(f"{url}/api/cloud/users/mia", json={"max_concurrent_jobs": FITS}, headers=admin.headers,
                       timeout=10)
    assert r.status_code == 200 and r.json()["user"]["limits"]["max_concurrent_jobs"] == FITS
    results = _fire(url, mia.headers, data)
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == FITS and codes.count(429) == N - FITS, [(r.status_code, r.text[:150]) for r in results]
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.json()["max_concurrent_jobs"] == FITS and "at a time" in refused.json()["detail"]
    assert _owned(app, mia.user_id) == FITS  # refused submits leave no row
    # someone else is not held by mia's cap; mia gets a slot back when a job ends
    max_ = add_user(app, "max", "member")
    assert requests.post(f"{url}/api/cloud/jobs/submit", json=_body(data, 99), headers=max_.headers,
                         timeout=60).status_code == 201
    job_id = next(r.json()["job"]["id"] for r in results if r.status_code == 201)
    assert requests.post(f"{url}/api/cloud/jobs/{job_id}/cancel", json={}, headers=mia.headers,
                         timeout=30).status_code == 200
    assert requests.post(f"{url}/api/cloud/jobs/submit", json=_body(data, 100), headers=mia.headers,
                         timeout=60).status_code == 201


def test_user_spend_limit_under_20_concurrent_submits(served):
    app, url, data = served
    admin, mia = add_user(app, "ada", "admin"), add_user(app, "mia", "member")
    r = requests.put(f"{url}/api/cloud/rates", json={"provider": "worker", "usd_per_hour": 3.6},
                     headers=admin.headers, timeout=10)
    assert r.status_code == 200, r.text
    per_job = requests.post(f"{url}/api/cloud/cost-estimate", json={"provider": "worker",
                            "config": {"max_train_steps": STEPS}}, headers=mia.headers, timeout=10).json()[
        "estimated_cost_usd"]
    assert per_job > 0
    r = requests.patch(f"{url}/api/cloud/users/mia", headers=admin.headers, timeout=10,
                       json={"spend_limit_usd": round(FITS * per_job, 6), "spend_period": "monthly",
                             "spend_action": "block"})
    assert r.status_code == 200, r.text
    results = _fire(url, mia.headers, data)
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == FITS and codes.count(402) == N - FITS, [(r.status_code, r.text[:150]) for r in results]
    refused = next(r for r in results if r.status_code == 402).json()
    assert refused["limit_scope"] == "user:mia" and refused["limit_usd"] == pytest.approx(FITS * per_job)
    assert _owned(app, mia.user_id) == FITS
    # warn instead of block: accepted, with the warning in the answer
    requests.patch(f"{url}/api/cloud/users/mia", json={"spend_action": "warn"}, headers=admin.headers, timeout=10)
    r = requests.post(f"{url}/api/cloud/jobs/submit", json=_body(data, 50), headers=mia.headers, timeout=60)
    assert r.status_code == 201 and any("mia's monthly spending limit" in w for w in r.json().get("warnings", []))


def test_limit_fields_are_validated(served):
    app, url, _ = served
    admin = add_user(app, "ada", "admin")
    add_user(app, "mia", "member")
    for bad in ({"max_concurrent_jobs": -1}, {"max_concurrent_jobs": "5"}, {"spend_limit_usd": -2},
                {"spend_period": "hourly"}, {"spend_action": "stop"}):
        r = requests.patch(f"{url}/api/cloud/users/mia", json=bad, headers=admin.headers, timeout=10)
        assert r.status_code == 422 and r.json()["field"] == next(iter(bad)), bad


def test_spend_summary_breaks_down_by_user(secure_app):
    admin, mia = add_user(secure_app, "ada", "admin"), add_user(secure_app, "mia", "member")
    done = make_job(secure_app, "completed", provider="worker", cost_usd=1.25)
    running = make_job(secure_app, "running", provider="worker", estimated_cost_usd=2.0)
    make_job(secure_app, "completed", provider="worker", cost_usd=0.5)  # no owner
    set_owner(secure_app, done, mia.user_id)
    set_owner(secure_app, running, mia.user_id)
    c = secure_app.test_client()
    rows = {r["username"]: r for r in c.get("/api/cloud/costs/summary", headers=admin.headers).json["per_user"]}
    assert rows["mia"]["cost_usd"] == pytest.approx(1.25) and rows["mia"]["finished_jobs"] == 1
    assert rows["mia"]["active_jobs"] == 1 and rows["mia"]["reserved_usd"] == pytest.approx(2.0, abs=0.01)
    assert rows[None]["cost_usd"] == pytest.approx(0.5)
    page = c.get("/spend", headers=admin.headers).get_data(as_text=True)
    assert 'id="spend-per-user"' in page and 'data-user="mia"' in page and "(no owner)" in page
