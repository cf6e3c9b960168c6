"""Hand-built S3 requests for what boto3 does not send on its own: signed aws-chunked bodies,
trailers with CRC32C/SHA1/SHA256, raw paths with ``..``. The seed signature comes from
botocore's signer; chunk and trailer signatures are computed here from the AWS spec — so these
tests do not use the server's own signing code."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ssl
import zlib
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

EMPTY = hashlib.sha256(b"").hexdigest()


class _RawPathSigner(SigV4Auth):
    """botocore's SigV4 with S3's rules: the path as given, and our X-Amz-Content-SHA256 kept
    (botocore's S3 signer would replace it with its own payload hash)."""

    def _normalize_url_path(self, path):
        return path


def sign(method: str, url: str, creds: dict, headers: dict, payload_hash: str) -> dict:
    """Headers with SigV4 (botocore) for ``url`` as given (no path normalisation)."""
    req = AWSRequest(method=method, url=url, headers={**headers, "X-Amz-Content-SHA256": payload_hash})
    _RawPathSigner(Credentials(creds["access_key_id"], creds["secret_access_key"]), "s3", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def _key(secret: str, date: str) -> bytes:
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in ("us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def checksum(algorithm: str, data: bytes) -> str:
    if algorithm == "crc32":
        raw = (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")
    elif algorithm == "crc32c":
        import crc32c

        raw = crc32c.crc32c(data).to_bytes(4, "big")
    else:
        raw = hashlib.new(algorithm, data).digest()
    return base64.b64encode(raw).decode()


def aws_chunked(chunks: list[bytes], *, signed_headers: dict | None = None, creds: dict | None = None,
                trailer: tuple[str, str] | None = None, sign_trailer: bool = False,
                corrupt_chunk: int | None = None) -> bytes:
    """The aws-chunked body for ``chunks`` (a final empty chunk is added). Signed when
    ``signed_headers`` (the request headers holding the seed signature) are given."""
    prev = None
    key = date = scope = None
    if signed_headers is not None:
        auth = signed_headers["Authorization"]
        prev = auth.rsplit("Signature=", 1)[1].strip()
        amz_date = signed_headers["X-Amz-Date"]
        date = amz_date[:8]
        scope = f"{date}/us-east-1/s3/aws4_request"
        key = _key(creds["secret_access_key"], date)
    out = b""
    for i, data in enumerate(list(chunks) + [b""]):
        line = f"{len(data):x}"
        if prev is not None:
            sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY,
                             hashlib.sha256(data).hexdigest()])
            sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
            if corrupt_chunk == i:
                sig = "0" * 64
            line += f";chunk-signature={sig}"
            prev = sig
        out += line.encode() + b"\r\n"
        if data:
            out += data + b"\r\n"
    if trailer is not None:
        name, value = trailer
        out += f"{name}:{value}\r\n".encode()
        if sign_trailer:
            canonical = f"{name}:{value}\n".encode()
            sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev, hashlib.sha256(canonical).hexdigest()])
            out += f"x-amz-trailer-signature:{hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()}\r\n".encode()
    out += b"\r\n"
    return out


def send(method: str, url: str, headers: dict, body=None, *, chunked_transfer: bool = False,
         verify: str | None = None, timeout: float = 20) -> tuple[int, dict, bytes]:
    """Send exactly this request (raw path, raw body) with http.client."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=verify) if verify else ssl.create_default_context()
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        if chunked_transfer:
            pieces = [body[i:i + 7000] for i in range(0, len(body), 7000)]
            conn.request(method, target, body=iter(pieces), headers=headers, encode_chunked=True)
        else:
            conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
