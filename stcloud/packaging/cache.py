"""A content-addressed cache of dataset archives: an unchanged dataset is packaged once.

Pure (no Flask, no database). Layout under ``cache_dir``::

    <sha256>.zip          an archive, named by the sha256 of its bytes (its identity)
    index/<key>.json      {"sha256", "size", "built_at_ns"}: the fast key -> the archive

The fast key is the sha256 of the archive's member list: each member's archive name,
size, mtime (ns), device and inode, plus the packaging format version. Looking it up costs
a scan (which submit does anyway) and no read of the data. A file edited after the archive
was built changes its mtime and misses. A file whose mtime is not older than the moment
its archive's build started (``built_at_ns``) could have been edited within the
filesystem's timestamp granularity without the key changing: such an entry is not trusted
and the archive is built again (git's "racily clean" rule). A rebuild that produces the
same bytes lands on the same ``<sha256>.zip``.

:func:`build_archive` has :func:`stcloud.packaging.build_archive`'s signature plus
``cache_dir``; the archive it returns is ``<dest_dir>/<archive_name>``, a hard link to the
cached file (a copy where links are not possible), so whoever owns that path may delete
it without touching the cache. :func:`prune` keeps the cache under a size.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from . import archive as archive_mod
from .archive import Archive
from .errors import ArchiveTooLargeError
from .scan import DataSummary, ProgressCallback, normalise_config, rewrite_config, scan

FORMAT = 1  # bump when archive.py would write different bytes for the same files
INDEX = "index"
DEFAULT_MAX_CACHE_BYTES = 5 * 1024 ** 3


def fast_key(summary: DataSummary) -> str:
    h = hashlib.sha256(f"stcloud-archive-v{FORMAT}\n".encode())
    for name, f in summary.members():
        h.update(f"{name}\0{f.size}\0{f.mtime_ns}\0{f.device}\0{f.inode}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _racy(summary: DataSummary, built_at_ns: int) -> bool:
    return any(f.mtime_ns >= built_at_ns for _name, f in summary.members())


def _read_index(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
            or not isinstance(entry.get("size"), int) or not isinstance(entry.get("built_at_ns"), int):
        return None
    return entry


def _write_index(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".index-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def lookup(summary: DataSummary, cache_dir: str | os.PathLike) -> tuple[Path, str, int] | None:
    """``(path, sha256, size)`` of the cached archive of exactly these files, or None."""
    cache = Path(cache_dir)
    entry = _read_index(cache / INDEX / f"{fast_key(summary)}.json")
    if entry is None or _racy(summary, entry["built_at_ns"]):
        return None
    path = cache / f"{entry['sha256']}.zip"
    try:
        if path.stat().st_size != entry["size"]:
            return None
        os.utime(path)  # recently used: pruned last
    except OSError:
        return None
    return path, entry["sha256"], entry["size"]


def _link(src: Path, dest: Path) -> None:
    """``dest`` becomes ``src``'s bytes: a hard link, else a copy (atomically either way)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{archive_mod.TEMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}{archive_mod.TEMP_SUFFIX}"
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def build_archive(dataloader_config: Any, dest_dir: str | os.PathLike, base_dir: str | os.PathLike | None = None,
                  max_bytes: int | None = None, progress: ProgressCallback | None = None, *,
                  archive_name: str | None = None, limit_name: str = "the upload target",
                  cache_dir: str | os.PathLike, max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES) -> Archive:
    """Like :func:`stcloud.packaging.build_archive`, through the cache: on a hit nothing is
    packaged (``progress`` gets the scan, then one ``("package", size, size)``); after a
    miss the cache is pruned to ``max_cache_bytes``."""
    config = normalise_config(dataloader_config)
    summary = scan(config, base_dir, progress=progress)
    cache = Path(cache_dir)
    dest = Path(dest_dir).expanduser()
    hit = lookup(summary, cache)
    if hit is not None:
        path, digest, size = hit
        if max_bytes is not None and size > max_bytes:
            raise ArchiveTooLargeError(size, max_bytes, estimated=False, limit_name=limit_name)
        if progress is not None:
            progress("package", size, size)
        final = dest / (archive_name or f"{digest}.zip")
        if final != path:
            _link(path, final)
        return Archive(path=final, sha256=digest, size=size, summary=summary,
                       dataloader_config=rewrite_config(config, summary))
    started_ns = time.time_ns()
    built = archive_mod.build_archive(config, cache, base_dir, max_bytes, progress, limit_name=limit_name)
    # the archive was built from the files as they were at this scan
    _write_index(cache / INDEX / f"{fast_key(built.summary)}.json",
                 {"sha256": built.sha256, "size": built.size, "built_at_ns": started_ns})
    final = dest / (archive_name or f"{built.sha256}.zip")
    if final != built.path:
        _link(built.path, final)
    prune(cache, max_cache_bytes)
    return Archive(path=final, sha256=built.sha256, size=built.size, summary=built.summary,
                   dataloader_config=built.dataloader_config)


def prune(cache_dir: str | os.PathLike, max_bytes: int = DEFAULT_MAX_CACHE_BYTES) -> int:
    """Delete the least recently used archives until the cache holds at most ``max_bytes``
    (paths linked elsewhere keep their bytes). Index entries of deleted archives are
    removed too. Returns the number of archives deleted."""
    cache = Path(cache_dir)
    try:
        files = [(p.stat().st_mtime_ns, p.stat().st_size, p) for p in cache.glob("*.zip")]
    except OSError:
        return 0
    total = sum(size for _, size, _ in files)
    removed: set[str] = set()
    for _mtime, size, path in sorted(files):
        if total <= max_bytes:
            break
        with suppress(OSError):
            path.unlink()
            total -= size
            removed.add(path.stem)
    if removed:
        for idx in (cache / INDEX).glob("*.json"):
            entry = _read_index(idx)
            if entry is None or entry["sha256"] in removed:
                with suppress(OSError):
                    idx.unlink()
    return len(removed)


__all__ = ["build_archive", "fast_key", "lookup", "prune", "DEFAULT_MAX_CACHE_BYTES"]
