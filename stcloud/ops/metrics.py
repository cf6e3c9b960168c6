"""Prometheus metrics (``stcloud_`` prefix).

Most figures are read from the database at scrape time, so they are the same whichever
process answers (gunicorn workers, ``stcloud serve``) and include what the scheduler process
did: jobs by provider and status, spend by provider and period, webhook deliveries by
outcome, how far behind the status poller is, worker and scheduler liveness.

S3 bytes in/out are counted where the bytes flow, by a WSGI wrapper around the S3 endpoint's
URL prefix (no change to its handlers). Those are per-process counters; under gunicorn set
``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, cleared at each start) and ``/metrics``
sums every worker's counters (prometheus_client's multiprocess mode).
"""
from __future__ import annotations

import os
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from stcloud import db, scheduler, states
from stcloud import settings as settings_store
from stcloud.costs import periods
from stcloud.models import Job, WebhookDelivery, Worker

SPEND_PERIODS = ("daily", "weekly", "monthly")

S3_BYTES_IN = Counter("stcloud_s3_received_bytes", "Bytes received by the built-in S3 endpoint (request bodies).")
S3_BYTES_OUT = Counter("stcloud_s3_sent_bytes", "Bytes sent by the built-in S3 endpoint (response bodies).")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class DatabaseCollector:
    """Reads the figures from the database at each scrape. Call inside an app context."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        now = datetime.now(UTC)
        with db.session() as s:
            jobs = GaugeMetricFamily("stcloud_jobs", "Jobs by provider and status.", labels=["provider", "status"])
            for provider, status, n in s.execute(
                    select(Job.provider, Job.status, func.count()).group_by(Job.provider, Job.status)):
                jobs.add_metric([provider, status], n)
            yield jobs

            tz = settings_store.get("timezone", s=s) or "UTC"
            spend = GaugeMetricFamily("stcloud_spend_usd", "Billed cost of jobs completed in the current period "
                                      f"(calendar periods in {tz}).", labels=["provider", "period"])
            for period in SPEND_PERIODS:
                start, end = periods.period_bounds(period, tz, now)
                for provider, total in s.execute(
                        select(Job.provider, func.coalesce(func.sum(Job.cost_usd), 0.0))
                        .where(Job.completed_at >= start, Job.completed_at < end, Job.cost_usd.is_not(None))
                        .group_by(Job.provider)):
                    spend.add_metric([provider, period], float(total))
            yield spend

            deliveries = GaugeMetricFamily("stcloud_webhook_deliveries", "Accepted webhook deliveries on record, by "
                                           "outcome.", labels=["provider", "outcome"])
            for provider, outcome, n in s.execute(
                    select(WebhookDelivery.provider, WebhookDelivery.outcome, func.count())
                    .group_by(WebhookDelivery.provider, WebhookDelivery.outcome)):
                deliveries.add_metric([provider, outcome], n)
            yield deliveries

            overdue = s.scalar(select(func.min(Job.next_poll_at)).where(
                Job.next_poll_at.is_not(None), Job.next_poll_at <= now, Job.status.in_(tuple(states.ACTIVE))))
            lag = GaugeMetricFamily("stcloud_poll_latency_seconds", "How far behind the status poller is: age of "
                                    "the most overdue poll of an active job (0 when none is overdue).")
            lag.add_metric([], max(0.0, (now - _utc(overdue)).total_seconds()) if overdue else 0.0)
            yield lag

            timeout = float(self.app.config.get("STCLOUD_WORKER_TIMEOUT") or 90)
            workers = GaugeMetricFamily("stcloud_workers", "Registered self-hosted workers by liveness (a heartbeat "
                                        f"within {timeout:g} s).", labels=["state"])
            seen = GaugeMetricFamily("stcloud_worker_heartbeat_age_seconds", "Seconds since each worker's last "
                                     "heartbeat.", labels=["worker", "name"])
            counts = {"alive": 0, "dead": 0}
            for wid, name, beat in s.execute(select(Worker.id, Worker.name, Worker.last_heartbeat_at)):
                age = (now - _utc(beat)).total_seconds() if beat else None
                counts["alive" if age is not None and age <= timeout else "dead"] += 1
                if age is not None:
                    seen.add_metric([wid, name], age)
            for state, n in counts.items():
                workers.add_metric([state], n)
            yield workers
            yield seen

        status = scheduler.status(self.app)
        up = GaugeMetricFamily("stcloud_scheduler_up", "1 when the scheduler's heartbeat is recent.")
        up.add_metric([], 1.0 if status["alive"] else 0.0)
        yield up


def render(app) -> bytes:
    """The metrics text. Call inside an app context."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessCounters())
    registry.register(DatabaseCollector(app))
    return generate_latest(registry)


class _ProcessCounters:
    """This process's counters (when not in multiprocess mode)."""

    def collect(self):
        for counter in (S3_BYTES_IN, S3_BYTES_OUT):
            yield from counter.collect()


class _CountingInput:
    def __init__(self, stream):
        self._stream = stream

    def read(self, *args):
        data = self._stream.read(*args)
        S3_BYTES_IN.inc(len(data))
        return data

    def readline(self, *args):
        data = self._stream.readline(*args)
        S3_BYTES_IN.inc(len(data))
        return data

    def __iter__(self):
        for line in self._stream:
            S3_BYTES_IN.inc(len(line))
            yield line


class _CountingBody:
    """Counts the bytes of a response as the server sends them."""

    def __init__(self, iterable):
        self._iterable = iterable

    def __iter__(self):
        for chunk in self._iterable:
            S3_BYTES_OUT.inc(len(chunk))
            yield chunk

    def close(self):
        close = getattr(self._iterable, "close", None)
        if close is not None:
            close()


class S3ByteCounter:
    """WSGI wrapper: counts request and response bytes under ``prefix`` (the S3 endpoint).

    A response with a Content-Length is counted from that header and passed through
    untouched, so the server can still use sendfile for large downloads."""

    def __init__(self, wsgi_app, prefix: str):
        self.wsgi_app = wsgi_app
        self.prefix = prefix.rstrip("/")

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return self.wsgi_app(environ, start_response)
        environ["wsgi.input"] = _CountingInput(environ["wsgi.input"])
        declared: list[int] = []

        def _start(status, headers, exc_info=None):
            length = next((v for k, v in headers if k.lower() == "content-length"), None)
            if length is not None and length.isdigit() and environ.get("REQUEST_METHOD") != "HEAD":
                declared.append(int(length))
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        body = self.wsgi_app(environ, _start)
        if declared:
            S3_BYTES_OUT.inc(declared[0])
            return body
        return _CountingBody(body)
