"""Long-poll claims (``POST /api/workers/claim?wait=N``, stcloud/workers/claims.py): the held
claim answers as soon as a job is queued, in this process (the commit wakes it) and from
another process (the short database poll), and times out empty."""
import sqlite3
import threading
import time

import pytest

from stcloud.workers import claims
from tests.workers.helpers import bearer, queue_job


@pytest.fixture
def worker(client):
    r = client.post("/api/cloud/workers", json={"name": "box-lp"})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    h = bearer(body["token"])
    assert client.post("/api/workers/register", json={"hostname": "h", "agent_version": "t"}, headers=h).status_code == 200
    return h


def test_parse_wait():
    assert claims.parse_wait(None) == 0 and claims.parse_wait("") == 0
    assert claims.parse_wait("x") == 0 and claims.parse_wait("-3") == 0 and claims.parse_wait("nan") == 0
    assert claims.parse_wait("2.5") == 2.5
    assert claims.parse_wait("9999") == claims.MAX_WAIT


def test_held_claim_times_out_empty(client, worker):
    started = time.monotonic()
    r = client.post("/api/workers/claim?wait=0.6", headers=worker)
    took = time.monotonic() - started
    assert r.status_code == 204
    assert r.headers[claims.WAIT_HEADER] == "0.6"
    assert took >= 0.55  # held for the time asked, not answered at once


def test_plain_claim_is_not_held(client, worker):
    started = time.monotonic()
    r = client.post("/api/workers/claim", headers=worker)
    assert r.status_code == 204 and r.headers[claims.WAIT_HEADER] == "0"
    assert time.monotonic() - started < 2


def test_held_claim_returns_when_a_job_is_queued_here(app, client, worker):
    """Queued in this process: the commit wakes the held claim at once (no poll interval)."""
    seen = claims.SIGNAL.generation
    answer = {}

    def hold():
        started = time.monotonic()
        answer["r"] = client.post("/api/workers/claim?wait=20", headers=worker)
        answer["took"] = time.monotonic() - started
        answer["done_at"] = time.monotonic()

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # held: nothing queued yet
    queued_at = time.monotonic()
    job_id = queue_job(app, name="lp-here", archive=False)
    t.join(10)
    assert not t.is_alive()
    assert claims.SIGNAL.generation > seen
    r = answer["r"]
    assert r.status_code == 200 and r.get_json()["job"]["id"] == job_id
    assert answer["took"] < 10  # long before the 20 s hold ran out
    assert answer["done_at"] - queued_at < 1.0


def test_held_claim_sees_a_job_queued_by_another_process(app, client, worker):
    """Another server process queued it (no signal here): the short database poll finds it."""
    job_id = queue_job(app, name="lp-elsewhere", archive=False)
    db_path = app.config["STCLOUD_DATABASE_URL"].removeprefix("sqlite:///")
    conn = sqlite3.connect(db_path)
    with conn:  # hide it, then queue it again behind the app's back
        conn.execute("UPDATE jobs SET status = 'pending' WHERE id = ?", (job_id,))
    answer = {}
    t = threading.Thread(target=lambda: answer.setdefault("r", client.post("/api/workers/claim?wait=20",
                                                                           headers=worker)))
    t.start()
    time.sleep(0.5)
    assert t.is_alive()
    seen = claims.SIGNAL.generation
    with conn:
        conn.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", (job_id,))
    queued_at = time.monotonic()
    t.join(10)
    conn.close()
    assert not t.is_alive() and time.monotonic() - queued_at < 5
    assert claims.SIGNAL.generation == seen  # no in-process wake-up: the poll found it
    assert answer["r"].status_code == 200 and answer["r"].get_json()["job"]["id"] == job_id


def test_unmatched_job_does_not_end_the_hold(app, client, worker):
    """A queued job this worker may not run (requirements) neither answers the claim nor
    makes the hold spin: the claim still times out empty."""
    queue_job(app, name="needs-h100", archive=False, requirements={"labels": {"gpu": "h100"}})
    started = time.monotonic()
    r = client.post("/api/workers/claim?wait=1", headers=worker)
    assert r.status_code == 204 and time.monotonic() - started >= 0.95


def test_claim_waiting_unit():
    """The loop itself, with an injected claim: a wake-up tries again at once."""
    sig = claims.QueueSignal()
    calls = []
    jobs = iter([None, {"id": "j1"}])

    def claim(worker_id):
        calls.append(time.monotonic())
        return next(jobs)

    threading.Timer(0.3, sig.notify).start()
    started = time.monotonic()
    # the same candidate all along: only the wake-up makes it claim again
    got = claims.claim_waiting("w", 5, claim, lambda: (lambda: ("j1",)), signal=sig, db_poll=10)
    assert got == {"id": "j1"}
    assert len(calls) == 2 and 0.25 < calls[1] - started < 2
