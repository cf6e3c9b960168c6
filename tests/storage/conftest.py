"""Fixtures for the S3 endpoint tests: a TLS variant of the live server (boto3 sends
aws-chunked bodies with trailing checksums only over HTTPS), moto's S3 server as the reference
implementation, and ``s3target``: the same checks against each."""
from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.conftest import free_port, serve_in_thread


def make_config(variant: str = "default", **extra) -> Config:
    """``default``: boto3's stock behaviour (CRC32 checksums; aws-chunked over HTTPS).
    ``when_required``: checksums only where the API demands them."""
    kwargs = dict(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"})
    if variant == "when_required":
        kwargs.update(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    kwargs.update(extra)
    return Config(**kwargs)


@dataclass
class Target:
    name: str
    endpoint_url: str
    verify: str | bool | None = None
    enforces_auth: bool = True
    mint: Callable[..., dict] = field(default=None)
    app: object = None

    def client(self, creds: dict | None = None, variant: str = "default", **cfg):
        creds = creds or self.mint(bucket="*")
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id=creds["access_key_id"],
                            aws_secret_access_key=creds["secret_access_key"],
                            verify=self.verify, config=make_config(variant, **cfg))


def _stcloud_mint(app):
    def mint(bucket="*", prefix="", ttl_seconds=3600, read_only=False, job_id=None):
        from stcloud.storage import credentials

        with app.app_context():
            return credentials.mint(bucket=bucket, prefix=prefix, ttl_seconds=ttl_seconds, read_only=read_only,
                                    job_id=job_id)
    return mint


def _moto_mint(bucket="*", prefix="", ttl_seconds=3600, read_only=False, job_id=None):
    return {"access_key_id": "testing", "secret_access_key": "testing"}


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_live_server(app, tls_cert):
    """Like ``live_server`` but over HTTPS; yields its base URL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tls_cert[0]), str(tls_cert[1]))
    with serve_in_thread(app, ctx) as url:
        yield url


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server on a free loopback port (the reference S3 implementation)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


TARGETS = ["stcloud", "stcloud-tls", "moto"]


@pytest.fixture(params=TARGETS)
def s3target(request) -> Target:
    name = request.param
    if name == "moto":
        url = request.getfixturevalue("moto_server")
        return Target("moto", url, enforces_auth=False, mint=_moto_mint)
    app = request.getfixturevalue("app")
    if name == "stcloud":
        url = request.getfixturevalue("live_server")
        verify = None
    else:
        url = request.getfixturevalue("tls_live_server")
        verify = str(request.getfixturevalue("tls_cert")[0])
    return Target(name, url + "/api/cloud/storage", verify=verify, mint=_stcloud_mint(app), app=app)


@pytest.fixture
def bucket_name(request) -> str:
    import uuid

    return f"t-{uuid.uuid4().hex[:12]}"
