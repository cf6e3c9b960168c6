"""A real single-node Slurm cluster on loopback for the tests: munged, slurmctld, slurmd and
slurmrestd, each started in the foreground from a private temp directory and stopped by PID.

Nothing is written outside that directory: munged gets its own key, socket and seed file,
slurmctld and slurmd their own state/spool directories and PID files, and every client
command finds the cluster through ``SLURM_CONF``. slurmrestd refuses to run as root, so it
runs as the ``slurm`` system user (created by the Debian package) with ``SLURM_JWT=daemon``:
requests authenticate with ``X-SLURM-USER-NAME`` / ``X-SLURM-USER-TOKEN`` (a JWT from
``scontrol token``), checked by slurmctld with ``AuthAltTypes=auth/jwt``.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.daemons import unavailable

DAEMONS = ("munged", "slurmctld", "slurmd", "slurmrestd")
REST_USER = "slurm"
NODE = "stnode1"
CPUS = 2
GPUS = 2
REAL_MEMORY_MB = 4000
DEF_MEM_PER_CPU_MB = 200


class ClusterError(RuntimeError):
    """The cluster could not start; the message says which daemon and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_programs() -> list[str]:
    return [p for p in (*DAEMONS, "sbatch", "squeue", "scontrol", "scancel") if shutil.which(p) is None]


