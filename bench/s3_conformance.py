"""Run ceph's s3-tests (the S3 conformance suite) against a real ``stcloud serve`` and against
moto's S3 server, and print both scores for the same selection.

The suite is not vendored and this script downloads nothing. Get it and its environment once
(see docs/storage.md, "S3 conformance"):

    git clone https://github.com/ceph/s3-tests /tmp/s3-tests
    python3 -m venv /tmp/s3-tests/.venv && /tmp/s3-tests/.venv/bin/pip install -r /tmp/s3-tests/requirements.txt

then, from the repository with the project's venv:

    .venv/bin/python -m bench.s3_conformance --suite /tmp/s3-tests --python /tmp/s3-tests/.venv/bin/python
    ... --target stcloud            # one server only
    ... --tests s3tests/functional/test_s3.py   # anything pytest accepts instead of the core list

Each target gets a fresh server on a free loopback port (stcloud with a temporary
STCLOUD_HOME), three access keys (the suite's main, alt and tenant users; stcloud's are minted
through ``POST /api/cloud/storage/credentials``, scope ``*``), a generated ``s3tests.conf``, and
one pytest run of the suite with its JUnit report. Exit status 0 when every target ran.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.s3_bench import start_moto, start_stcloud, stop

HERE = Path(__file__).resolve().parent
CORE_LIST = HERE / "s3tests_core.txt"
USERS = ("main", "alt", "tenant")

CONF = """[DEFAULT]
host = 127.0.0.1
port = {port}
is_secure = False
ssl_verify = False

[fixtures]
bucket prefix = s3t-{{random}}-

[s3 main]
display_name = main
user_id = main
email = main@example.com
api_name = default
access_key = {main_key}
secret_key = {main_secret}

[s3 alt]
display_name = alt
user_id = alt
email = alt@example.com
access_key = {alt_key}
secret_key = {alt_secret}

[s3 tenant]
display_name = tenant
user_id = tenant
email = tenant@example.com
tenant = tenant
access_key = {tenant_key}
secret_key = {tenant_secret}

[iam]
display_name = iam
user_id = iam
email = iam@example.com
access_key = {main_key}
secret_key = {main_secret}

[iam root]
user_id = iamroot
email = iamroot@example.com
access_key = {main_key}
secret_key = {main_secret}

[iam alt root]
user_id = iamaltroot
email = iamaltroot@example.com
access_key = {alt_key}
secret_key = {alt_secret}
"""


def core_tests() -> list[str]:
    return [line.strip() for line in CORE_LIST.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def mint_stcloud_keys(url: str) -> dict:
    import requests

    keys = {}
    for user in USERS:
        r = requests.post(url + "/api/cloud/storage/credentials", timeout=10,
                          json={"bucket": "*", "ttl_seconds": 86400, "description": f"s3-tests {user}"})
        r.raise_for_status()
        body = r.json()
        keys[f"{user}_key"], keys[f"{user}_secret"] = body["access_key_id"], body["secret_access_key"]
    return keys


def moto_keys() -> dict:
    return {f"{user}_{part}": f"{user}{part}" for user in USERS for part in ("key", "secret")}


def run_suite(args, work: Path, port: int, keys: dict, endpoint_path: str, tests: list[str]) -> dict:
    conf = work / "s3tests.conf"
    conf.write_text(CONF.format(port=port, **keys))
    report = work / "junit.xml"
    env = {**os.environ, "S3TEST_CONF": str(conf), "S3TESTS_ENDPOINT_PATH": endpoint_path,
           "PYTHONPATH": os.pathsep.join([str(HERE), str(args.suite)])}
    cmd = [args.python, "-m", "pytest", "-p", "s3tests_endpoint", "-q", "-p", "no:cacheprovider",
           f"--junitxml={report}", "-o", "junit_family=xunit2", *tests]
    with open(work / "pytest.log", "wb") as log:
        subprocess.run(cmd, cwd=str(args.suite), env=env, stdout=log, stderr=subprocess.STDOUT,
                       timeout=args.timeout)
    return parse_junit(report)


def parse_junit(report: Path) -> dict:
    """test name -> passed | failed | error | skipped (with the first line of the message)."""
    out = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                detail = (child.get("message") or "").splitlines()[0][:160] if child.get("message") else ""
                break
        out[name] = (outcome, detail)
    return out


def run_target(args, name: str, tests: list[str]) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"s3tests-{name}-"))
    try:
        if name == "stcloud":
            proc, url = start_stcloud(work)
            port, path, keys = int(url.rsplit(":", 1)[1]), "/api/cloud/storage", mint_stcloud_keys(url)
        else:
            proc, url = start_moto()
            port, path, keys = int(url.rsplit(":", 1)[1]), "", moto_keys()
        try:
            return run_suite(args, work, port, keys, path, tests)
        finally:
            stop(proc)
    finally:
        if args.keep:
            print(f"{name}: work directory kept at {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", type=Path, required=True, help="a checkout of github.com/ceph/s3-tests")
    ap.add_argument("--python", required=True, help="the python of a venv with the suite's requirements")
    ap.add_argument("--target", choices=["stcloud", "moto", "both"], default="both")
    ap.add_argument("--tests", nargs="*", help="pytest node ids or paths (default: bench/s3tests_core.txt)")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--keep", action="store_true", help="keep each target's work directory (logs, conf)")
    ap.add_argument("--verbose", "-v", action="store_true", help="list every test that did not pass")
    args = ap.parse_args(argv)
    if not (args.suite / "s3tests" / "functional").is_dir():
        print(f"{args.suite} is not an s3-tests checkout (no s3tests/functional)", file=sys.stderr)
        return 2
    tests = args.tests or core_tests()
    targets = ["stcloud", "moto"] if args.target == "both" else [args.target]
    results = {t: run_target(args, t, tests) for t in targets}
    for target, res in results.items():
        passed = sum(1 for o, _ in res.values() if o == "passed")
        print(f"{target}: {passed}/{len(res)} passed")
        if args.verbose:
            for test, (outcome, detail) in sorted(res.items()):
                if outcome != "passed":
                    print(f"  {outcome:7} {test}  {detail}")
    if len(results) == 2:
        ours, moto = results["stcloud"], results["moto"]
        only_moto = sorted(t for t in ours if ours[t][0] != "passed" and moto.get(t, ("",))[0] == "passed")
        only_ours = sorted(t for t in ours if ours[t][0] == "passed" and moto.get(t, ("",))[0] != "passed")
        print(f"passed by moto only: {len(only_moto)}" + "".join(f"\n  {t}" for t in only_moto))
        print(f"passed by stcloud only: {len(only_ours)}" + "".join(f"\n  {t}" for t in only_ours))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
