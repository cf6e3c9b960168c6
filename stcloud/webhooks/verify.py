"""Standard Webhooks verification (what Replicate uses). Pure: no Flask, no database.

The signed content is ``<webhook-id>.<webhook-timestamp>.<raw body bytes>``, HMAC-SHA256
keyed with the base64-decoded part of the secret after ``whsec_``. ``webhook-signature``
holds one or more space-separated ``<version>,<base64>`` entries; any ``v1`` entry that
matches wins (senders list several while they rotate keys).

Traps this module exists to avoid:
- The body must be the raw bytes as received. Re-serialising parsed JSON changes spacing
  and key order, and the HMAC no longer matches.
- ``int()`` accepts ``" 12"``, ``"+12"`` and ``"1_2"``; a timestamp is digits only.
- Anything malformed raises ``VerificationError`` (answered 401), never another exception
  (which would be a 500 and make Replicate retry a forgery forever).
"""
from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TOLERANCE_SECONDS = 300
MAX_ID_LENGTH = 200  # webhook_deliveries.webhook_id is String(200)
MAX_SIGNATURES = 16  # more entries than any sender needs: refuse instead of hashing on

_TIMESTAMP_RE = re.compile(r"\d{1,12}")
_ID_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces


class VerificationError(Exception):
    """The delivery is not authentic (or not well-formed enough to tell). Answer 401.

    ``code`` is one of: missing_header, malformed_header, timestamp_too_old,
    timestamp_in_future, no_matching_signature.
    """

    def __init__(self, code: str, message: str, header: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.header = header


class SecretError(ValueError):
    """The signing secret itself is malformed (a server-side problem, not the sender's)."""


@dataclass(frozen=True)
class SignedHeaders:
    webhook_id: str
    timestamp: int
    signatures: tuple[bytes, ...]  # decoded v1 signatures


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        # plain dicts are case-sensitive; werkzeug's Headers are not
        for k, v in headers.items():
            if k.lower() == name:
                value = v
                break
    if value is None or not value.strip():
        raise VerificationError("missing_header", f"{name} header is missing", name)
    return value.strip()


@functools.lru_cache(maxsize=16)  # decoded once per secret, not per delivery
def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret. Raises SecretError."""
    if not isinstance(secret, str) or not secret:
        raise SecretError("webhook secret is empty")
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("webhook secret is not whsec_<base64>") from None
    if not key:
        raise SecretError("webhook secret decodes to an empty key")
    return key


def parse_headers(headers: Mapping[str, str], *, now: float,
                  tolerance: int = TOLERANCE_SECONDS) -> SignedHeaders:
    """Check the three headers and the timestamp window. Raises VerificationError."""
    webhook_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp")
    raw_sig = _header(headers, "webhook-signature")
    if len(webhook_id) > MAX_ID_LENGTH or not _ID_RE.fullmatch(webhook_id):
        raise VerificationError("malformed_header",
                                f"webhook-id must be 1-{MAX_ID_LENGTH} printable ASCII characters",
                                "webhook-id")
    if not _TIMESTAMP_RE.fullmatch(raw_ts):
        raise VerificationError("malformed_header",
                                "webhook-timestamp must be integer Unix seconds", "webhook-timestamp")
    ts = int(raw_ts)
    skew = now - ts
    if skew > tolerance:
        raise VerificationError("timestamp_too_old",
                                f"webhook-timestamp is {int(skew)} s older than this server's clock "
                                f"(tolerance {tolerance} s)", "webhook-timestamp")
    if -skew > tolerance:
        raise VerificationError("timestamp_in_future",
                                f"webhook-timestamp is {int(-skew)} s ahead of this server's clock "
                                f"(tolerance {tolerance} s)", "webhook-timestamp")
    return SignedHeaders(webhook_id, ts, _parse_signatures(raw_sig))


def _parse_signatures(raw: str) -> tuple[bytes, ...]:
    entries = raw.split()
    if len(entries) > MAX_SIGNATURES:
        raise VerificationError("malformed_header",
                                f"webhook-signature has more than {MAX_SIGNATURES} entries",
                                "webhook-signature")
    found: list[bytes] = []
    well_formed = 0
    for entry in entries:
        version, sep, b64 = entry.partition(",")
        if not sep or not version or not b64:
            continue
        well_formed += 1
        if version != "v1":
            continue  # other schemes (v1a = ed25519) are not ours to check; another entry may be v1
        try:
            found.append(base64.b64decode(b64, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not well_formed:
        raise VerificationError("malformed_header",
                                "webhook-signature must be space-separated 'v1,<base64>' entries",
                                "webhook-signature")
    return tuple(found)


def sign(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of ``body`` (used for test deliveries and tests)."""
    mac = hmac.digest(secret_key(secret), _signed_content(webhook_id, timestamp, body), "sha256")
    return "v1," + base64.b64encode(mac).decode("ascii")


def _signed_content(webhook_id: str, timestamp: int | str, body: bytes) -> bytes:
    return f"{webhook_id}.{timestamp}.".encode("ascii") + body


def signature_matches(secret: str, signed: SignedHeaders, body: bytes) -> bool:
    """True when any v1 signature in ``signed`` is the HMAC of ``body``. Raises SecretError."""
    # hmac.digest: OpenSSL's one-shot HMAC, no Python HMAC object per delivery
    expected = hmac.digest(secret_key(secret), _signed_content(signed.webhook_id, signed.timestamp, body), "sha256")
    ok = False
    for candidate in signed.signatures:
        # no early exit: the time taken does not tell which entry matched
        ok |= hmac.compare_digest(candidate, expected)
    return ok


def verify(secrets: str | Iterable[str], headers: Mapping[str, str], body: bytes, *, now: float,
           tolerance: int = TOLERANCE_SECONDS) -> SignedHeaders:
    """Verify a delivery against one secret or several. Returns the parsed headers.

    Raises VerificationError (not authentic / malformed) or SecretError (bad secret).
    """
    signed = parse_headers(headers, now=now, tolerance=tolerance)
    for secret in ([secrets] if isinstance(secrets, str) else list(secrets)):
        if signature_matches(secret, signed, body):
            return signed
    raise VerificationError("no_matching_signature", "webhook-signature does not match the body",
                            "webhook-signature")
