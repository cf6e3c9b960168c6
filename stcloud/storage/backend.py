"""Filesystem object store behind the S3 endpoint. No Flask, no db.

Layout under ``root`` (``STCLOUD_HOME/cloud_outputs``)::

    <bucket>/<key>                      object data — the key's own path, so files are where a
                                        person expects them
    .stcloud/buckets/<bucket>.json      bucket record (creation time)
    .stcloud/meta/<bucket>/<h2>/<h>.json metadata sidecar per key (h = sha256 of the key), kept
                                        outside the object namespace so no key can collide with it
    .stcloud/tmp/                       uploads in progress (same filesystem: rename is atomic)
    .stcloud/uploads/<upload id>/       multipart staging: upload.json, <n>.part, <n>.json

Bucket names cannot start with ``.``, so ``.stcloud`` is never a bucket.

Keys map to paths segment by segment. Segments a filesystem cannot hold as names — ``""``
(``a//b``, ``dir/``), ``.``, ``..``, anything with NUL, anything starting with the escape ``.~``
— are stored as ``.~<hex of the UTF-8>``. So ``../x`` is the file ``.~2e2e/x`` *inside* the
bucket, and every resolved path is still checked to stay under the bucket directory.

Writes stream to a temp file (hashing as they go), are verified, then renamed into place: a
reader never sees a partial object, and an open download keeps reading the version it
opened. The sidecar records the data file's inode; a sidecar that does not match the file
(a crash between the two renames, or a racing writer in another process) is ignored and
metadata is derived from the file itself.

Limit of the filesystem mapping: ``a`` and ``a/b`` cannot both exist (ParentIsObject /
ObjectExistsAsDirectory, as MinIO's FS mode).
"""
from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from stcloud.storage import chunked
from stcloud.storage.errors import S3Error

KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
MAX_PUT_SIZE = 5 * GiB
MAX_PART_SIZE = 5 * GiB
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
MAX_USER_METADATA = 2 * KiB
COPY_CHUNK = 1 * MiB
ESC = ".~"
SENTINEL = "\U0010ffff"  # sorts after every character a key can hold
DEFAULT_CONTENT_TYPE = "binary/octet-stream"

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
RESERVED_BUCKETS = {"credentials"}  # /api/cloud/storage/credentials is the JSON API


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def _from_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# ---- names --------------------------------------------------------------------------------

def valid_bucket_name(name: str) -> bool:
    return bool(_BUCKET_RE.fullmatch(name or "")) and ".." not in name and not _IP_RE.fullmatch(name) \
        and ".-" not in name and "-." not in name


def check_new_bucket_name(name: str) -> None:
    """Raises InvalidBucketName (S3 rules, plus names this endpoint reserves)."""
    if not valid_bucket_name(name):
        raise S3Error("InvalidBucketName", "Bucket names are 3-63 characters of lower-case letters, digits, "
                                           "dots and hyphens, starting and ending with a letter or digit.",
                      BucketName=name)
    if name in RESERVED_BUCKETS:
        raise S3Error("InvalidBucketName", f"The bucket name {name!r} is reserved by this endpoint.",
                      BucketName=name)


def encode_segment(seg: str) -> str:
    if seg in ("", ".", "..") or seg.startswith(ESC) or "\x00" in seg:
        return ESC + seg.encode("utf-8").hex()
    return seg


def decode_segment(name: str) -> str | None:
    if name.startswith(ESC):
        try:
            return bytes.fromhex(name[len(ESC):]).decode("utf-8")
        except ValueError:
            return None  # not ours (placed by hand): not listed
    return name


