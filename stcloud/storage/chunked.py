"""``aws-chunked`` request bodies and the checksums S3 clients send. No Flask, no db.

Frame (one per chunk, sizes in hex)::

    <size>[;chunk-signature=<64 hex>]\\r\\n<size bytes>\\r\\n
    ... 0[;chunk-signature=<sig>]\\r\\n
    [<trailer-name>:<value>\\r\\n ... [x-amz-trailer-signature:<sig>\\r\\n]]\\r\\n

Signed variants chain each chunk's signature to the previous one (the first to the seed
signature of the request) and the trailer to the last chunk's. The decoder hands data on as
it arrives: callers write it to a temp file and only publish it after ``finish()`` — a bad
signature or checksum late in the body therefore never becomes visible.

boto3 >= 1.36 sends ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` with a CRC32 trailer over HTTPS (over
plain HTTP it signs the payload hash instead and sends the checksum as a header).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib

from stcloud.storage import sigv4
from stcloud.storage.errors import S3Error

MAX_LINE = 4096
READ_SIZE = 1024 * 1024


# ---- checksums ----------------------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


try:  # the C implementation when installed (a declared dependency); pure Python otherwise
    import crc32c as _crc32c_mod

    def crc32c_update(data: bytes, crc: int = 0) -> int:
        return _crc32c_mod.crc32c(data, crc)
except ImportError:  # pragma: no cover - exercised only without the package
    _TABLE = _crc32c_table()

    def crc32c_update(data: bytes, crc: int = 0) -> int:
        crc ^= 0xFFFFFFFF
        table = _TABLE
        for b in data:
            crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


class _Crc:
    def __init__(self, fn):
        self._fn = fn
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._fn(data, self._value)

    def digest(self) -> bytes:
        return (self._value & 0xFFFFFFFF).to_bytes(4, "big")


def new_checksum(algorithm: str):
    """A hasher with ``update``/``digest`` for an S3 checksum algorithm (lower case), or None
    when we cannot compute it (e.g. crc64nvme): such values are stored, not verified."""
    if algorithm == "crc32":
        return _Crc(zlib.crc32)
    if algorithm == "crc32c":
        return _Crc(crc32c_update)
    if algorithm == "sha1":
        return hashlib.sha1()
    if algorithm == "sha256":
        return hashlib.sha256()
    return None


CHECKSUM_ALGORITHMS = ("crc32", "crc32c", "sha1", "sha256", "crc64nvme")
_DIGEST_SIZES = {"crc32": 4, "crc32c": 4, "sha1": 20, "sha256": 32, "crc64nvme": 8}


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def validate_checksum_value(algorithm: str, value: str) -> str:
    """Raises InvalidRequest unless ``value`` is base64 of the right size for ``algorithm``."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _DIGEST_SIZES.get(algorithm, -1):
        raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is invalid.")
    return value


# ---- aws-chunked decoder ------------------------------------------------------------------

