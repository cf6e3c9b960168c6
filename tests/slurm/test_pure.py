"""The Slurm adapter and its helpers import no Flask and no database (STYLE.md), and the
state map covers Slurm's states."""
from __future__ import annotations

import pytest

from stcloud.providers.base import CloudJobStatus
from stcloud.providers.slurm_map import STATE_MAP, SlurmJob, base_state, error_text, gpus_in_tres
from stcloud.providers.slurm_options import OptionError, rest_properties
from tests.test_architecture import FORBIDDEN_IN_ADAPTERS, PKG, imports_of

PURE = ["providers/slurm.py", "providers/slurm_cli.py", "providers/slurm_rest.py", "providers/slurm_map.py",
        "providers/slurm_options.py",
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


def test_extra_sbatch_options_as_slurmrestd_properties():
    props = rest_properties(["--constraint=a100&nvlink", "--exclusive", "--nice=-5", "--mem-per-cpu=2G",
                             "--time-min=1-02:30", "--hold", "--kill-on-invalid-dep=yes", "--delay-boot=90"])
    assert props == {"constraints": "a100&nvlink", "exclusive": "true", "nice": -5, "memory_per_cpu": 2048,
                     "time_minimum": 26 * 60 + 30, "hold": True, "kill_on_invalid_dependency": True,
                     "delay_boot": 90}
    assert rest_properties(["--exclusive=user", "--time-min=1:30"]) == {"exclusive": "user", "time_minimum": 2}
    assert rest_properties([]) == {} and rest_properties(None) == {}
    for bad, needle in ((["--nodelist=n1"], "--nodelist has no slurmrestd"), (["--hold=1"], "takes no value"),
                        (["--nice"], "needs a value"), (["--nice=high"], "not a valid value"),
                        (["--exclusive=all"], "--exclusive=user"), (["--mem-per-cpu=lots"], "not a valid")):
        with pytest.raises(OptionError, match=needle):
            rest_properties(bad)