def check_key(key: str) -> None:
    if not key:
        raise S3Error("InvalidArgument", "The object key must not be empty.")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise S3Error("InvalidArgument", "The object key is not valid UTF-8.") from None
    if len(raw) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=str(len(raw)), MaxSizeAllowed=str(MAX_KEY_BYTES))
    for seg in key.split("/"):
        if len(encode_segment(seg).encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise S3Error("KeyTooLongError", "A path segment of the key is longer than the 255 bytes a file "
                                             "name can hold in this store.")


@dataclass(frozen=True)
class BucketInfo:
    name: str
    created: datetime


@dataclass
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str  # quoted, as S3 sends it
    last_modified: datetime
    content_type: str = DEFAULT_CONTENT_TYPE
    headers: dict = field(default_factory=dict)  # content-encoding, -disposition, -language, cache-control, expires
    metadata: dict = field(default_factory=dict)  # x-amz-meta-* without the prefix
    checksums: dict = field(default_factory=dict)  # algorithm -> base64 (composite values end in -N)
    sha256: str | None = None
    parts: int | None = None
    part_sizes: list | None = None  # sizes of a multipart object's parts, in order
    path: Path | None = None


@dataclass
class PartInfo:
    number: int
    size: int
    etag: str
    last_modified: datetime
    checksums: dict = field(default_factory=dict)


@dataclass
class UploadInfo:
    upload_id: str
    bucket: str
    key: str
    initiated: datetime
    meta: dict


@dataclass
class ListResult:
    contents: list[ObjectInfo]
    common_prefixes: list[str]
    truncated: bool
    next_marker: str | None


@dataclass
class Expectations:
    """What the client claimed about a body; verified before the object becomes visible."""

    sha256_hex: str | None = None  # signed payload hash (x-amz-content-sha256)
    md5_b64: str | None = None  # Content-MD5
    checksums: dict = field(default_factory=dict)  # algorithm -> base64, from headers
    trailer_algorithm: str | None = None  # announced by x-amz-trailer
    extra_algorithms: tuple = ()  # computed and stored, nothing to compare (x-amz-checksum-algorithm)
    max_size: int = MAX_PUT_SIZE


@dataclass
class Received:
    path: Path
    size: int
    md5_hex: str
    sha256_hex: str | None
    checksums: dict


class Backend:
    def __init__(self, root: str | os.PathLike, *, max_put_size: int = MAX_PUT_SIZE):
        self.root = Path(root).resolve()
        self.sys = self.root / ".stcloud"
        self.tmp = self.sys / "tmp"
        self.uploads = self.sys / "uploads"
        self.meta_root = self.sys / "meta"
        self.bucket_records = self.sys / "buckets"
        self.completed = self.sys / "completed"  # recently completed uploads (a repeated Complete succeeds)
        for d in (self.tmp, self.uploads, self.meta_root, self.bucket_records, self.completed):
            d.mkdir(parents=True, exist_ok=True)
        self.max_put_size = max_put_size
        self._locks = [threading.Lock() for _ in range(64)]

    # ---- paths
    def _bucket_dir(self, bucket: str) -> Path:
        if not valid_bucket_name(bucket):
            raise S3Error("NoSuchBucket", BucketName=bucket)
        return self.root / bucket

    def _require_bucket(self, bucket: str) -> Path:
        d = self._bucket_dir(bucket)
        if not d.is_dir():
            raise S3Error("NoSuchBucket", BucketName=bucket)
        return d

    def object_path(self, bucket: str, key: str) -> Path:
        """The data path of ``key``; raises if it would leave the bucket directory."""
        check_key(key)
        base = self._bucket_dir(bucket)
        path = base.joinpath(*[encode_segment(s) for s in key.split("/")])
        # Defence in depth: encoding already makes ".." and "/" harmless; a symlink placed
        # inside the store must not lead out of it either.
        resolved = Path(os.path.realpath(path))
        base_real = Path(os.path.realpath(base))
        if base_real not in resolved.parents:
            raise S3Error("AccessDenied", "The key resolves outside its bucket.", Key=key)
        return path

    def _meta_path(self, bucket: str, key: str) -> Path:
        h = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.meta_root / bucket / h[:2] / f"{h}.json"

    def _lock(self, bucket: str, key: str) -> threading.Lock:
        return self._locks[hash((bucket, key)) % len(self._locks)]

    # ---- buckets
    def list_buckets(self) -> list[BucketInfo]:
        out = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False) and valid_bucket_name(entry.name):
                out.append(BucketInfo(entry.name, self._bucket_created(entry.name, entry)))
        return out

    def _bucket_created(self, name: str, entry=None) -> datetime:
        rec = self.bucket_records / f"{name}.json"
        try:
            created = _from_iso(json.loads(rec.read_text()).get("created"))
            if created:
                return created
        except (OSError, ValueError):
            pass
        st = entry.stat(follow_symlinks=False) if entry is not None else (self.root / name).stat()
        return datetime.fromtimestamp(st.st_mtime, UTC)

    def bucket_exists(self, bucket: str) -> bool:
        return valid_bucket_name(bucket) and (self.root / bucket).is_dir()

    def bucket_info(self, bucket: str) -> BucketInfo:
        self._require_bucket(bucket)
        return BucketInfo(bucket, self._bucket_created(bucket))

    def create_bucket(self, bucket: str, *, exist_ok: bool = False) -> BucketInfo:
        """Raises InvalidBucketName, BucketAlreadyOwnedByYou (unless ``exist_ok``)."""
        check_new_bucket_name(bucket)
        d = self.root / bucket
        try:
            d.mkdir()
        except FileExistsError:
            if exist_ok:
                return self.bucket_info(bucket)
            raise S3Error("BucketAlreadyOwnedByYou", BucketName=bucket) from None
        _write_json(self.bucket_records / f"{bucket}.json", {"created": _iso(utcnow())}, self.tmp)
        return BucketInfo(bucket, self._bucket_created(bucket))

    def delete_bucket(self, bucket: str) -> None:
        """Raises NoSuchBucket, BucketNotEmpty."""
        d = self._require_bucket(bucket)
        if any(True for _ in self.iter_keys(bucket)):
            raise S3Error("BucketNotEmpty", BucketName=bucket)
        _remove_empty_tree(d)
        try:
            d.rmdir()
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise S3Error("BucketNotEmpty", BucketName=bucket) from None
            raise
        shutil.rmtree(self.meta_root / bucket, ignore_errors=True)
        (self.bucket_records / f"{bucket}.json").unlink(missing_ok=True)
        for up in self.list_uploads(bucket):
            shutil.rmtree(self.uploads / up.upload_id, ignore_errors=True)

    # ---- reading
    def _meta_for(self, bucket: str, key: str, path: Path, st: os.stat_result) -> ObjectInfo:
        meta = None
        try:
            meta = json.loads(self._meta_path(bucket, key).read_text())
        except (OSError, ValueError):
            meta = None
        if meta and (meta.get("ino") != st.st_ino or meta.get("size") != st.st_size):
            meta = None  # a sidecar of another version: trust the file, not the sidecar
        mtime = datetime.fromtimestamp(st.st_mtime, UTC)
        if not meta:
            synthetic = hashlib.md5(f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}".encode()).hexdigest()
            return ObjectInfo(bucket, key, st.st_size, f'"{synthetic}"', mtime, path=path)
        return ObjectInfo(
            bucket, key, st.st_size, meta.get("etag") or '""', _from_iso(meta.get("last_modified")) or mtime,
            content_type=meta.get("content_type") or DEFAULT_CONTENT_TYPE,
            headers=dict(meta.get("headers") or {}), metadata=dict(meta.get("metadata") or {}),
            checksums=dict(meta.get("checksums") or {}), sha256=meta.get("sha256"), parts=meta.get("parts"),
            part_sizes=meta.get("part_sizes"), path=path)

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """Raises NoSuchBucket, NoSuchKey."""
        self._require_bucket(bucket)
        path = self.object_path(bucket, key)
        try:
            st = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise S3Error("NoSuchKey", Key=key) from None
        if not _is_regular(st):
            raise S3Error("NoSuchKey", Key=key)
        return self._meta_for(bucket, key, path, st)

    def open(self, bucket: str, key: str):
        """(ObjectInfo, open binary file) of one consistent version. Raises NoSuchBucket, NoSuchKey."""
        self._require_bucket(bucket)
        path = self.object_path(bucket, key)
        try:
            fh = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise S3Error("NoSuchKey", Key=key) from None
        try:
            st = os.fstat(fh.fileno())
            if not _is_regular(st):
                raise S3Error("NoSuchKey", Key=key)
            return self._meta_for(bucket, key, path, st), fh
        except BaseException:
            fh.close()
            raise

    # ---- listing
    def iter_keys(self, bucket: str, prefix: str = "", after: str = "") -> Iterator[tuple[str, Path, os.stat_result]]:
        """Keys under ``prefix`` greater than ``after``, in S3 order (UTF-8 byte order; Python
        compares code points, which orders the same)."""
        walker = _Walker(self._require_bucket(bucket), prefix, after)
        return iter(walker)

    def list_objects(self, bucket: str, *, prefix: str = "", delimiter: str = "", after: str = "",
                     max_keys: int = 1000) -> ListResult:
        d = self._require_bucket(bucket)
        if delimiter and after.startswith(prefix):
            idx = after.find(delimiter, len(prefix))
            if idx >= 0:  # a marker inside a rolled-up prefix: that whole prefix was listed
                after = max(after, after[:idx + len(delimiter)] + SENTINEL)
        walker = _Walker(d, prefix, after)
        contents: list[ObjectInfo] = []
        prefixes: list[str] = []
        truncated = False
        last = None
        if max_keys <= 0:
            return ListResult([], [], False, None)
        for key, path, st in walker:
            cp = None
            if delimiter:
                idx = key.find(delimiter, len(prefix))
                if idx >= 0:
                    cp = key[:idx + len(delimiter)]
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            if cp is not None:
                prefixes.append(cp)
                last = cp
                walker.after = cp + SENTINEL  # skip the rest of this prefix (whole subtrees)
                continue
            contents.append(self._meta_for(bucket, key, path, st))
            last = key
        return ListResult(contents, prefixes, truncated, last if truncated else None)

    def has_objects_under(self, bucket: str, prefix: str) -> bool:
        return any(True for _ in self.iter_keys(bucket, prefix))

    # ---- writing
    def receive(self, reader, expect: Expectations, *, directory: Path | None = None,
                want_sha256: bool = True, durable: bool = True) -> Received:
        """Stream ``reader`` into a temp file, hashing; verify ``expect``. The caller renames
        or deletes the file. ``want_sha256=False`` skips the SHA-256 unless the client signed
        the payload hash. ``durable`` fsyncs the file (objects and parts; not request bodies
        that are only parsed). Raises EntityTooLarge, IncompleteBody, BadDigest,
        XAmzContentSHA256Mismatch, SignatureDoesNotMatch (from the chunk decoder)."""
        directory = directory or self.tmp
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = _mkstemp(directory)
        path = Path(name)
        md5 = hashlib.md5()
        sha = hashlib.sha256() if (want_sha256 or expect.sha256_hex is not None) else None
        algorithms = set(expect.checksums) | set(expect.extra_algorithms)
        if expect.trailer_algorithm:
            algorithms.add(expect.trailer_algorithm)
        hashers = [md5, *([sha] if sha is not None else [])]
        sums = {a: h for a in algorithms if (h := chunked.new_checksum(a)) is not None}
        hashers += list(sums.values())
        size = 0
        # One reusable buffer when the reader can fill it (plain bodies): no 1 MiB allocation
        # per read, so the server's memory stays flat across long uploads.
        readinto = getattr(reader, "readinto", None)
        buf = bytearray(COPY_CHUNK) if readinto is not None else None
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                while True:
                    if buf is not None:
                        n = readinto(buf)
                        if not n:
                            break
                        data = memoryview(buf)[:n]
                    else:
                        data = reader.read(COPY_CHUNK)
                        if not data:
                            break
                        data = memoryview(data)
                    size += len(data)
                    if size > expect.max_size:
                        raise S3Error("EntityTooLarge", ProposedSize=str(size), MaxSizeAllowed=str(expect.max_size))
                    for h in hashers:
                        h.update(data)
                    view = data
                    while view:
                        written = out.write(view)
                        view = view[written:]
                if durable:
                    _sync(out.fileno())  # on disk before any rename makes it visible
            sha_hex = sha.hexdigest() if sha is not None else None
            md5_digest = md5.digest()
            if expect.sha256_hex is not None and not chunked.digests_equal(expect.sha256_hex, sha_hex):
                raise S3Error("XAmzContentSHA256Mismatch", ClientComputedContentSHA256=expect.sha256_hex,
                              S3ComputedContentSHA256=sha_hex)
            if expect.md5_b64 is not None:
                mine = base64.b64encode(md5_digest).decode()
                if not chunked.digests_equal(expect.md5_b64, mine):
                    raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.",
                                  ExpectedDigest=expect.md5_b64, CalculatedDigest=mine)
            claimed = dict(expect.checksums)
            trailers = getattr(reader, "trailers", {}) or {}
            if expect.trailer_algorithm:
                value = trailers.get(f"x-amz-checksum-{expect.trailer_algorithm}")
                if value is None:
                    raise S3Error("InvalidRequest", f"The trailer x-amz-checksum-{expect.trailer_algorithm} was "
                                                    "announced in x-amz-trailer but not sent.")
                claimed[expect.trailer_algorithm] = chunked.validate_checksum_value(expect.trailer_algorithm, value)
            stored = {}
            for algorithm, h in sums.items():
                mine = chunked.b64(h.digest())
                if algorithm in claimed and not chunked.digests_equal(claimed[algorithm], mine):
                    raise S3Error("BadDigest", f"The {algorithm.upper()} you specified did not match the "
                                               "calculated checksum.")
                stored[algorithm] = mine
            for algorithm, value in claimed.items():  # e.g. crc64nvme: kept, not verifiable here
                stored.setdefault(algorithm, value)
            return Received(path, size, md5_digest.hex(), sha_hex, stored)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise S3Error("InsufficientStorage") from None
            raise
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def put(self, bucket: str, key: str, reader, expect: Expectations, meta: dict) -> ObjectInfo:
        """Store an object from ``reader``. ``meta``: content_type, headers, metadata.
        Raises NoSuchBucket, the ``receive`` errors, ParentIsObject, ObjectExistsAsDirectory."""
        self._require_bucket(bucket)
        target = self.object_path(bucket, key)
        self._check_target(bucket, key, target)
        received = self.receive(reader, expect)
        return self._commit(bucket, key, target, received.path, {
            **_clean_meta(meta), "etag": f'"{received.md5_hex}"', "sha256": received.sha256_hex,
            "checksums": received.checksums, "size": received.size})

    def _check_target(self, bucket: str, key: str, target: Path) -> None:
        """Fail early (before the body is read) when the key cannot be stored."""
        base = self.root / bucket
        parent = target.parent
        while parent != base and base in parent.parents:
            if parent.exists() and not parent.is_dir():
                raise S3Error("ParentIsObject", Key=key)
            parent = parent.parent
        if target.is_dir() and not target.is_symlink() and self._dir_has_files(target):
            raise S3Error("ObjectExistsAsDirectory", Key=key)

    @staticmethod
    def _dir_has_files(d: Path) -> bool:
        for _dirpath, _dirs, files in os.walk(d):
            if files:
                return True
        return False

    def _commit(self, bucket: str, key: str, target: Path, tmp_path: Path, meta: dict) -> ObjectInfo:
        """Rename ``tmp_path`` into place and write its sidecar."""
        try:
            meta["ino"] = os.stat(tmp_path).st_ino
            meta["key"] = key
            meta.setdefault("last_modified", _iso(utcnow()))
            meta_path = self._meta_path(bucket, key)
            with self._lock(bucket, key):
                for attempt in range(5):
                    try:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        if target.is_dir() and not target.is_symlink():
                            if self._dir_has_files(target):
                                raise S3Error("ObjectExistsAsDirectory", Key=key)
                            _remove_empty_tree(target)
                            target.rmdir()
                        os.replace(tmp_path, target)
                        _sync_dir(target.parent)
                        break
                    except (FileExistsError, NotADirectoryError):
                        raise S3Error("ParentIsObject", Key=key) from None
                    except FileNotFoundError:
                        # a concurrent delete pruned an empty parent between mkdir and rename
                        if attempt == 4 or not tmp_path.exists():
                            raise
                _write_json(meta_path, meta, self.tmp)
        finally:
            tmp_path.unlink(missing_ok=True)
        st = os.stat(target, follow_symlinks=False)
        return self._meta_for(bucket, key, target, st)

    def delete(self, bucket: str, key: str) -> bool:
        """Delete ``key`` (no error when absent, like S3). Returns whether it existed.
        Raises NoSuchBucket."""
        base = self._require_bucket(bucket)
        path = self.object_path(bucket, key)
        existed = False
        with self._lock(bucket, key):
            try:
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    existed = True
            except FileNotFoundError:
                pass
            self._meta_path(bucket, key).unlink(missing_ok=True)
        _prune_empty_parents(path.parent, base)
        return existed

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *,
             meta: dict | None, byte_range: tuple[int, int] | None = None) -> ObjectInfo:
        """Server-side copy (``meta`` None = keep the source's). Raises NoSuchBucket, NoSuchKey."""
        info, fh = self.open(src_bucket, src_key)
        with fh:
            self._require_bucket(dst_bucket)
            target = self.object_path(dst_bucket, dst_key)
            self._check_target(dst_bucket, dst_key, target)
            reader = _RangeReader(fh, byte_range) if byte_range else fh
            received = self.receive(reader, Expectations(max_size=MAX_PUT_SIZE,
                                                         extra_algorithms=tuple(info.checksums)))
        if meta is None:
            meta = {"content_type": info.content_type, "headers": info.headers, "metadata": info.metadata}
        return self._commit(dst_bucket, dst_key, target, received.path, {
            **_clean_meta(meta), "etag": f'"{received.md5_hex}"', "sha256": received.sha256_hex,
            "checksums": {a: v for a, v in received.checksums.items() if "-" not in v}, "size": received.size})

    # ---- multipart
    def _upload_dir(self, bucket: str, key: str, upload_id: str) -> Path:
        if not _UPLOAD_ID_RE.fullmatch(upload_id or ""):
            raise S3Error("NoSuchUpload", UploadId=upload_id)
        d = self.uploads / upload_id
        try:
            rec = json.loads((d / "upload.json").read_text())
        except (OSError, ValueError):
            raise S3Error("NoSuchUpload", UploadId=upload_id) from None
        if rec.get("bucket") != bucket or rec.get("key") != key:
            raise S3Error("NoSuchUpload", UploadId=upload_id)
        return d

    def create_upload(self, bucket: str, key: str, meta: dict, checksum_algorithm: str | None = None) -> str:
        self._require_bucket(bucket)
        target = self.object_path(bucket, key)
        self._check_target(bucket, key, target)
        upload_id = secrets.token_urlsafe(32)
        d = self.uploads / upload_id
        d.mkdir(parents=True)
        _write_json(d / "upload.json", {"bucket": bucket, "key": key, "initiated": _iso(utcnow()),
                                        "meta": _clean_meta(meta), "checksum_algorithm": checksum_algorithm},
                    self.tmp)
        return upload_id

    def upload_info(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        d = self._upload_dir(bucket, key, upload_id)
        rec = json.loads((d / "upload.json").read_text())
        return UploadInfo(upload_id, bucket, key, _from_iso(rec.get("initiated")) or utcnow(),
                          {**rec.get("meta", {}), "checksum_algorithm": rec.get("checksum_algorithm")})

    def upload_part(self, bucket: str, key: str, upload_id: str, number: int, reader,
                    expect: Expectations) -> PartInfo:
        """Raises NoSuchUpload, InvalidArgument, the ``receive`` errors."""
        self._require_bucket(bucket)
        d = self._upload_dir(bucket, key, upload_id)
        _check_part_number(number)
        expect.max_size = min(expect.max_size, MAX_PART_SIZE)
        received = self.receive(reader, expect, directory=d, want_sha256=False)
        return self._store_part(d, number, received)

    def upload_part_copy(self, bucket: str, key: str, upload_id: str, number: int, src_bucket: str,
                         src_key: str, byte_range: tuple[int, int] | None) -> PartInfo:
        self._require_bucket(bucket)
        d = self._upload_dir(bucket, key, upload_id)
        _check_part_number(number)
        info, fh = self.open(src_bucket, src_key)
        with fh:
            reader = _RangeReader(fh, byte_range) if byte_range else fh
            received = self.receive(reader, Expectations(max_size=MAX_PART_SIZE), directory=d, want_sha256=False)
        return self._store_part(d, number, received)

    def _store_part(self, d: Path, number: int, received: Received) -> PartInfo:
        rec = {"etag": f'"{received.md5_hex}"', "size": received.size, "last_modified": _iso(utcnow()),
               "checksums": received.checksums}
        try:
            if not (d / "upload.json").exists():  # aborted or completed meanwhile
                raise S3Error("NoSuchUpload")
            os.replace(received.path, d / f"{number}.part")
            _sync_dir(d)
            _write_json(d / f"{number}.json", rec, d)
        finally:
            received.path.unlink(missing_ok=True)
        return PartInfo(number, received.size, rec["etag"], utcnow(), received.checksums)

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        d = self._upload_dir(bucket, key, upload_id)
        parts = []
        for entry in os.scandir(d):
            if entry.name.endswith(".json") and entry.name[:-5].isdigit():
                try:
                    rec = json.loads(Path(entry.path).read_text())
                except (OSError, ValueError):
                    continue
                parts.append(PartInfo(int(entry.name[:-5]), rec["size"], rec["etag"],
                                      _from_iso(rec.get("last_modified")) or utcnow(), rec.get("checksums") or {}))
        return sorted(parts, key=lambda p: p.number)

    def list_uploads(self, bucket: str, prefix: str = "") -> list[UploadInfo]:
        out = []
        for entry in os.scandir(self.uploads):
            try:
                rec = json.loads((Path(entry.path) / "upload.json").read_text())
            except (OSError, ValueError):
                continue
            if rec.get("bucket") == bucket and str(rec.get("key", "")).startswith(prefix):
                out.append(UploadInfo(entry.name, bucket, rec["key"], _from_iso(rec.get("initiated")) or utcnow(),
                                      rec.get("meta") or {}))
        return sorted(out, key=lambda u: (u.key, u.initiated))

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self._require_bucket(bucket)
        d = self._upload_dir(bucket, key, upload_id)
        (d / "upload.json").unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)

    def complete_upload(self, bucket: str, key: str, upload_id: str,
                        requested: list[tuple[int, str, dict]]) -> ObjectInfo:
        """Join the listed parts (number, etag, checksums) into the object.
        Raises NoSuchUpload, InvalidPart, InvalidPartOrder, EntityTooSmall, MalformedXML."""
        self._require_bucket(bucket)
        try:
            d = self._upload_dir(bucket, key, upload_id)
        except S3Error:
            done = self._completed_again(bucket, key, upload_id, requested)
            if done is None:
                raise
            return done
        if not requested:
            raise S3Error("MalformedXML", "You must specify at least one part")
        numbers = [n for n, _, _ in requested]
        if numbers != sorted(numbers):
            raise S3Error("InvalidPartOrder")
        # A part listed twice in a row (a resent part): the last entry counts, as on S3.
        requested = list({n: (n, etag, sums) for n, etag, sums in requested}.values())
        stored = {p.number: p for p in self.list_parts(bucket, key, upload_id)}
        for i, (number, etag, sums) in enumerate(requested):
            part = stored.get(number)
            if part is None or part.etag.strip('"') != (etag or "").strip().strip('"'):
                raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=str(number), ETag=etag)
            for algorithm, value in sums.items():
                if part.checksums.get(algorithm) not in (None, value):
                    raise S3Error("InvalidPart", f"The {algorithm.upper()} of part {number} does not match "
                                                 "the uploaded part.", UploadId=upload_id, PartNumber=str(number))
            if i < len(requested) - 1 and part.size < MIN_PART_SIZE:
                raise S3Error("EntityTooSmall", ProposedSize=str(part.size), MinSizeAllowed=str(MIN_PART_SIZE),
                              PartNumber=str(number), ETag=part.etag)
        info = self.upload_info(bucket, key, upload_id)
        target = self.object_path(bucket, key)
        self._check_target(bucket, key, target)
        fd, name = _mkstemp(self.tmp)
        tmp_path = Path(name)
        md5s = b""
        algorithm = info.meta.get("checksum_algorithm")
        composite = []
        sizes = []
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                for number, _etag, _sums in requested:
                    part = stored[number]
                    md5s += bytes.fromhex(part.etag.strip('"'))
                    if algorithm and part.checksums.get(algorithm):
                        composite.append(base64.b64decode(part.checksums[algorithm]))
                    with open(d / f"{number}.part", "rb") as src:
                        sizes.append(_copy_file(src, out))
                _sync(out.fileno())
        except FileNotFoundError:
            tmp_path.unlink(missing_ok=True)
            raise S3Error("NoSuchUpload", UploadId=upload_id) from None
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        checksums = {}
        if algorithm and len(composite) == len(requested) and (h := chunked.new_checksum(algorithm)):
            h.update(b"".join(composite))
            checksums[algorithm] = f"{chunked.b64(h.digest())}-{len(requested)}"
        etag = f'"{hashlib.md5(md5s).hexdigest()}-{len(requested)}"'
        meta = {k: v for k, v in info.meta.items() if k != "checksum_algorithm"}
        # No SHA-256 here: it would mean reading the whole object again inside the request.
        # ``ensure_sha256`` computes it on first need (job outputs) and keeps it in the sidecar.
        result = self._commit(bucket, key, target, tmp_path, {
            **meta, "etag": etag, "sha256": None, "checksums": checksums, "size": sum(sizes),
            "parts": len(requested), "part_sizes": sizes})
        _write_json(self.completed / f"{upload_id}.json",
                    {"bucket": bucket, "key": key, "etag": etag,
                     "parts": [[n, e.strip().strip('"')] for n, e, _ in requested]}, self.tmp)
        shutil.rmtree(d, ignore_errors=True)
        return result

    def completed_upload(self, bucket: str, key: str, upload_id: str) -> dict | None:
        """The record of an upload of ``bucket/key`` completed within a day, or None."""
        if not _UPLOAD_ID_RE.fullmatch(upload_id or ""):
            return None
        try:
            rec = json.loads((self.completed / f"{upload_id}.json").read_text())
        except (OSError, ValueError):
            return None
        return rec if rec.get("bucket") == bucket and rec.get("key") == key else None

    def _completed_again(self, bucket: str, key: str, upload_id: str, requested) -> ObjectInfo | None:
        """S3 answers a repeated Complete of the same parts with the object it made, as long as
        that object is still the current one."""
        rec = self.completed_upload(bucket, key, upload_id)
        if rec is None:
            return None
        asked = [[n, (e or "").strip().strip('"')] for n, e, _ in requested]
        asked = list({n: [n, e] for n, e in asked}.values())
        if asked != rec.get("parts"):
            return None
        try:
            info = self.head(bucket, key)
        except S3Error:
            return None
        return info if info.etag == rec.get("etag") else None

    def ensure_sha256(self, bucket: str, key: str) -> str | None:
        """The object's SHA-256, computed and stored in its sidecar when missing."""
        info, fh = self.open(bucket, key)
        with fh:
            if info.sha256:
                return info.sha256
            st = os.fstat(fh.fileno())
            sha = hashlib.sha256()
            while block := fh.read(COPY_CHUNK):
                sha.update(block)
        digest = sha.hexdigest()
        meta_path = self._meta_path(bucket, key)
        with self._lock(bucket, key):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                meta = None
            if meta and meta.get("ino") == st.st_ino and meta.get("size") == st.st_size:
                meta["sha256"] = digest
                _write_json(meta_path, meta, self.tmp)
        return digest

    # ---- housekeeping
    def purge_stale(self, *, upload_age: float = 7 * 86400, tmp_age: float = 86400) -> int:
        """Remove multipart uploads and temp files older than the given ages (seconds)."""
        now = time.time()
        removed = 0
        for entry in os.scandir(self.uploads):
            try:
                if now - entry.stat().st_mtime > upload_age:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed += 1
            except OSError:
                pass
        for entry in [*os.scandir(self.tmp), *os.scandir(self.completed)]:
            try:
                if now - entry.stat().st_mtime > tmp_age:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                pass
        return removed


