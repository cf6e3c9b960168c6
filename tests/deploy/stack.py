"""A production-shaped stack on loopback: ``gunicorn -w 2 'app:create_app()'`` plus one
``stcloud scheduler``, and nginx or Caddy in front running the files in ``docs/deploy/``
with a self-signed certificate. Every daemon is stopped by its PID."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from tests.conftest import ROOT, free_port
from tests.deploy.conftest import stop_pid

DOCS = ROOT / "docs" / "deploy"
ADMIN = "stack-admin-token"
CLIENT_IP = "127.0.0.2"  # stands in for Replicate (allowed by the proxy and by stcloud)
OTHER_IP = "127.0.0.3"  # another allowed source for the proxy, not for stcloud
OUTSIDE_IP = "127.0.0.4"  # not allowed anywhere


def wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text()[-2000:] if log.exists() else ''}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}: {log.read_text()[-2000:] if log.exists() else ''}")


class Backend:
    """gunicorn (2 workers) + ``stcloud scheduler`` on one STCLOUD_HOME."""

    def __init__(self, workdir: Path, env: dict):
        self.home = workdir / "home"
        self.home.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
                    "STCLOUD_HOME": str(self.home), "STCLOUD_ADMIN_TOKEN": ADMIN, "PYTHONUNBUFFERED": "1", **env}
        self.env.pop("STCLOUD_DATABASE_URL", None)
        # gunicorn's workers share their counters through this directory (prometheus_client).
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "prometheus")
        (workdir / "prometheus").mkdir()
        self.procs: list[subprocess.Popen] = []
        self.logs = workdir
        up = subprocess.run([sys.executable, "-m", "stcloud.cli", "db", "upgrade"], env=self.env, cwd=str(ROOT),
                            capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            raise RuntimeError(f"stcloud db upgrade failed: {up.stderr[-2000:]}")
        self.gunicorn_log = workdir / "gunicorn.log"
        self._start([sys.executable, "-m", "gunicorn", "-w", "2", "--timeout", "300", "-b", f"127.0.0.1:{self.port}",
                     "app:create_app()"], self.gunicorn_log)
        self.scheduler_log = workdir / "scheduler.log"
        self._start([sys.executable, "-m", "stcloud.cli", "scheduler"], self.scheduler_log)
        wait_port(self.port, self.procs[0], "gunicorn", self.gunicorn_log)
        self.admin = requests.Session()
        self.admin.headers["Authorization"] = f"Bearer {ADMIN}"

    def _start(self, cmd: list[str], log: Path) -> None:
        self.procs.append(subprocess.Popen(cmd, env=self.env, cwd=str(ROOT), stdout=open(log, "wb"),
                                           stderr=subprocess.STDOUT))

    def configure(self, **changes) -> dict:
        resp = self.admin.put(f"{self.url}/api/cloud/providers/replicate", json=changes, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_pid(proc, timeout=15)


def _substitute(text: str, pairs: list[tuple[str, str]], name: str) -> str:
    for old, new in pairs:
        if old not in text:
            raise AssertionError(f"docs/deploy/{name} no longer contains {old!r}; "
                                 "update the test and the docs together")
        text = text.replace(old, new)
    return text


class ReverseProxy:
    kind = ""

    def __init__(self, workdir: Path, backend: Backend, cert: Path, key: Path):
        self.workdir = workdir
        self.http_port, self.https_port = free_port(), free_port()
        self.https_url = f"https://127.0.0.1:{self.https_port}"
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.backend, self.cert, self.key = backend, cert, key
        self.log = workdir / f"{self.kind}.log"
        self.proc = self._start()
        try:
            wait_port(self.https_port, self.proc, self.kind, self.log)
            wait_port(self.http_port, self.proc, self.kind, self.log)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        stop_pid(self.proc)


class Nginx(ReverseProxy):
    kind = "nginx"

    def _start(self) -> subprocess.Popen:
        site = _substitute((DOCS / "nginx.conf").read_text(), [
            ("server 127.0.0.1:8080;", f"server 127.0.0.1:{self.backend.port};"),
            ("listen 80;", f"listen 127.0.0.1:{self.http_port};"),
            ("listen 443 ssl http2;", f"listen 127.0.0.1:{self.https_port} ssl http2;"),
            ("return 301 https://$host$request_uri;", f"return 301 https://$host:{self.https_port}$request_uri;"),
            ("/etc/ssl/certs/training.crt", str(self.cert)),
            ("/etc/ssl/private/training.key", str(self.key)),
            ("allow 34.82.0.0/16;", f"allow {CLIENT_IP};"),
            ("allow 35.185.0.0/16;", f"allow {OTHER_IP};"),
            ("allow 10.0.0.0/8;", "allow 127.0.0.0/8;"),
        ], "nginx.conf")
        (self.workdir / "stcloud.conf").write_text(site)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / sub).mkdir(exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""
        w = self.workdir
        (w / "nginx.conf").write_text(f"""{user}worker_processes 2;
error_log {w}/error.log info;
pid {w}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {w}/access.log;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    include {w}/stcloud.conf;
}}
""")
        check = subprocess.run(["nginx", "-t", "-p", str(w), "-c", str(w / "nginx.conf")],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the configuration: {check.stderr}")
        return subprocess.Popen(["nginx", "-p", str(w), "-c", str(w / "nginx.conf"), "-g", "daemon off;"],
                                stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)


class Caddy(ReverseProxy):
    kind = "caddy"

    def _start(self) -> subprocess.Popen:
        w = self.workdir
        site = _substitute((DOCS / "Caddyfile").read_text(), [
            ("training.example.com {", "127.0.0.1 {"),
            ("127.0.0.1:8080", f"127.0.0.1:{self.backend.port}"),
            ("/etc/ssl/certs/training.crt", str(self.cert)),
            ("/etc/ssl/private/training.key", str(self.key)),
            ("remote_ip 34.82.0.0/16 35.185.0.0/16", f"remote_ip {CLIENT_IP} {OTHER_IP}"),
            ("remote_ip 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16", "remote_ip 127.0.0.0/8"),
        ], "Caddyfile")
        (w / "Caddyfile").write_text(
            f"{{\n\thttp_port {self.http_port}\n\thttps_port {self.https_port}\n\tdefault_bind 127.0.0.1\n\tadmin off\n"
            f"\tskip_install_trust\n\tstorage file_system {w / 'data'}\n}}\n\n{site}")
        env = {**os.environ, "HOME": str(w), "XDG_DATA_HOME": str(w / "xdg-data"),
               "XDG_CONFIG_HOME": str(w / "xdg-config")}
        check = subprocess.run(["caddy", "validate", "--config", str(w / "Caddyfile"), "--adapter", "caddyfile"],
                               capture_output=True, text=True, env=env)
        if check.returncode != 0:
            raise RuntimeError(f"caddy validate refused the configuration: {check.stderr[-2000:]}")
        return subprocess.Popen(["caddy", "run", "--config", str(w / "Caddyfile"), "--adapter", "caddyfile"],
                                env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)


PROXIES = {"nginx": Nginx, "caddy": Caddy}


def available(kind: str) -> str | None:
    return None if shutil.which(kind) else f"{kind} not installed (apt-get install -y {kind})"


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen loopback address (Linux routes all of 127.0.0.0/8 to lo)."""

    def __init__(self, source: str, **kwargs):
        self._source = (source, 0)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = self._source
        super().init_poolmanager(*args, **kwargs)


def session_from(source: str, verify: Path | None = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    adapter = SourceAddressAdapter(source)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    if verify is not None:
        s.verify = str(verify)
    return s
