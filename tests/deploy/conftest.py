"""Daemons for the deployment tests, started on loopback with free ports and stopped by PID:
a forward proxy (Debian's tinyproxy) here; reverse proxies in ``proxies.py``."""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port
from tests.daemons import unavailable
from tests.publishing.conftest import filehost, hub  # noqa: F401  (re-exported fixtures)
from tests.storage.conftest import moto_server, tls_cert  # noqa: F401  (re-exported fixtures)

VIA_NAME = "stcloud-test-proxy"


def stop_pid(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class ForwardProxy:
    """tinyproxy on 127.0.0.1: adds ``Via: 1.1 stcloud-test-proxy`` and logs each request line."""

    REQUEST_RE = re.compile(r"Request \(file descriptor \d+\): (\S+) (\S+) HTTP/")

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "tinyproxy.log"
        conf = workdir / "tinyproxy.conf"
        conf.write_text("\n".join([
            f"Port {self.port}", "Listen 127.0.0.1", "Timeout 120", f'LogFile "{self.log_path}"',
            "LogLevel Connect", f'PidFile "{workdir / "tinyproxy.pid"}"', "MaxClients 100",
            "Allow 127.0.0.1", f'ViaProxyName "{VIA_NAME}"', ""]))
        self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(workdir / "tinyproxy.stderr", "wb"))

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tinyproxy exited with {self.proc.returncode}")
            try:
                # A request to the proxy itself: any HTTP answer means it is listening.
                requests.get(self.url, timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("tinyproxy did not start listening")

    def requests_seen(self) -> list[tuple[str, str]]:
        """(method, target) of every request the proxy received so far."""
        text = self.log_path.read_text() if self.log_path.exists() else ""
        return self.REQUEST_RE.findall(text)

    def targets(self, prefix: str) -> list[str]:
        return [target for _method, target in self.requests_seen() if target.startswith(prefix)]

    def stop(self) -> None:
        stop_pid(self.proc)


@pytest.fixture(scope="session")
def forward_proxy(tmp_path_factory):
    if not shutil.which("tinyproxy"):
        unavailable("forward proxy", "tinyproxy not installed (apt-get install -y tinyproxy)")
    proxy = ForwardProxy(tmp_path_factory.mktemp("tinyproxy"))
    try:
        proxy.wait_ready()
    except RuntimeError as exc:
        proxy.stop()
        unavailable("forward proxy", str(exc))
    yield proxy
    proxy.stop()


@pytest.fixture
def no_proxy_env(monkeypatch):
    """No proxy variables from the machine running the tests."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch

