"""A real OpenLDAP ``slapd`` on loopback with a tiny directory, for the LDAP sign-in tests.

Debian's slapd: modules in /usr/lib/ldap, schema in /etc/ldap/schema. The server runs as a
plain process from a generated slapd.conf with an mdb database in a temp dir; the entries are
loaded with ldapadd once it listens (so the memberof overlay fills ``memberOf``)."""
from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.accounts.ext.tlscerts import TlsFiles, make_tls_files

SLAPD = "/usr/sbin/slapd"
LDAPADD = "/usr/bin/ldapadd"
MODULES = "/usr/lib/ldap"
SCHEMA = "/etc/ldap/schema"
BASE = "dc=stcloud,dc=test"


class SlapdUnavailable(RuntimeError):
    pass


@dataclass
class Directory:
    url: str
    ldaps_url: str
    base: str
    admin_dn: str
    admin_password: str
    reader_dn: str
    reader_password: str
    tls: TlsFiles
    passwords: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    workdir: Path | None = None

    @property
    def people(self) -> str:
        return f"ou=people,{self.base}"

    @property
    def groups(self) -> str:
        return f"ou=groups,{self.base}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slapd_conf(workdir: Path, admin_password: str, tls: TlsFiles) -> str:
    return f"""\
include {SCHEMA}/core.schema
include {SCHEMA}/cosine.schema
include {SCHEMA}/inetorgperson.schema
include {SCHEMA}/nis.schema
modulepath {MODULES}
moduleload back_mdb
moduleload memberof
# like Active Directory and many others: a DN with an empty password is an anonymous bind
allow bind_anon_dn
pidfile {workdir}/slapd.pid
argsfile {workdir}/slapd.args
TLSCACertificateFile {tls.ca_cert}
TLSCertificateFile {tls.cert}
TLSCertificateKeyFile {tls.key}

database mdb
maxsize 33554432
suffix "{BASE}"
rootdn "cn=admin,{BASE}"
rootpw {ssha(admin_password)}
directory {workdir}/db
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint true
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
"""


def _ldif(d: Directory, users: dict[str, dict]) -> str:
    out = [f"dn: {d.base}\nobjectClass: dcObject\nobjectClass: organization\no: stcloud test\ndc: stcloud\n",
           f"dn: {d.people}\nobjectClass: organizationalUnit\nou: people\n",
           f"dn: {d.groups}\nobjectClass: organizationalUnit\nou: groups\n",
           f"dn: ou=services,{d.base}\nobjectClass: organizationalUnit\nou: services\n",
           f"dn: {d.reader_dn}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: reader\n"
           f"sn: reader\nuserPassword: {ssha(d.reader_password)}\n"]
    groups: dict[str, list[str]] = {}
    for uid, u in users.items():
        dn = f"uid={uid},{d.people}"
        out.append(f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {u['cn']}\nsn: {u['sn']}\n"
                   f"displayName: {u['cn']}\nmail: {uid}@stcloud.test\nuserPassword: {ssha(u['password'])}\n")
        for g in u["groups"]:
            groups.setdefault(g, []).append(dn)
    for g, members in groups.items():
        out.append(f"dn: cn={g},{d.groups}\nobjectClass: groupOfNames\ncn: {g}\n"
                   + "".join(f"member: {m}\n" for m in members))
    return "\n".join(out)


USERS = {
    "alice": {"cn": "Alice Admin", "sn": "Admin", "groups": ["stcloud-admins"]},
    "bob": {"cn": "Bob Member", "sn": "Member", "groups": ["stcloud-members"]},
    "carol": {"cn": "Carol Nogroup", "sn": "Nogroup", "groups": []},
    # a name full of filter/DN metacharacters: must be found exactly, never as a wildcard
    "dave(x)": {"cn": "Dave Paren", "sn": "Paren", "groups": ["stcloud-members"]},
}


def start(workdir: Path, timeout: float = 20) -> Directory:
    """Start slapd under ``workdir`` and load the directory; raise SlapdUnavailable."""
    for exe in (SLAPD, LDAPADD):
        if not shutil.which(exe):
            raise SlapdUnavailable(f"{exe} not found (apt-get install -y slapd ldap-utils)")
    if not Path(MODULES, "back_mdb.so").exists():
        raise SlapdUnavailable(f"{MODULES}/back_mdb.so not found")
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    port, ldaps_port = _free_port(), _free_port()
    tls = make_tls_files(workdir)
    d = Directory(url=f"ldap://127.0.0.1:{port}", ldaps_url=f"ldaps://127.0.0.1:{ldaps_port}", base=BASE,
                  admin_dn=f"cn=admin,{BASE}", admin_password=secrets.token_urlsafe(12),
                  reader_dn=f"cn=reader,ou=services,{BASE}", reader_password=secrets.token_urlsafe(12),
                  tls=tls, workdir=workdir)
    users = {uid: {**u, "password": f"pw-{uid}-" + secrets.token_urlsafe(6)} for uid, u in USERS.items()}
    d.passwords = {uid: u["password"] for uid, u in users.items()}
    conf = workdir / "slapd.conf"
    conf.write_text(_slapd_conf(workdir, d.admin_password, tls))
    log = open(workdir / "slapd.log", "wb")
    d.proc = subprocess.Popen([SLAPD, "-h", f"{d.url} {d.ldaps_url}", "-f", str(conf), "-d", "0"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(d, port, timeout)
        ldif = workdir / "directory.ldif"
        ldif.write_text(_ldif(d, users))
        r = subprocess.run([LDAPADD, "-x", "-H", d.url, "-D", d.admin_dn, "-w", d.admin_password,
                            "-f", str(ldif)], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise SlapdUnavailable(f"ldapadd failed: {r.stderr.strip()[-500:]}")
    except BaseException:
        d.stop()
        raise
    return d


def _wait_listening(d: Directory, port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if d.proc.poll() is not None:
            log = (d.workdir / "slapd.log").read_text(errors="replace")[-1500:]
            raise SlapdUnavailable(f"slapd exited with {d.proc.returncode}: {log}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SlapdUnavailable(f"slapd did not listen on 127.0.0.1:{port} within {timeout}s")
