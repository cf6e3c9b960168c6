"""Helpers for the cost tests: seed jobs with the ORM, a minimal submit stand-in, a
Replicate provider pointed at the fake."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from flask import Blueprint, jsonify, request

from stcloud import db
from stcloud.costs import service as costs
from stcloud.models import Job, JobEvent, utcnow

UTC = UTC


def at(s: str) -> datetime:
    """``at("2025-03-09T07:59:59Z")`` -> aware UTC datetime."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def add_job(app, *, provider="replicate", status="completed", name="job", hardware=None, steps=1000,
            rate=None, estimated=None, cost=None, billed=None, started_at=None, completed_at=None,
            created_at=None, max_cost=None, provider_job_id=None, estimate=None, events=()) -> str:
    """Insert a job row as it would look after the fact (status set directly: history seeding)."""
    with app.app_context():
        with db.transaction() as s:
            job = Job(name=name, provider=provider, status=status, hardware=hardware,
                      config={"max_train_steps": steps} if steps else {}, dataloader_config=[],
                      rate_usd_per_second=rate, estimated_cost_usd=estimated, cost_usd=cost,
                      billed_seconds=billed, started_at=started_at, completed_at=completed_at,
                      max_cost_usd=max_cost, provider_job_id=provider_job_id, estimate=estimate)
            if created_at is not None:
                job.created_at = created_at
            s.add(job)
            s.flush()
            for when, frm, to in events:
                s.add(JobEvent(job_id=job.id, at=when, source="test", from_status=frm, to_status=to, accepted=True))
            return job.id


def get_job(app, job_id) -> Job:
    with app.app_context():
        with db.session() as s:
            return s.get(Job, job_id)


def job_events(app, job_id) -> list[JobEvent]:
    with app.app_context():
        with db.session() as s:
            return list(s.get(Job, job_id).events)


def install_submit_stub(app, hold_seconds: float = 0.02) -> str:
    """A minimal submit with the same transactional shape as the real one (estimate, check
    and reserve, insert — one BEGIN IMMEDIATE transaction), for tests that must not wait for
    the submit route. It holds the transaction ``hold_seconds`` between the check and the
    insert to widen any race window."""
    bp = Blueprint("costs_test_submit", __name__)

    @bp.post("/api/_test/costs/submit")
    def submit():
        body = request.get_json()
        with db.transaction() as s:
            est = costs.estimate(s, body["provider"], body.get("hardware"), body.get("config") or {})
            check = costs.check_and_reserve(s, body["provider"], est.estimated_cost_usd)
            time.sleep(hold_seconds)
            job = Job(name=body.get("name") or "stub", provider=body["provider"], status="queued",
                      hardware=body.get("hardware"), config=body.get("config") or {}, dataloader_config=[],
                      **est.job_fields())
            s.add(job)
            s.flush()
            job_id = job.id
        return jsonify({"job": {"id": job_id, "estimated_cost_usd": est.estimated_cost_usd},
                        "warnings": list(check.warnings)}), 201

    app.register_blueprint(bp)
    return "/api/_test/costs/submit"


@pytest.fixture
def now():
    return utcnow()


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)
