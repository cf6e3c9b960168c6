"""The REST API against its own OpenAPI document, fuzzed by schemathesis on a live server.

``make test`` runs a bounded pass (fixed seed, few examples per operation, ~3 minutes on a
loaded 2-core machine); ``make fuzz`` runs the same test with ``STCLOUD_FUZZ=long`` (more
examples, the stateful phase that follows the document's links). Checks: no 500
(``not_a_server_error``), and every answer's status code, content type and (where declared)
body conform to the document (every answer has a model: tests/api/test_openapi.py refuses open
ones). Auth is on: the bootstrap admin token reaches every handler, and the worker API gets the
token of a worker made for the run. Nothing is excluded: submits go to providers that cannot
start real work here (no Replicate token, no running worker agent, no Slurm cluster).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port

TOKEN = "fuzz-admin-token-0123456789"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
PROFILES = {
    # (examples per operation, phases, time budget in seconds)
    "short": ("3", "examples,coverage,fuzzing", "150"),
    "long": ("60", "examples,coverage,fuzzing,stateful", "1800"),
}


def _schemathesis() -> str:
    exe = Path(sys.executable).parent / "schemathesis"
    if not exe.exists():
        pytest.fail(f"{exe} missing: pip install -e '.[test]'")
    return str(exe)


def _worker_config(url: str, path: Path) -> Path:
    """A worker of the server under test and a schemathesis config that sends its token to the
    worker API (``/api/workers/...``), so those operations are fuzzed past authentication, and
    that counts a provider's 502 as an answer."""
    r = requests.post(url + "/api/cloud/workers", json={"name": "fuzz-worker"},
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    # A provider that tries and fails answers 502 (problem+json, documented): submits to Slurm
    # reach sbatch here (installed, no cluster), and the fuzzer can store a Replicate token
    # while Replicate's base URL is a closed port. Any other 5xx is a failure.
    path.write_text('[checks.not_a_server_error]\nexpected-statuses = ["2xx", "3xx", "4xx", "502"]\n\n'
                    '[[operations]]\ninclude-path-regex = "^/api/workers/"\n'
                    f'headers = {{ Authorization = "Bearer {token}" }}\n')
    return path


def _failures(out: str) -> str:
    """The report's failures (each with a curl line to reproduce it) and its summary."""
    start = out.find("FAILURES")
    summary = out.find("SUMMARY")
    failures = out[start:summary] if 0 <= start < summary else ""
    return failures[:40_000] + "\n" + out[summary:][-5000:] if failures else out[-15000:]


@pytest.mark.timeout(2400)
def test_api_conforms_to_its_document(serve_process, tmp_path):
    profile = os.environ.get("STCLOUD_FUZZ", "short")
    examples, phases, budget = PROFILES[profile]
    server = serve_process(env={"STCLOUD_AUTH": "on", "STCLOUD_ADMIN_TOKEN": TOKEN,
                                # providers' outbound calls fail fast instead of leaving the machine
                                "REPLICATE_BASE_URL": f"http://127.0.0.1:{free_port()}",
                                "HTTPS_PROXY": "", "HTTP_PROXY": ""})
    report = tmp_path / "schemathesis.ndjson"
    config = _worker_config(server.url, tmp_path / "schemathesis.toml")
    cmd = [_schemathesis(), "--config-file", str(config), "run", server.url + "/api/openapi.json",
           "--header", f"Authorization: Bearer {TOKEN}",
           "--checks", CHECKS, "--max-examples", examples, "--phases", phases, "--seed", "20261206",
           "--max-time", budget, "--request-timeout", "30", "--no-shrink", "--continue-on-failure",
           "--report-ndjson-path", str(report)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=int(budget) + 300,
                          env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
    out = proc.stdout + proc.stderr
    assert "Tested: " in out, out[-5000:]
    summary = [line.strip() for line in out.splitlines()
               if re.match(r"\s*(Selected|Tested|Skipped):|\s*\d+ generated", line)]
    print("schemathesis:", "; ".join(summary))
    assert proc.returncode == 0, f"schemathesis found problems (seed 20261206):\n{_failures(out)}"
    server_log = server.log_path.read_text(errors="replace")
    assert "unhandled error" not in server_log, server_log[-5000:]
