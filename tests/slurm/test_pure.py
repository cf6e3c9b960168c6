"""The Slurm adapter and its helpers import no Flask and no database (STYLE.md), and the
state map covers Slurm's states."""
from __future__ import annotations

import pytest

from stcloud.providers.base import CloudJobStatus
from stcloud.providers.slurm_map import STATE_MAP, SlurmJob, base_state, error_text, gpus_in_tres
from tests.test_architecture import FORBIDDEN_IN_ADAPTERS, PKG, imports_of

PURE = ["providers/slurm.py", "providers/slurm_cli.py", "providers/slurm_rest.py", "providers/slurm_map.py",
        "workers/job_tokens.py", "workers/agent.py"]


@pytest.mark.parametrize("rel", PURE)
def test_adapter_modules_import_no_flask_or_database(rel):
    bad = {n for n in imports_of(PKG / rel) if n.startswith(FORBIDDEN_IN_ADAPTERS + ("stcloud.errors",))}
    assert not bad, f"{rel} imports {bad}"


def test_states_and_reasons():
    for state in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL",
                  "OUT_OF_MEMORY"):
        assert state in STATE_MAP
    assert STATE_MAP["OUT_OF_MEMORY"] == CloudJobStatus.FAILED and STATE_MAP["PENDING"] == CloudJobStatus.QUEUED
    assert base_state("CANCELLED by 0") == "CANCELLED" and base_state("running+") == "RUNNING"
    oom = SlurmJob(job_id="7", name="stcloud-x", state="OUT_OF_MEMORY", reason="OutOfMemory", exit_code=0,
                   exit_signal=9)
    assert error_text(oom) == "Slurm: OUT_OF_MEMORY — the job ran out of memory (exit code 0, signal 9, " \
                              "reason OutOfMemory)"
    assert error_text(SlurmJob(job_id="8", name=None, state="RUNNING")) is None
    assert gpus_in_tres("cpu=4,mem=8G,node=1,gres/gpu=2") == 2
    assert gpus_in_tres("cpu=1,mem=200M", "gres:gpu:a100:4") == 4 and gpus_in_tres("cpu=1", "") is None
