"""The built wheel runs on its own: installed into a fresh venv outside the checkout, it
migrates a database, serves every page with its CSS/JS, and has the worker command."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import venv
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow

ADMIN = "wheel-test-admin-token"
ASSET_RE = re.compile(r'<(?:link[^>]+href|script[^>]+src)="(/static/[^"]+)"')

# Prints the HTML pages the installed package serves: GET rules without arguments, outside
# /api and the machine blueprints (their routes are not pages).
LIST_PAGES = """
import json
from stcloud import create_app
from stcloud.web import auth
app = create_app()
pages = sorted(r.rule for r in app.url_map.iter_rules()
               if "GET" in r.methods and not r.arguments and not r.rule.startswith("/api/")
               and r.endpoint != "static" and r.endpoint.split(".")[0] not in auth._machine_blueprints)
print(json.dumps({"pages": pages, "package": __import__("stcloud").__file__}))
"""


def _clean_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "STCLOUD_DATABASE_URL", "STCLOUD_PUBLIC_URL")}
    env.update(STCLOUD_HOME=str(home), STCLOUD_ADMIN_TOKEN=ADMIN, PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """``python -m build`` (sdist, then the wheel from the sdist) and a fresh venv with the
    wheel installed by pip (dependencies from pip's cache or index)."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    # Built from a copy of the checkout: the build writes ``*.egg-info``/``build`` beside its
    # sources, which must not change under the tests other xdist workers run from the checkout.
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", "*.egg-info", "build", "dist", "instance"))
    build = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
                           capture_output=True, text=True, cwd=str(base), timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheels = list(dist.glob("stcloud-*.whl"))
    sdists = list(dist.glob("stcloud-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheels[0])],
                         capture_output=True, text=True, cwd=str(base), timeout=900)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return env_dir, base


def test_sdist_carries_the_data(wheel_venv):
    _env, base = wheel_venv
    (sdist,) = (base / "dist").glob("stcloud-*.tar.gz")
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    for needed in ("alembic.ini", "migrations/env.py", "templates/base.html", "static/app.css",
                   "static/vendor/htmx-2.0.8.min.js", "tools/build_py.py", "stcloud/resources.py"):
        assert needed in names


def test_installed_wheel_serves_every_page(wheel_venv, tmp_path):
    env_dir, _base = wheel_venv
    bindir = env_dir / "bin"
    home = tmp_path / "home"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = _clean_env(home)

    up = subprocess.run([str(bindir / "stcloud"), "db", "upgrade"], capture_output=True, text=True,
                        cwd=str(cwd), env=env, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    assert (home / "stcloud.db").exists()

    listed = subprocess.run([str(bindir / "python"), "-c", LIST_PAGES], capture_output=True, text=True,
                            cwd=str(cwd), env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    info = json.loads(listed.stdout.strip().splitlines()[-1])
    # The package that ran is the installed one, not this checkout.
    assert Path(info["package"]).resolve().is_relative_to(env_dir.resolve())
    pages = info["pages"]
    for expected in ("/", "/jobs", "/submit", "/providers", "/workers", "/spend", "/storage", "/settings"):
        assert expected in pages

    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([str(bindir / "stcloud"), "serve", "--port", str(port)], cwd=str(cwd), env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "installed stcloud serve did not come up"
            time.sleep(0.3)
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {ADMIN}"
        full_pages, assets = 0, set()
        for path in pages:
            resp = http.get(url + path, timeout=30)
            assert resp.status_code in (200, 204), (path, resp.status_code, resp.text[:500])
            if resp.headers["Content-Type"].startswith("text/html") and "<html" in resp.text:
                full_pages += 1
                found = ASSET_RE.findall(resp.text)
                assert any(a.endswith(".css") for a in found) and any(a.endswith(".js") for a in found), path
                assets.update(found)
        assert full_pages >= 8
        for asset in sorted(assets):
            resp = http.get(urljoin(url, asset), timeout=30)
            assert resp.status_code == 200 and resp.content, asset
            kind = "css" if asset.endswith(".css") else "javascript" if asset.endswith(".js") else ""
            assert kind in resp.headers["Content-Type"], (asset, resp.headers["Content-Type"])
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_installed_wheel_has_the_worker(wheel_venv, tmp_path):
    env_dir, _base = wheel_venv
    out = subprocess.run([str(env_dir / "bin" / "stcloud"), "worker", "--help"], capture_output=True, text=True,
                         cwd=str(tmp_path), env=_clean_env(tmp_path / "home"), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--server" in out.stdout


def _unit(name: str) -> dict[str, list[str]]:
    """The [Service] keys of a unit file in docs/deploy/ (repeated keys kept in order)."""
    keys: dict[str, list[str]] = {}
    section = None
    for line in (ROOT / "docs" / "deploy" / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    return keys


def test_the_systemd_units_run_the_installed_wheel(wheel_venv, tmp_path):
    """docs/deploy/stcloud.service and stcloud-scheduler.service, as written (venv path, data
    directory and port swapped for the test's): the gunicorn server and the scheduler come up
    from the wheel and /readyz says ready."""
    env_dir, _base = wheel_venv
    port = free_port()
    swaps = [("/opt/stcloud/venv", str(env_dir)), ("/var/lib/stcloud", str(tmp_path / "home")),
             ("/run/stcloud", str(tmp_path / "run")), ("127.0.0.1:8080", f"127.0.0.1:{port}")]

    def swap(text: str) -> str:
        for old, new in swaps:
            text = text.replace(old, new)
        return text

    procs = []
    try:
        for name in ("stcloud.service", "stcloud-scheduler.service"):
            unit = _unit(name)
            assert unit["User"] == ["stcloud"]
            env = _clean_env(tmp_path / "home")
            env.update(dict(swap(e).split("=", 1) for e in unit.get("Environment", [])))
            for pre in unit.get("ExecStartPre", []):
                done = subprocess.run(shlex.split(swap(pre)), env=env, cwd=str(tmp_path), capture_output=True,
                                      text=True, timeout=120)
                assert done.returncode == 0, (pre, done.stderr)
            log = open(tmp_path / f"{name}.log", "wb")
            procs.append(subprocess.Popen(shlex.split(swap(unit["ExecStart"][0])), env=env, cwd=str(tmp_path),
                                          stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            for p in procs:
                assert p.poll() is None, [(tmp_path / f).read_text()[-2000:] for f in
                                          ("stcloud.service.log", "stcloud-scheduler.service.log")]
            try:
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "the units did not become ready"
            time.sleep(0.5)
        page = requests.get(url + "/jobs", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert page.status_code == 200 and "/static/app.css" in page.text
        assert "stcloud_jobs" in requests.get(url + "/metrics", timeout=30).text
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