class SlurmCluster:
    def __init__(self, root: Path | None = None, *, min_job_age: int = 300, extra_conf: str = ""):
        self.root = Path(root or tempfile.mkdtemp(prefix="stcloud-slurm-"))
        # How long slurmctld keeps a finished job (squeue/scontrol show it) before forgetting it.
        self.min_job_age = min_job_age
        self.extra_conf = extra_conf  # more slurm.conf lines (e.g. preemption, more partitions)
        # slurmrestd runs as another user: it must be able to reach slurm.conf.
        os.chmod(self.root, 0o755)
        self.conf = self.root / "slurm.conf"
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        self.rest_port = free_port()
        self.rest_url = f"http://127.0.0.1:{self.rest_port}"
        self.munge_socket = self.root / "munge" / "munge.socket.2"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.env.pop("SLURM_JWT", None)
        self.partition = "debug"

    # ---- set-up ------------------------------------------------------------------------

    def write_config(self) -> None:
        for sub in ("munge", "state", "spool", "log", "run"):
            (self.root / sub).mkdir(mode=0o700 if sub == "munge" else 0o755, exist_ok=True)
        os.chmod(self.root / "munge", 0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        jwt = self.root / "state" / "jwt_hs256.key"
        jwt.write_bytes(secrets.token_bytes(32))
        os.chmod(jwt, 0o600)
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(f"""\
ClusterName=stcloudtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={jwt}
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'run' / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'run' / 'slurmd.pid'}
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU={DEF_MEM_PER_CPU_MB}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MinJobAge={self.min_job_age}
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
SlurmctldDebug=info
SlurmdDebug=info
GresTypes=gpu
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={CPUS} RealMemory={REAL_MEMORY_MB} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={self.partition} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=held Nodes={NODE} Default=NO MaxTime=INFINITE State=DOWN
{self.extra_conf}""")
        os.chmod(self.conf, 0o644)
        # GPUs the scheduler counts (no device files): jobs asking --gpus get them in their
        # TRES, so GPU-hour costs are real numbers; nothing here uses a GPU.
        for i in range(GPUS):
            (self.root / f"gpu{i}").touch()
        (self.root / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={NODE} Name=gpu File={self.root}/gpu[0-{GPUS - 1}]\n")
        os.chmod(self.root / "gres.conf", 0o644)

    def _start(self, name: str, cmd: list[str], *, env: dict | None = None, user: str | None = None) -> None:
        log = self.root / "log" / f"{name}.out"
        self.logs[name] = log
        preexec = None
        if user is not None:
            pw = pwd.getpwnam(user)

            def preexec():  # runs in the child before exec: drop to the user
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
        with open(log, "wb") as fh:
            self.procs[name] = subprocess.Popen(cmd, env=env or self.env, stdout=fh, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, cwd=str(self.root),
                                                preexec_fn=preexec, start_new_session=True)

    def _fail(self, name: str, why: str) -> ClusterError:
        text = ""
        for path in (self.logs.get(name), self.root / "log" / f"{name}.log"):
            if path is not None and path.exists():
                text += path.read_text(errors="replace")[-2000:]
        return ClusterError(f"{name}: {why}\n{text}")

    def _wait(self, name: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise self._fail(name, f"exited with code {proc.returncode}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not ready yet
                pass
            time.sleep(0.1)
        raise self._fail(name, f"not ready after {timeout:.0f}s")

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def start(self) -> SlurmCluster:
        missing = missing_programs()
        if missing:
            raise ClusterError(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm slurmrestd munge)")
        try:
            pwd.getpwnam(REST_USER)
        except KeyError:
            raise ClusterError(f"no {REST_USER!r} user for slurmrestd (the slurm-wlm package creates it)") from None
        if os.geteuid() != 0:
            raise ClusterError("slurmd must run as root to start jobs; run the tests as root")
        self.write_config()
        started = time.monotonic()
        try:
            self._start("munged", ["munged", "--foreground", "--force",
                                   f"--socket={self.munge_socket}",
                                   f"--key-file={self.root / 'munge' / 'munge.key'}",
                                   f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                                   f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                                   f"--log-file={self.root / 'log' / 'munged.log'}"])
            self._wait("munged", self.munge_socket.exists, 10)
            self._start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._wait("slurmctld", lambda: self.run("scontrol", "ping", check=False, timeout=5).returncode == 0
                       and "UP" in self.run("scontrol", "ping", check=False, timeout=5).stdout, 20)
            self._start("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
            self._wait("slurmd", self._node_idle, 30)
            rest_env = {**self.env, "SLURM_JWT": "daemon"}
            self._start("slurmrestd", ["slurmrestd", "-f", str(self.conf), "-a", "rest_auth/jwt", "-s", "openapi/v0.0.38",
                                       f"127.0.0.1:{self.rest_port}"], env=rest_env, user=REST_USER)
            self._wait("slurmrestd", self._rest_up, 15)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False, timeout=5).stdout
        return any(line.split()[1].startswith(("idle", "mix", "alloc")) for line in out.splitlines()
                   if line.startswith(NODE))

    def wait_idle(self, timeout: float = 30) -> None:
        """Until the node takes jobs again (after a test set it DOWN)."""
        deadline = time.monotonic() + timeout
        while not self._node_idle():
            if time.monotonic() > deadline:
                raise ClusterError(f"node {NODE} not back: " + self.run("sinfo", "-N", check=False).stdout)
            time.sleep(0.2)

    def _rest_up(self) -> bool:
        resp = requests.get(f"{self.rest_url}/openapi/v3", timeout=2)
        return resp.status_code < 500

    def token(self, user: str = "root", lifespan: int = 7200) -> str:
        out = self.run("scontrol", "token", f"username={user}", f"lifespan={lifespan}").stdout.strip()
        if not out.startswith("SLURM_JWT="):
            raise ClusterError(f"scontrol token: unexpected answer {out!r}")
        return out.split("=", 1)[1]

    # ---- tear-down ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every daemon by its PID (SIGTERM, then SIGKILL), newest first."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.procs.clear()

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def running(**kwargs) -> Iterator[SlurmCluster]:
    """A started ``SlurmCluster(**kwargs)``, stopped by PID and removed afterwards. One that
    cannot start is unavailable: skipped locally, a failure when ``CI=true``."""
    cluster = SlurmCluster(**kwargs)
    try:
        try:
            cluster.start()
        except ClusterError as exc:
            unavailable("slurm", str(exc))
        yield cluster
    finally:
        cluster.stop()
        cluster.cleanup()
