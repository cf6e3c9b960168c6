"""Durations as the pages and the notifications write them (one function for both)."""
from stcloud import timeutil
from stcloud.notify import events
from stcloud.web import filters


def test_duration_text():
    assert timeutil.duration_text(None) == "—"
    assert timeutil.duration_text(9.7) == "9s"
    assert timeutil.duration_text(247) == "4m 07s"
    assert timeutil.duration_text(3900) == "1h 05m"
    assert timeutil.duration_text(26 * 3600) == "26h 00m"
    assert filters.duration(247) == "4m 07s"  # the pages' filter


def test_a_job_notification_writes_the_same_duration():
    job = {"name": "lora", "id": "job_1", "status": "completed", "provider": "local",
           "duration_seconds": 3900, "cost_usd": 1.5}
    _subject, text = events.render({"type": "job.completed", "data": {"job": job}})
    assert "after 1h 05m, $1.50" in text
