"""``/healthz`` (the process answers), ``/readyz`` (database and scheduler reachable, else
503) and ``/metrics`` (Prometheus text).

No session, no CSRF (``auth.machine``): load balancers and systemd call the first two
without credentials. ``/metrics`` answers the admin key (``Authorization: Bearer``), or a
client on loopback or in ``trusted_proxies`` connecting directly; a request relayed by a
proxy counts as the client the proxy names (``X-Forwarded-For``, believed only from a
trusted proxy), so opening the dashboard through nginx does not open the metrics.
"""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import text

from stcloud import __version__, db, scheduler
from stcloud.accounts import guard, scope
from stcloud.errors import StcloudError, problem
from stcloud.ops import metrics
from stcloud.web import auth, netfilter

bp = auth.machine(Blueprint("ops", __name__))


def _database() -> dict:
    try:
        with db.session() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "error": str(exc).splitlines()[0]}
    return {"ok": True, "error": None}


def _health() -> dict:
    database = _database()
    return {"version": __version__, "database": database,
            "scheduler": scheduler.status(current_app) if database["ok"] else {"alive": False}}


@bp.get("/healthz")
def healthz():
    """200 while the process answers; the body says what it sees of the database and scheduler."""
    body = _health()
    return jsonify({"status": "ok" if body["database"]["ok"] else "degraded", **body})


@bp.get("/readyz")
def readyz():
    body = _health()
    ready = body["database"]["ok"] and body["scheduler"]["alive"]
    problems = ([] if body["database"]["ok"] else ["database unreachable"]) + \
        ([] if body["scheduler"].get("alive") else ["no scheduler heartbeat in the last 45 s (is `stcloud "
                                                     "scheduler` running?)"])
    return jsonify({"status": "ready" if ready else "not ready", "problems": problems, **body}), \
        (200 if ready else 503)


def _admin_key() -> bool:
    """An admin's API key (or the bootstrap admin token) in ``Authorization: Bearer``."""
    if auth.bearer() is None or not auth.auth_enabled():
        return False
    try:
        actor = guard.resolve_actor()
    except StcloudError:
        return False
    return actor is not None and actor.role == scope.ADMIN


def _may_read_metrics() -> bool:
    if _admin_key():
        return True
    trusted = auth.trusted_networks()
    peer = netfilter.parse_address(request.remote_addr)
    forwarded = request.headers.getlist("X-Forwarded-For")
    if peer is None:
        return False
    peer_trusted = any(peer.version == n.version and peer in n for n in trusted)
    if forwarded and not peer_trusted:
        return False  # relayed by a proxy we were not told about: the real client is unknown
    client = netfilter.client_address(request.remote_addr, forwarded, trusted)
    return client is not None and (client.is_loopback or any(
        client.version == n.version and client in n for n in trusted))


@bp.get("/metrics")
def metrics_page():
    if not _may_read_metrics():  # machines read this: problem+json, never the HTML error page
        return problem(403, "Forbidden", "metrics need the admin key (Authorization: Bearer …) or a request "
                       "from loopback or a trusted proxy's own address")
    return Response(metrics.render(current_app), mimetype="text/plain; version=0.0.4; charset=utf-8")


def init_app(app):
    app.register_blueprint(bp)
    s3_prefix = app.blueprints["s3"].url_prefix if "s3" in app.blueprints else None
    if s3_prefix:
        app.wsgi_app = metrics.S3ByteCounter(app.wsgi_app, s3_prefix)
