"""Per-user spend limits per day and per week (the monthly ones: test_user_limits.py): what the
period counts (spend finished inside it, in the instance time zone, plus reservations), block
and warn, and the same through the submit API."""
from datetime import UTC, datetime, timedelta

import pytest

from stcloud import db, settings
from stcloud.costs import user_limits
from stcloud.errors import PaymentRequired
from stcloud.models import Job, User, utcnow
from tests.accounts.helpers import add_user, set_owner
from tests.jobs.factories import make_job

NOW = datetime(2026, 12, 9, 12, 0, tzinfo=UTC)  # a Wednesday; the ISO week began Monday 7 December


def _finished(app, owner_id, cost, completed_at) -> str:
    job_id = make_job(app, "completed", provider="worker", cost_usd=cost)
    set_owner(app, job_id, owner_id)
    with app.app_context(), db.transaction() as s:
        s.get(Job, job_id).completed_at = completed_at
    return job_id


def _limit(app, user_id, amount, period, action="block"):
    with app.app_context(), db.transaction() as s:
        user = s.get(User, user_id)
        user.spend_limit_usd, user.spend_period, user.spend_action = amount, period, action


def _check(app, user_id, amount, now=NOW):
    with app.app_context(), db.transaction() as s:
        return user_limits.check(s, user_id, amount, now=now)


@pytest.fixture
def mia(secure_app):
    """mia spent 3 today, 4 yesterday (this week), 5 last Sunday (last week, this month) and 100
    the Sunday before (last month); max spent 50 today (not hers)."""
    mia, max_ = add_user(secure_app, "mia", "member"), add_user(secure_app, "max", "member")
    _finished(secure_app, mia.user_id, 3.0, NOW.replace(hour=8))
    _finished(secure_app, mia.user_id, 4.0, datetime(2026, 12, 8, 20, 0, tzinfo=UTC))
    _finished(secure_app, mia.user_id, 5.0, datetime(2026, 12, 6, 23, 59, tzinfo=UTC))
    _finished(secure_app, mia.user_id, 100.0, datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
    _finished(secure_app, max_.user_id, 50.0, NOW.replace(hour=9))
    return mia


def test_a_daily_limit_counts_today_only(secure_app, mia):
    _limit(secure_app, mia.user_id, 10.0, "daily")
    assert _check(secure_app, mia.user_id, 7.0) == []  # 3 today + 7 = 10: fits exactly
    with pytest.raises(PaymentRequired) as exc:
        _check(secure_app, mia.user_id, 7.5)
    assert "mia's daily spending limit of $10.00" in exc.value.detail and "$10.50" in exc.value.detail
    assert exc.value.extra["limit_scope"] == "user:mia" and exc.value.extra["after_usd"] == pytest.approx(10.5)
    # the next day starts from nothing spent
    assert _check(secure_app, mia.user_id, 10.0, now=datetime(2026, 12, 10, 0, 0, 1, tzinfo=UTC)) == []


def test_a_weekly_limit_counts_since_monday(secure_app, mia):
    _limit(secure_app, mia.user_id, 10.0, "weekly")
    assert _check(secure_app, mia.user_id, 3.0) == []  # 3 + 4 this week + 3 = 10
    with pytest.raises(PaymentRequired) as exc:
        _check(secure_app, mia.user_id, 3.5)  # last Sunday's 5 is not counted, or this would fail at 3.0
    assert "mia's weekly spending limit of $10.00" in exc.value.detail
    # on the Sunday before, the week held 5 (and the 4 of Tuesday was still ahead)
    sunday = datetime(2026, 12, 6, 23, 59, 30, tzinfo=UTC)
    assert _check(secure_app, mia.user_id, 5.0, now=sunday) == []
    with pytest.raises(PaymentRequired):
        _check(secure_app, mia.user_id, 5.5, now=sunday)


def test_the_period_follows_the_instance_time_zone(secure_app, mia):
    """In Tokyo (UTC+9) 9 December began at 15:00 UTC on the 8th: Tuesday's 20:00 UTC job
    (4) is spent "today" there, beside the 3 of this morning."""
    with secure_app.app_context():
        settings.put("timezone", "Asia/Tokyo")
    _limit(secure_app, mia.user_id, 10.0, "daily")
    assert _check(secure_app, mia.user_id, 3.0) == []  # 3 + 4 + 3 = 10
    with pytest.raises(PaymentRequired):
        _check(secure_app, mia.user_id, 3.5)


def test_warn_instead_of_block_for_days_and_weeks(secure_app, mia):
    for period, spent in (("daily", 3.0), ("weekly", 7.0)):
        _limit(secure_app, mia.user_id, 10.0, period, action="warn")
        warnings = _check(secure_app, mia.user_id, 8.0)
        assert warnings == [f"mia's {period} spending limit of $10.00 would be exceeded: "
                            f"${spent + 8.0:.2f} with this job"]


def test_reservations_of_unfinished_jobs_count_in_every_period(secure_app):
    mia = add_user(secure_app, "mia", "member")
    running = make_job(secure_app, "running", provider="worker", estimated_cost_usd=6.0)
    set_owner(secure_app, running, mia.user_id)
    for period in ("daily", "weekly"):
        _limit(secure_app, mia.user_id, 10.0, period)
        assert _check(secure_app, mia.user_id, 4.0, now=utcnow()) == []  # 6 reserved + 4
        with pytest.raises(PaymentRequired):
            _check(secure_app, mia.user_id, 4.5, now=utcnow())


@pytest.mark.parametrize("period", ["daily", "weekly"])
def test_the_submit_api_blocks_then_warns(secure_app, tmp_path, period):
    admin, mia = add_user(secure_app, "ada", "admin"), add_user(secure_app, "mia", "member")
    c = secure_app.test_client()
    assert c.put("/api/cloud/rates", json={"provider": "worker", "usd_per_hour": 3.6},
                 headers=admin.headers).status_code == 200
    data = tmp_path / "dataset"
    data.mkdir()
    for i in range(2):
        (data / f"img{i}.txt").write_text(f"caption {i}\n")
        (data / f"img{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([i]))
    body = {"provider": "worker", "name": "periodic", "config": {"max_train_steps": 100},
            "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": str(data)}]}
    per_job = c.post("/api/cloud/cost-estimate", json={"provider": "worker", "config": body["config"]},
                     headers=mia.headers).json["estimated_cost_usd"]
    assert per_job > 0
    now = utcnow()
    _finished(secure_app, mia.user_id, 1.0, now)  # inside any period that contains now
    _finished(secure_app, mia.user_id, 100.0, now - timedelta(days=8))  # outside a day and a week
    r = c.patch("/api/cloud/users/mia", headers=admin.headers,
                json={"spend_limit_usd": round(1.0 + 1.5 * per_job, 6), "spend_period": period, "spend_action": "block"})
    assert r.status_code == 200 and r.json["user"]["limits"]["spend_period"] == period
    first = c.post("/api/cloud/jobs/submit", json=body, headers=mia.headers)
    assert first.status_code == 201, first.json
    second = c.post("/api/cloud/jobs/submit", json=body, headers=mia.headers)
    assert second.status_code == 402 and second.mimetype == "application/problem+json"
    assert second.json["limit_scope"] == "user:mia" and f"mia's {period} spending limit" in second.json["detail"]
    assert c.patch("/api/cloud/users/mia", json={"spend_action": "warn"}, headers=admin.headers).status_code == 200
    third = c.post("/api/cloud/jobs/submit", json=body, headers=mia.headers)
    assert third.status_code == 201
    assert any(f"mia's {period} spending limit" in w for w in third.json.get("warnings", []))
