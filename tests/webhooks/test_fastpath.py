"""The SQLite fast path of a streaming delivery (stcloud/webhooks/fastpath.py) leaves exactly
the rows the ORM path leaves: the same deliveries sent to two jobs, one with the fast path
off, end in identical job rows, log chunks and delivery rows."""
import os
import sqlite3

import pytest

from stcloud import direct, forks
from stcloud.webhooks import fastpath
from stcloud.webhooks import service as wh_service
from tests.webhooks.conftest import make_job, prediction, send

LINES = [f"step {i}/5 loss=0.{i}1 lr=1e-4\n" for i in range(1, 6)]
COLUMNS = "status, log_size, progress, started_at, provider_data, billed_seconds, cost_usd, log_seq"


def _deliver(client, secret, pid, used):
    bodies = [prediction(pid, "processing", "".join(LINES[:k]), started_at="2025-01-02T03:04:06.000000Z",
                         metrics={"predict_time": 1.5 * k}) for k in range(1, 6)]
    bodies.insert(3, bodies[2])  # a redelivery of the same content under a new id
    ids = []
    for i, body in enumerate(bodies):
        r = send(client, secret, body, msg_id=f"msg_{pid}_{i}")
        assert r.status_code == 200 and r.get_json()["outcome"] == "applied", r.get_json()
        ids.append(f"msg_{pid}_{i}")
    r = send(client, secret, bodies[0], msg_id=ids[0])  # a replay of the same id
    assert r.get_json()["outcome"] == "duplicate"
    return used


def test_fast_path_writes_what_the_orm_path_writes(wh_app, wh_client, fake, monkeypatch):
    fast_job, orm_job = make_job(wh_app, "a" * 26), make_job(wh_app, "b" * 26)
    used = []
    real = fastpath.transaction

    def counting(engine):
        used.append(1)
        return real(engine)

    monkeypatch.setattr(fastpath, "transaction", counting)
    _deliver(wh_client, fake.webhook_secret, "a" * 26, used)
    assert len(used) == 7  # every delivery (replay included) went through it
    monkeypatch.setattr(fastpath, "available", lambda engine: False)
    used.clear()
    _deliver(wh_client, fake.webhook_secret, "b" * 26, used)
    assert used == []

    conn = sqlite3.connect(wh_app.config["STCLOUD_DATABASE_URL"].removeprefix("sqlite:///"))
    try:
        rows = {j: conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (j,)).fetchone()
                for j in (fast_job, orm_job)}
        assert rows[fast_job] == rows[orm_job]
        assert rows[fast_job][1] == len("".join(LINES).encode())
        assert '"step": 5' in rows[fast_job][2]
        chunks = {j: conn.execute('SELECT "offset", data FROM job_log_chunks WHERE job_id = ? ORDER BY "offset"',
                                  (j,)).fetchall() for j in (fast_job, orm_job)}
        assert chunks[fast_job] == chunks[orm_job] and len(chunks[fast_job]) == 5
        deliveries = {j: conn.execute(
            "SELECT event_status, outcome, detail, source_ip, typeof(received_at), length(received_at) "
            "FROM webhook_deliveries WHERE job_id = ? ORDER BY webhook_id", (j,)).fetchall()
            for j in (fast_job, orm_job)}
        assert deliveries[fast_job] == deliveries[orm_job] and len(deliveries[fast_job]) == 6
        points = {j: conn.execute("SELECT step, loss FROM job_loss_points WHERE job_id = ? ORDER BY id",
                                  (j,)).fetchall() for j in (fast_job, orm_job)}
        assert points[fast_job] == points[orm_job] == [(i, float(f"0.{i}1")) for i in range(1, 6)]
        stamps = [r[0] for r in conn.execute("SELECT updated_at FROM jobs WHERE id IN (?, ?)", (fast_job, orm_job))]
        assert len({len(s) for s in stamps}) == 1  # the same datetime format
    finally:
        conn.close()


