"""The streaming fast path leaves the same job behind as the full path (apply_update_in)."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from stcloud import db
from stcloud.jobs import service, streaming
from stcloud.jobs.service import JobUpdate
from stcloud.models import Job, JobLogChunk
from tests.jobs.factories import make_job

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _updates(rng: random.Random) -> list[JobUpdate]:
    lines = [f"step {k}/300 loss=0.{k:03d} é\n" if k % 3 else f"stage: train {k}\n" for k in range(1, 301)]
    out, n = [], 0
    for _ in range(120):
        kind = rng.random()
        if kind < 0.6:
            n = min(len(lines), n + rng.randint(0, 4))
            out.append(JobUpdate(status="running", logs_full="".join(lines[:n]),
                                 started_at=T0 + timedelta(seconds=rng.randint(0, 5)),
                                 billed_seconds=rng.choice([None, float(n)]),
                                 cost_usd=rng.choice([None, None, n / 100]),
                                 provider_data=rng.choice([None, {"urls": {"get": "x"}, "version": f"v{n % 3}"}])))
        elif kind < 0.8:
            out.append(JobUpdate(logs_append=f"[worker] note {rng.randint(0, 9)}\n"))
        else:  # shorter (a stale resend): nothing new
            out.append(JobUpdate(status="running", logs_full="".join(lines[: max(0, n - 2)])))
    return out


def _snapshot(app, job_id):
    with app.app_context(), db.session() as s:
        job = s.get(Job, job_id)
        data = b"".join(c.data for c in s.query(JobLogChunk).filter_by(job_id=job_id).order_by(JobLogChunk.offset))
        return {"log": data, "log_size": job.log_size, "progress": job.progress, "status": job.status,
                "started_at": job.started_at, "billed": job.billed_seconds, "cost": job.cost_usd,
                "provider_data": job.provider_data,
                "events": len(job.events)}


def test_fast_path_matches_the_full_path(app):
    full = make_job(app, "running", provider="replicate", provider_job_id="pred-full", rate_usd_per_second=0.001)
    fast = make_job(app, "running", provider="replicate", provider_job_id="pred-fast", rate_usd_per_second=0.001)
    taken = 0
    for update in _updates(random.Random(5)):
        with app.app_context(), db.transaction() as s:
            service.apply_update_in(s, s.get(Job, full), update, source="test")
        with app.app_context(), db.transaction() as s:
            state = streaming.state_by_provider_id(s, "replicate", "pred-fast")
            result = streaming.apply_streaming(s, state, update)
            if result is None:
                service.apply_update_in(s, s.get(Job, fast), update, source="test")
            else:
                taken += 1
                assert result.accepted and not result.moved and result.status == "running"
    assert taken > 100
    a, b = _snapshot(app, full), _snapshot(app, fast)
    assert a == b and a["log"] and a["progress"]["step"] > 0


def test_everything_else_takes_the_full_path(app):
    jid = make_job(app, "running", provider="replicate", provider_job_id="pred-x")
    with app.app_context(), db.transaction() as s:
        state = streaming.state_by_provider_id(s, "replicate", "pred-x")
        assert state.id == jid and streaming.state_by_provider_id(s, "replicate", "nope") is None
        for update in [JobUpdate(status="completed"), JobUpdate(error="boom"), JobUpdate(outputs=[]),
                       JobUpdate(progress={"stage": "x"}),
                       JobUpdate(extra={"hardware": "x"}), JobUpdate(completed_at=T0),
                       JobUpdate(logs_full="a\n", logs_append="b\n")]:
            assert streaming.apply_streaming(s, state, update) is None, update
