"""Shared fixtures: an app on a temp database *file* migrated with Alembic, its client, a
live server (thread or real ``stcloud serve`` process) and a headless Chromium."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def migrated_db_template(tmp_path_factory) -> Path:
    """One migrated SQLite file per session; each test gets a copy."""
    from alembic import command

    from stcloud.cli import alembic_config

    path = tmp_path_factory.mktemp("dbtemplate") / "template.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "head")
    return path


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def auth_default(cfg: dict) -> str:
    """Tests run with sign-in off unless they ask for it: by passing ``STCLOUD_AUTH`` (the
    accounts tests pass "on") or an ``STCLOUD_ADMIN_TOKEN`` (which means "protect this")."""
    return "on" if cfg.get("STCLOUD_ADMIN_TOKEN") else "off"


@pytest.fixture
def make_app(home, migrated_db_template, monkeypatch):
    """Factory: ``make_app(**config)`` -> app on a fresh copy of the migrated database."""
    for var in ("STCLOUD_ADMIN_TOKEN", "STCLOUD_PUBLIC_URL", "STCLOUD_DATABASE_URL",
                "REPLICATE_API_TOKEN", "HF_TOKEN", "STCLOUD_AUTH"):
        monkeypatch.delenv(var, raising=False)
    apps = []

    def _make(**cfg):
        from stcloud import create_app

        db_path = home / "stcloud.db"
        if not db_path.exists():
            shutil.copy(migrated_db_template, db_path)
        base = {"TESTING": True, "STCLOUD_HOME": str(home),
                "STCLOUD_DATABASE_URL": f"sqlite:///{db_path}"}
        base.update(cfg)
        base.setdefault("STCLOUD_AUTH", auth_default(cfg))
        app = create_app(base)
        apps.append(app)
        return app

    yield _make
    for app in apps:
        app.extensions["stcloud.db"].dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_of(client) -> str:
    """The CSRF token of ``client``'s session (after it loaded any page)."""
    for path in ("/", "/login"):
        client.get(path)
        with client.session_transaction() as sess:
            if sess.get("csrf"):
                return sess["csrf"]
    raise AssertionError("no CSRF token in the session")


@contextlib.contextmanager
def serve_in_thread(app, ssl_context=None):
    """Serve ``app`` with a threaded werkzeug server on loopback; yields its base URL (also
    recorded as ``STCLOUD_LOCAL_URL``)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context)
    url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{server.server_port}"
    app.config["STCLOUD_LOCAL_URL"] = url
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield url
    finally:
        server.shutdown()
        t.join(5)


@pytest.fixture
def live_server(app):
    """The app served by a threaded werkzeug server on loopback; yields its base URL."""
    with serve_in_thread(app) as url:
        yield url


class ServeProcess:
    """A real ``stcloud serve`` process on a free port."""

    def __init__(self, home: Path, args=(), env: dict | None = None, port: int | None = None):
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"serve-{self.port}.log"
        # Sign-in follows what this server was given (not the suite-wide default in os.environ):
        # off on a loopback bind unless ``env`` asks for it or protects it with an admin token.
        auth = {"STCLOUD_AUTH": auth_default(env or {})} if "STCLOUD_AUTH" not in (env or {}) else {}
        full_env = {**os.environ, "STCLOUD_HOME": str(home), "PYTHONUNBUFFERED": "1", **auth, **(env or {})}
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stcloud.cli", "serve", "--port", str(self.port), *args],
            env=full_env, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(ROOT))

    def wait_ready(self, timeout: float = 60) -> ServeProcess:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stcloud serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"stcloud serve not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def serve_process(tmp_path, monkeypatch):
    procs = []
    for var in ("STCLOUD_ADMIN_TOKEN", "STCLOUD_PUBLIC_URL", "STCLOUD_DATABASE_URL", "REPLICATE_API_TOKEN",
                "STCLOUD_AUTH"):
        monkeypatch.delenv(var, raising=False)

    def _start(home: Path | None = None, args=(), env=None, port=None):
        h = home or (tmp_path / f"serve-home-{len(procs)}")
        h.mkdir(parents=True, exist_ok=True)
        p = ServeProcess(h, args=args, env=env, port=port)
        procs.append(p)
        return p.wait_ready()

    yield _start
    for p in procs:
        p.stop()


# ---- browser --------------------------------------------------------------------------

def _browser_unavailable_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install -y chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright (pip) not installed"
    return None


@pytest.fixture(scope="session")
def browser():
    reason = _browser_unavailable_reason()
    if reason:
        msg = f"BROWSER TESTS NOT RUN: {reason}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " — required when CI=true")
        sys.stderr.write("\n" + "!" * 78 + f"\n!!! {msg}\n" + "!" * 78 + "\n")
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(15000)
    yield pg
    # A route handler still running (a test's deliberately slow reply) must not fail the next
    # test when the context closes under it.
    pg.unroute_all(behavior="ignoreErrors")
    ctx.close()


@pytest.fixture(autouse=True, scope="session")
def _trainer_full_speed():
    """The sample config paces the reference trainer so a person can watch it; tests run it
    at full speed unless they pass their own STCLOUD_TRAINER_STEP_DELAY to a process."""
    old = os.environ.get("STCLOUD_TRAINER_STEP_DELAY")
    os.environ["STCLOUD_TRAINER_STEP_DELAY"] = "0"
    yield
    if old is None:
        os.environ.pop("STCLOUD_TRAINER_STEP_DELAY", None)
    else:
        os.environ["STCLOUD_TRAINER_STEP_DELAY"] = old


@pytest.fixture(autouse=True, scope="session")
def _auth_off_by_default():
    """Apps a test builds by itself (``create_app({...})``, CLI commands, subprocesses) start
    with sign-in off like ``make_app``; a test that wants it passes STCLOUD_AUTH="on"."""
    old = os.environ.get("STCLOUD_AUTH")
    os.environ["STCLOUD_AUTH"] = "off"
    yield
    if old is None:
        os.environ.pop("STCLOUD_AUTH", None)
    else:
        os.environ["STCLOUD_AUTH"] = old


@pytest.fixture(autouse=True, scope="session")
def _datasets_under_basetemp(tmp_path_factory):
    """Tests keep their datasets in pytest's temporary directories: that directory is the
    dataset root (``STCLOUD_DATASET_ROOTS``) unless a test sets its own (tests/packaging/test_roots.py)."""
    old = os.environ.get("STCLOUD_DATASET_ROOTS")
    os.environ["STCLOUD_DATASET_ROOTS"] = str(tmp_path_factory.getbasetemp().resolve())
    yield
    if old is None:
        os.environ.pop("STCLOUD_DATASET_ROOTS", None)
    else:
        os.environ["STCLOUD_DATASET_ROOTS"] = old


# ---- parallel runs (pytest-xdist): which tests share a worker, serial single-file runs ----
from tests.parallel import (  # noqa: E402,F401
    pytest_cmdline_main,
    pytest_collection_modifyitems,
    pytest_xdist_make_scheduler,
)