def test_status_change_takes_the_orm_path(wh_app, wh_client, fake):
    """A delivery that moves the job is undone in the fast transaction and applied by the
    one transition function."""
    job_id = make_job(wh_app, "c" * 26)
    r = send(wh_client, fake.webhook_secret, prediction("c" * 26, "succeeded", "step 5/5 loss=0.1\n",
                                                        completed_at="2025-01-02T03:05:06.000000Z",
                                                        output=[]))
    assert r.get_json()["outcome"] == "applied" and r.get_json()["job_status"] == "completed"
    with wh_app.app_context():
        from stcloud import db
        from stcloud.models import Job

        with db.session() as s:
            assert s.get(Job, job_id).status == "completed"


@pytest.mark.parametrize("bad", [None, "x"])
def test_no_job_is_ignored_through_either_path(wh_client, fake, bad):
    r = send(wh_client, fake.webhook_secret, prediction("z" * 26) if bad is None else {"status": "processing"})
    assert r.status_code == 200 and r.get_json()["outcome"] == wh_service.IGNORED


def test_shortcut_answers_what_the_flask_view_answers(wh_app, wh_client, fake):
    """The WSGI shortcut writes an accepted delivery's answer itself: the same body bytes and
    headers as the view in routes.py (jsonify + security headers); X-Forwarded-For lines
    reach the allowlist check as the view passes them."""
    from werkzeug.test import Client

    make_job(wh_app, "c" * 26)
    make_job(wh_app, "d" * 26)
    shortcut_app = wh_app.wsgi_app
    while not hasattr(shortcut_app, "read_body"):  # the middlewares wrapped around it
        shortcut_app = shortcut_app.wsgi_app
    flask_view = Client(shortcut_app.wsgi_app)  # the app without the shortcut: the routed view
    answers = []
    for pid, client in (("c" * 26, wh_client), ("d" * 26, flask_view)):
        body = prediction(pid, "processing", LINES[0])
        r = send(client, fake.webhook_secret, body, msg_id=f"msg_same_shape_{pid[0]}")
        answers.append(r)
        assert r.status_code == 200
    ours, view = answers
    assert ours.get_json()["outcome"] == view.get_json()["outcome"] == "applied"
    assert ours.get_json()["webhook_id"] == "msg_same_shape_c"
    same = ours.get_data().replace(b"msg_same_shape_c", b"ID").replace(ours.get_json()["job_id"].encode(), b"JOB")
    assert same == view.get_data().replace(b"msg_same_shape_d", b"ID").replace(view.get_json()["job_id"].encode(), b"JOB")
    assert {k: v for k, v in ours.headers.items() if k != "Content-Length"} == \
        {k: v for k, v in view.headers.items() if k != "Content-Length"}
    assert int(ours.headers["Content-Length"]) == len(ours.get_data())


def test_writers_are_per_engine_and_per_process(wh_app, monkeypatch, tmp_path):
    """Connections come back to the list they were taken from; a forked child (another pid)
    gets writers of its own and never touches the parent's connections (the writers' lock:
    tests/test_sqlite_wal.py)."""
    with wh_app.app_context():
        from stcloud import db

        engine = db.get_db().engine
        w = direct.for_engine(engine)
        assert fastpath.scalar(engine, fastpath_select(), {}) == 1
        conn = w.idle[-1]
        assert fastpath.scalar(engine, fastpath_select(), {}) == 1 and w.idle[-1] is conn  # reused
        assert direct.for_engine(engine) is w
        real = os.getpid()
        monkeypatch.setattr(forks.os, "getpid", lambda: real + 1)
        child = direct.for_engine(engine)
        assert child is not w and child.idle == [] and w in direct._lists.inherited
        direct._lists.inherited.remove(w)


def fastpath_select():
    from sqlalchemy import text

    return text("SELECT 1")


def test_a_body_shorter_than_its_content_length_is_a_400(wh_app):
    """The shortcut reads a sized body straight from the server's input; one that ends early
    (the client went away) is a problem+json 400, not a 500."""
    import io

    from werkzeug.test import EnvironBuilder

    env = EnvironBuilder(path="/api/webhooks/replicate", method="POST", data=b"{}",
                         headers={"Content-Type": "application/json"}).get_environ()
    env["CONTENT_LENGTH"], env["wsgi.input"] = "100", io.BytesIO(b'{"id": "x"')
    got = {}

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = status, dict(headers)

    body = b"".join(wh_app.wsgi_app(env, start_response))
    assert got["status"].startswith("400") and got["headers"]["Content-Type"] == "application/problem+json"
    assert b"ended after 10 of its 100 bytes" in body