# ---- helpers ------------------------------------------------------------------------------

class _Walker:
    """Depth-first walk yielding keys in order; ``after`` may be raised during iteration to
    skip ahead (whole directories are pruned when every key in them sorts before it)."""

    def __init__(self, base: Path, prefix: str, after: str):
        self.base = base
        self.prefix = prefix
        self.after = after

    def __iter__(self):
        return self._walk(self.base, "")

    def _walk(self, dirpath: Path | str, key_prefix: str):
        entries = []
        try:
            with os.scandir(dirpath) as it:
                for e in it:
                    seg = decode_segment(e.name)
                    if seg is None:
                        continue
                    try:
                        is_dir = e.is_dir(follow_symlinks=False)
                        if not is_dir and not e.is_file(follow_symlinks=False):
                            continue  # symlinks, sockets ...: never part of the store
                    except OSError:
                        continue
                    full = key_prefix + seg + ("/" if is_dir else "")
                    entries.append((full, is_dir, e))
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda t: t[0])
        prefix = self.prefix
        for full, is_dir, e in entries:
            after = self.after
            if is_dir:
                if not (full.startswith(prefix) or prefix.startswith(full)):
                    continue
                if after >= full and not after.startswith(full):
                    continue
                yield from self._walk(e.path, full)
            else:
                if not full.startswith(prefix) or full <= after:
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield full, Path(e.path), st