class AwsChunkedReader:
    """File-like ``read(n)`` over a decoded aws-chunked body.

    ``signing``: the request's SigningContext when chunks are signed (STREAMING-AWS4-HMAC-SHA256-
    PAYLOAD[-TRAILER]); ``trailer``: whether a trailer section is announced (x-amz-trailer).
    After EOF, ``trailers`` holds the trailing headers (lower-case names).
    """

    def __init__(self, raw, *, signing: sigv4.SigningContext | None = None, trailer: bool = False,
                 trailer_signed: bool = False, decoded_length: int | None = None):
        self._raw = raw
        self._buf = bytearray()
        self._eof_raw = False
        self._signing = signing
        self._previous = signing.seed_signature if signing else ""
        self._trailer = trailer
        self._trailer_signed = trailer_signed
        self._decoded_length = decoded_length
        self._remaining = 0  # bytes left in the current chunk
        self._chunk_hash = None
        self._chunk_sig = ""
        self._done = False
        self.total = 0
        self.trailers: dict[str, str] = {}

    # -- raw input helpers
    def _fill(self, want: int) -> bool:
        while len(self._buf) < want and not self._eof_raw:
            data = self._raw.read(max(READ_SIZE, want - len(self._buf)))
            if not data:
                self._eof_raw = True
                break
            self._buf += data
        return len(self._buf) >= want

    def _readline(self) -> bytes | None:
        """One CRLF-terminated line without the CRLF; None at a clean EOF."""
        start = 0
        while True:
            idx = self._buf.find(b"\r\n", start)
            if idx >= 0:
                line = bytes(self._buf[:idx])
                del self._buf[:idx + 2]
                return line
            if len(self._buf) > MAX_LINE:
                raise S3Error("InvalidRequest", "aws-chunked: a chunk header line is too long")
            start = max(0, len(self._buf) - 1)
            if not self._fill(len(self._buf) + 1):
                if self._buf:
                    raise S3Error("IncompleteBody", "aws-chunked: the body ended inside a chunk header")
                return None

    def _take(self, n: int) -> bytes:
        if not self._buf and not self._eof_raw and n >= 64 * 1024:
            data = self._raw.read(n)  # large remainder: read straight through, no copy
            if not data:
                self._eof_raw = True
            return data
        if not self._buf:
            self._fill(1)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    # -- chunk framing
    def _start_chunk(self) -> None:
        line = self._readline()
        if line is None:
            raise S3Error("IncompleteBody", "aws-chunked: the body ended before the final chunk")
        size_part, _, ext = line.partition(b";")
        try:
            size = int(size_part.strip(), 16)
        except ValueError:
            raise S3Error("InvalidRequest", "aws-chunked: invalid chunk size") from None
        if size < 0:
            raise S3Error("InvalidRequest", "aws-chunked: invalid chunk size")
        sig = ""
        if ext:
            name, _, value = ext.partition(b"=")
            if name.strip() == b"chunk-signature":
                sig = value.strip().decode("ascii", "replace")
        if self._signing is not None:
            if not sig:
                raise S3Error("SignatureDoesNotMatch", "aws-chunked: a chunk has no chunk-signature")
            self._chunk_hash = hashlib.sha256()
        self._chunk_sig = sig
        self._remaining = size
        if size == 0:
            self._end_chunk(final=True)
            self._read_trailers()
            self._done = True
            if self._decoded_length is not None and self.total != self._decoded_length:
                raise S3Error("IncompleteBody", f"x-amz-decoded-content-length is {self._decoded_length} "
                                                f"but the chunks held {self.total} bytes")

    def _end_chunk(self, final: bool = False) -> None:
        if self._signing is not None:
            digest = self._chunk_hash.hexdigest() if self._chunk_hash else sigv4.EMPTY_SHA256
            expected = sigv4.chunk_signature(self._signing, self._previous, digest)
            if not sigv4.signatures_equal(expected, self._chunk_sig):
                raise S3Error("SignatureDoesNotMatch", "The chunk signature we calculated does not match "
                                                       "the chunk-signature you provided.")
            self._previous = expected
        if not final:
            if not self._fill(2) or bytes(self._buf[:2]) != b"\r\n":
                raise S3Error("IncompleteBody", "aws-chunked: chunk data is not followed by CRLF")
            del self._buf[:2]

    def _read_trailers(self) -> None:
        lines: list[tuple[str, str]] = []
        signature = None
        while True:
            line = self._readline()
            if line is None or line == b"":
                break
            name, sep, value = line.partition(b":")
            if not sep:
                raise S3Error("InvalidRequest", "aws-chunked: malformed trailer line")
            key = name.strip().lower().decode("ascii", "replace")
            val = value.strip().decode("ascii", "replace")
            if key == "x-amz-trailer-signature":
                signature = val
            else:
                lines.append((key, val))
        if self._trailer_signed and self._signing is not None:
            canonical = "".join(f"{k}:{v}\n" for k, v in sorted(lines)).encode()
            expected = sigv4.trailer_signature(self._signing, self._previous, canonical)
            if signature is None or not sigv4.signatures_equal(expected, signature):
                raise S3Error("SignatureDoesNotMatch", "The trailer signature we calculated does not match "
                                                       "the x-amz-trailer-signature you provided.")
        self.trailers = dict(lines)

    # -- public
    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = READ_SIZE
        while not self._done:
            if self._remaining == 0:
                self._start_chunk()
                continue
            data = self._take(min(n, self._remaining))
            if not data:
                raise S3Error("IncompleteBody", "aws-chunked: the body ended inside a chunk")
            self._remaining -= len(data)
            self.total += len(data)
            if self._chunk_hash is not None:
                self._chunk_hash.update(data)
            if self._remaining == 0:
                self._end_chunk()
            return data
        return b""


class LengthCheckedReader:
    """Plain bodies: reads at most ``length`` bytes and reports a short body as IncompleteBody."""

    def __init__(self, raw, length: int | None):
        self._raw = raw
        self._left = length
        self.total = 0
        self.trailers: dict[str, str] = {}
        if hasattr(raw, "readinto"):
            self.readinto = self._readinto

    def _readinto(self, buf) -> int:
        view = memoryview(buf)
        if self._left is not None:
            if self._left <= 0:
                return 0
            view = view[:self._left]
        n = self._raw.readinto(view) or 0
        if self._left is not None:
            if n == 0:
                raise S3Error("IncompleteBody")
            self._left -= n
        self.total += n
        return n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = READ_SIZE
        if self._left is not None:
            if self._left <= 0:
                return b""
            n = min(n, self._left)
        data = self._raw.read(n)
        if self._left is not None:
            if not data:
                raise S3Error("IncompleteBody")
            self._left -= len(data)
        self.total += len(data)
        return data


def digests_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
