"""The atomic reservation on PostgreSQL: ``check_and_reserve`` locks the limit rows FOR
UPDATE, so 20 concurrent submits over loopback still accept exactly 5."""
from __future__ import annotations

import threading

import pytest

from tests.test_postgres import pg_url  # noqa: F401  (a throwaway cluster; skipped when unavailable)

from .conftest import install_submit_stub
from .test_concurrency import _check_outcome, _fire, _setup_limit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_20_concurrent_reservations_on_postgres(pg_url, tmp_path, monkeypatch):  # noqa: F811
    from alembic import command
    from werkzeug.serving import make_server

    from stcloud import create_app, db
    from stcloud.cli import alembic_config
    from stcloud.models import Job

    command.upgrade(alembic_config(pg_url), "head")
    monkeypatch.delenv("STCLOUD_ADMIN_TOKEN", raising=False)
    app = create_app({"STCLOUD_HOME": str(tmp_path), "STCLOUD_DATABASE_URL": pg_url, "TESTING": True})
    path = install_submit_stub(app, hold_seconds=0.02)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with app.app_context(), db.transaction() as s:
            s.query(Job).filter(Job.provider == "worker").delete()
        per_job = _setup_limit(base)
        results = _fire([base + path], lambda i: {"provider": "worker", "name": f"pg{i}",
                                                   "config": {"max_train_steps": 100}})
        _check_outcome(results, per_job)
        with app.app_context(), db.session() as s:
            assert s.query(Job).filter(Job.provider == "worker").count() == 5
    finally:
        server.shutdown()
        t.join(5)
        app.extensions["stcloud.db"].dispose()