class _RangeReader:
    def __init__(self, fh, byte_range: tuple[int, int]):
        start, end = byte_range
        fh.seek(start)
        self._fh = fh
        self._left = end - start + 1

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._fh.read(n)
        self._left -= len(data)
        return data


def _copy_file(src, out) -> int:
    """Append ``src`` to ``out``: in the kernel (copy_file_range) where it can, else through
    a buffer. Returns the bytes copied."""
    total = 0
    size = os.fstat(src.fileno()).st_size
    try:
        while total < size:
            n = os.copy_file_range(src.fileno(), out.fileno(), size - total)
            if n == 0:
                break
            total += n
        return total
    except (AttributeError, OSError):
        src.seek(total)
    while block := src.read(COPY_CHUNK):
        view = memoryview(block)
        while view:
            view = view[out.write(view):]
        total += len(block)
    return total


def _check_part_number(number: int) -> None:
    if not (1 <= number <= MAX_PARTS):
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=str(number))


def _clean_meta(meta: dict) -> dict:
    return {"content_type": meta.get("content_type") or DEFAULT_CONTENT_TYPE,
            "headers": dict(meta.get("headers") or {}), "metadata": dict(meta.get("metadata") or {})}


def _is_regular(st: os.stat_result) -> bool:
    import stat as stat_mod

    return stat_mod.S_ISREG(st.st_mode)


def _mkstemp(directory: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(dir=directory, prefix="up-", suffix=".tmp")


def _write_json(path: Path, data: dict, tmp_dir: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = _mkstemp(tmp_dir)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
        # Not fsynced: a sidecar lost in a crash (or one of another version) is ignored and the
        # object is served from its file (default content type, an etag from its inode).
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _sync(fd: int) -> None:
    os.fsync(fd)


def _sync_dir(d: Path) -> None:
    """fsync a directory so a rename into it survives a crash (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _remove_empty_tree(d: Path) -> None:
    """Remove empty subdirectories of ``d`` (not ``d`` itself)."""
    for dirpath, dirnames, _files in os.walk(d, topdown=False):
        for name in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, name))
            except OSError:
                pass


def _prune_empty_parents(d: Path, stop: Path) -> None:
    while d != stop and stop in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent
