"""A real single-node Slurm cluster (munged, slurmctld, slurmd, slurmrestd) for the session,
started from nothing in a temp directory on loopback and stopped by PID at the end."""
from __future__ import annotations

import pytest

from tests.slurm.cluster import running


@pytest.fixture(scope="session")
def slurm_cluster():
    with running() as cluster:
        yield cluster


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch):
    """Slurm client commands in this test find the cluster (``SLURM_CONF``)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster
