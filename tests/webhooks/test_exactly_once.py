"""Every delivery applied exactly once under concurrency: two gunicorn worker processes on
one SQLite file, eight client threads, every delivery sent twice at the same time, logs
growing per prediction (Replicate resends the whole log). Counted afterwards."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from alembic import command

from stcloud.cli import alembic_config
from stcloud.db import Database
from stcloud.models import Job, JobLogChunk, WebhookDelivery
from tests.conftest import ROOT, free_port
from tests.webhooks.conftest import TOKEN, new_id, prediction, signed_headers

pytestmark = pytest.mark.slow

JOBS, DELIVERIES_PER_JOB = 6, 25


def line(k: int) -> str:
    return f"step {k}/{DELIVERIES_PER_JOB} loss=0.{k:03d}\n"


@pytest.fixture
def gunicorn_app(tmp_path, fake):
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'stcloud.db'}"
    command.upgrade(alembic_config(url), "head")
    port = free_port()
    env = {**os.environ, "STCLOUD_HOME": str(home), "STCLOUD_DATABASE_URL": url, "REPLICATE_API_TOKEN": TOKEN,
           "REPLICATE_BASE_URL": fake.base_url, "STCLOUD_ADMIN_TOKEN": "", "STCLOUD_PUBLIC_URL": ""}
    log = open(tmp_path / "gunicorn.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                             "app:create_app()"], cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError((tmp_path / "gunicorn.log").read_text()[-2000:])
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", Database(url)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_concurrent_deliveries_and_replays_apply_exactly_once(gunicorn_app, fake):
    base, database = gunicorn_app
    with database.session() as s:
        for j in range(JOBS):
            s.add(Job(id=f"job_once_{j}", name=f"once {j}", provider="replicate", provider_job_id=f"pred{j:022d}",
                      status="queued", rate_usd_per_second=0.001, config={}, dataloader_config=[]))
    deliveries = []
    for j in range(JOBS):
        for k in range(1, DELIVERIES_PER_JOB + 1):
            body = json.dumps(prediction(f"pred{j:022d}", "processing",
                                         "".join(line(i) for i in range(1, k + 1)))).encode()
            deliveries.append((body, signed_headers(fake.webhook_secret, body, msg_id=new_id())))
    sends = deliveries * 2  # every delivery twice
    random.Random(3).shuffle(sends)

    def post(item):
        body, headers = item
        r = requests.post(f"{base}/api/webhooks/replicate", data=body, headers=headers, timeout=60)
        return headers["webhook-id"], r.status_code, r.json().get("outcome")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, sends))
    assert {status for _, status, _ in answers} == {200}
    per_id: dict[str, list[str]] = {}
    for wid, _, outcome in answers:
        per_id.setdefault(wid, []).append(outcome)
    assert len(per_id) == len(deliveries)
    assert all(sorted(v) == ["applied", "duplicate"] for v in per_id.values())
    with database.session() as s:
        assert s.query(WebhookDelivery).count() == len(deliveries)
        assert {d.outcome for d in s.query(WebhookDelivery)} == {"applied"}
        for j in range(JOBS):
            job = s.get(Job, f"job_once_{j}")
            chunks = s.query(JobLogChunk).filter_by(job_id=job.id).order_by(JobLogChunk.offset).all()
            want = "".join(line(i) for i in range(1, DELIVERIES_PER_JOB + 1)).encode()
            assert b"".join(c.data for c in chunks) == want and job.log_size == len(want)
            offsets = [c.offset for c in chunks]
            assert offsets == sorted(set(offsets)) and all(
                a.offset + len(a.data) == b.offset for a, b in zip(chunks, chunks[1:], strict=False))  # no gap, no overlap
            assert job.status == "running" and job.progress["step"] == DELIVERIES_PER_JOB
            assert [(e.from_status, e.to_status) for e in job.events if e.accepted] == [("queued", "running")]
    database.dispose()
