"""The agent's cache of extracted datasets, keyed by the archive's sha256: a worker that
already ran a job on the same data neither downloads nor extracts it again.

Pure (no server imports). ``<root>/<sha256>/`` holds one extracted archive, complete when
its ``.complete`` marker exists (extraction goes to a hidden temp directory renamed into
place). A job gets its own tree of hard links to the cached files (a copy where links
are not possible): a trainer that writes next to its data adds files to its own tree
only. Only archives whose sha256 the agent verified are stored.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

MARKER = ".complete"
KEEP = 4  # extracted datasets kept (least recently used go first)


def _valid(sha256: str | None) -> bool:
    return isinstance(sha256, str) and len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)


def lookup(root: Path, sha256: str | None) -> Path | None:
    if not _valid(sha256):
        return None
    path = Path(root) / sha256
    if not (path / MARKER).is_file():
        return None
    with suppress(OSError):
        os.utime(path / MARKER)  # recently used
    return path


def store(root: Path, sha256: str, zip_path: Path, extract: Callable[[Path, Path], int]) -> Path:
    """Extract the verified archive ``zip_path`` into the cache; returns its directory."""
    if not _valid(sha256):
        raise ValueError("not a sha256 hex digest")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / sha256
    tmp = root / f".{sha256}.{os.getpid()}.{time.monotonic_ns()}.partial"
    try:
        extract(zip_path, tmp)
        (tmp / MARKER).write_text("")
        if final.exists():  # an earlier, incomplete or concurrent copy
            shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune(root)
    return final


def link_tree(src: Path, dest: Path) -> int:
    """Hard-link (else copy) every cached file of ``src`` under ``dest``; returns the count."""
    n = 0
    for dirpath, _dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for name in files:
            if rel == Path(".") and name == MARKER:
                continue
            target = dest / rel / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(Path(dirpath) / name, target)
            except OSError:
                shutil.copy2(Path(dirpath) / name, target)
            n += 1
    return n


def prune(root: Path, keep: int = KEEP) -> None:
    entries = []
    for d in Path(root).iterdir():
        with suppress(OSError):
            if (d / MARKER).is_file():
                entries.append(((d / MARKER).stat().st_mtime_ns, d))
    for _mtime, d in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(d, ignore_errors=True)
