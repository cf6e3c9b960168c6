"""Build a deterministic ZIP of the local datasets of a dataloader config.

Layout: ``datasets/<folder>/<path relative to instance_data_dir>``; no directory
entries, members sorted by name, every timestamp 1980-01-01 00:00:00, mode 0644,
images/videos/archives ZIP_STORED and everything else ZIP_DEFLATED (default level).
The same files therefore give the same bytes and the same sha256 (on the same zlib
build; :func:`~stcloud.packaging.scan.dataset_fingerprint` is independent of that).
"""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import zipfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArchiveTooLargeError, DatasetChangedError, PackagingError
from .scan import (
    DataSummary,
    ProgressCallback,
    is_stored,
    normalise_config,
    open_included,
    rewrite_config,
    scan,
)

CHUNK_SIZE = 1024 * 1024
PROGRESS_STEP = 1024 * 1024  # report package progress at most once per MiB copied
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
TEMP_PREFIX = ".stcloud-archive-"
TEMP_SUFFIX = ".partial"


@dataclass(frozen=True)
class Archive:
    """A finished archive: ``path`` (``<dest_dir>/<sha256>.zip`` unless named), its
    ``sha256`` hex digest and ``size`` in bytes, the :class:`DataSummary` it was built
    from, and ``dataloader_config`` rewritten so every packaged dataset's
    ``instance_data_dir`` is ``datasets/<folder>`` (relative to where the ZIP is
    extracted)."""

    path: Path
    sha256: str
    size: int
    summary: DataSummary
    dataloader_config: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "size": self.size,
                "summary": self.summary.to_dict(), "dataloader_config": self.dataloader_config}


def _zipinfo(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED if is_stored(name) else zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, whatever platform we run on
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.file_size = size  # lets zipfile choose zip64 headers up front
    return info


class _Progress:
    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback, self.total, self.done, self.last = callback, total, 0, 0
        if callback is not None:
            callback("package", 0, total)

    def add(self, n: int) -> None:
        self.done += n
        if self.callback is not None and self.done - self.last >= PROGRESS_STEP:
            self.last = self.done
            self.callback("package", self.done, self.total)

    def finish(self) -> None:
        if self.callback is not None and self.last != self.done:
            self.last = self.done
            self.callback("package", self.done, self.total)


def _write_zip(fp, summary: DataSummary, progress: _Progress, max_bytes: int | None,
               limit_name: str) -> None:
    with zipfile.ZipFile(fp, "w", allowZip64=True) as zf:
        for name, f in summary.members():
            with open_included(f) as src, zf.open(_zipinfo(name, f.size), "w") as dst:
                remaining = f.size
                # read at most one byte past the scanned size: enough to notice growth
                while chunk := src.read(min(CHUNK_SIZE, remaining + 1)):
                    remaining -= len(chunk)
                    if remaining < 0:
                        break
                    dst.write(chunk)
                    progress.add(len(chunk))
                if remaining != 0:
                    raise DatasetChangedError(
                        f"{f.source} changed size while packaging "
                        f"(scanned {f.size} bytes); scan again", path=f.source)
            if max_bytes is not None and fp.tell() > max_bytes:
                raise ArchiveTooLargeError(fp.tell(), max_bytes, estimated=False, exact=False,
                                           limit_name=limit_name)
    progress.finish()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(CHUNK_SIZE):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every platform opens directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def build_archive(dataloader_config: Any, dest_dir: str | os.PathLike,
                  base_dir: str | os.PathLike | None = None, max_bytes: int | None = None,
                  progress: ProgressCallback | None = None, *,
                  archive_name: str | None = None,
                  limit_name: str = "the upload target") -> Archive:
    """Scan the config, then stream its local datasets into ``<dest_dir>/<sha256>.zip``.

    * ``base_dir``: what relative ``instance_data_dir`` values resolve against.
    * ``max_bytes``: refuse (:class:`ArchiveTooLargeError`) before writing anything if the
      scan's lower-bound estimate exceeds it; abort as soon as the partial archive exceeds
      it; and check the final size.  ``limit_name`` names the limit in the message, e.g.
      ``"Replicate"`` -> "Dataset archive is 150.3 MiB; Replicate accepts at most 100 MiB".
    * ``progress(stage, done, total)``: ``("scan", datasets_done, datasets_total)`` after
      each dataset, then ``("package", bytes_done, bytes_total)`` at start, at most once
      per MiB copied, and at the end.
    * ``archive_name``: final file name inside ``dest_dir`` instead of ``<sha256>.zip``
      (a bare name; an existing file of that name is replaced).

    The ZIP is written to a hidden temp file in ``dest_dir`` (created if missing;
    ``.stcloud-archive-[<archive_name>.]<random>.partial``), fsynced and renamed into place
    only when complete (mode 0600, as created by mkstemp); on any error the temp file is
    removed (after a crash, ``jobs.reconcile`` removes it).
    Files are copied in 1 MiB chunks, so memory use does not grow with dataset size.
    """
    if archive_name is not None and (
            not archive_name or os.path.basename(archive_name) != archive_name
            or archive_name in (".", "..") or "/" in archive_name or "\\" in archive_name):
        raise PackagingError(f"archive_name must be a plain file name, got {archive_name!r}")
    if max_bytes is not None and max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    config = normalise_config(dataloader_config)
    summary = scan(config, base_dir, progress=progress)
    new_config = rewrite_config(config, summary)
    if max_bytes is not None and summary.min_archive_bytes > max_bytes:
        raise ArchiveTooLargeError(summary.min_archive_bytes, max_bytes, estimated=True,
                                   exact=summary.estimate_is_exact, limit_name=limit_name)

    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    # A named archive's temp file carries the name, so a crash's leftover can be told apart.
    prefix = TEMP_PREFIX + (f"{archive_name}." if archive_name else "")
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=dest)
    try:
        with os.fdopen(fd, "wb") as fp:
            _write_zip(fp, summary, _Progress(progress, summary.total_bytes), max_bytes,
                       limit_name)
            fp.flush()
            os.fsync(fp.fileno())  # on disk before the rename makes it visible
            size = fp.tell()
        if max_bytes is not None and size > max_bytes:
            raise ArchiveTooLargeError(size, max_bytes, estimated=False, limit_name=limit_name)
        digest = sha256_file(tmp)
        final = dest / (archive_name or f"{digest}.zip")
        os.replace(tmp, final)
        _fsync_dir(dest)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return Archive(path=final, sha256=digest, size=size, summary=summary,
                   dataloader_config=new_config)


__all__ = ["Archive", "build_archive", "sha256_file", "CHUNK_SIZE"]
