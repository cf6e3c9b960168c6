"""The config repository, driven by the git CLI. An adapter: no Flask, no database.

Traps this module exists to avoid:
- Repository discovery. ``STCLOUD_HOME`` defaults to ``./instance`` inside a checkout, so a
  plain ``git -C configs commit`` with a missing or broken ``configs/.git`` would walk up and
  commit into the *project's* repository. Every command names ``--git-dir`` and
  ``--work-tree`` explicitly and sets ``GIT_CEILING_DIRECTORIES``.
- The user's environment: ``GIT_DIR``/``GIT_INDEX_FILE`` inherited from a hook, a global
  config with ``commit.gpgsign`` or hooks, a missing identity. Commands run with
  ``GIT_CONFIG_NOSYSTEM=1``, ``GIT_CONFIG_GLOBAL=/dev/null``, ``HOME`` set to the repository
  and a fixed author/committer, never touching anyone's config.
- Unchanged configs. Each submit must get its own commit (the job id is in the message), so
  commits are ``--allow-empty``; that also means ``git log -- <name>/`` skips them. History
  is read from the ``Config-Name``/``Job-Id`` trailers instead of from path limiting.
- Concurrency. git's ``index.lock`` makes a second writer *fail*, not wait. Writers take an
  exclusive ``flock`` on a lock file beside the repository first.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock available
    fcntl = None

log = logging.getLogger(__name__)

GIT_BINARY = "git"  # tests monkeypatch this (or PATH) to simulate "git not installed"
TIMEOUT_SECONDS = 30
LOCK_TIMEOUT_SECONDS = 20
STALE_INDEX_LOCK_SECONDS = 120
AUTHOR_NAME = "stcloud"
AUTHOR_EMAIL = "stcloud@localhost"
CONFIG_FILE = "config.json"
DATALOADER_FILE = "dataloader.json"
FILES = (CONFIG_FILE, DATALOADER_FILE)
_SEP_FIELD, _SEP_RECORD = "\x1f", "\x1e"
_REV_RE = re.compile(r"^[0-9a-fA-F]{4,64}$")
_TRAILER_LINE = re.compile(r"^(Job-Id|Config-Name|Owner-Id):\s")


class GitError(Exception):
    """The repository cannot be used (broken, locked, or a git command failed)."""


class GitMissing(GitError):
    """No git binary."""


@dataclass(frozen=True)
class Commit:
    sha: str
    at: str  # ISO 8601 author date
    job_id: str | None
    name: str | None
    subject: str
    message: str | None  # the user's snapshot message, without our subject and trailers
    owner_id: str | None = None  # the ``Owner-Id`` trailer: the user whose submit made it (none before owners)


def git_path() -> str | None:
    return shutil.which(GIT_BINARY)


def version() -> str | None:
    exe = git_path()
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": str(root),
        "XDG_CONFIG_HOME": str(root / ".git" / "xdg"),
        "GIT_CEILING_DIRECTORIES": str(root.parent),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": AUTHOR_NAME,
        "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": AUTHOR_NAME,
        "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
        "LC_ALL": "C",
        "LANG": "C",
    })
    return env


_FIXED_CONFIG = (
    "-c", f"user.name={AUTHOR_NAME}", "-c", f"user.email={AUTHOR_EMAIL}",
    "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", "-c", "core.quotepath=false",
    "-c", "init.defaultBranch=main", "-c", "core.hooksPath=/dev/null", "-c", "gc.auto=0",
    "-c", "color.ui=false",
)


def run(root: Path, *args: str, input: str | None = None, repo: bool = True) -> str:
    """Run one git command for the repository at ``root``; returns stdout.

    Raises GitMissing without a git binary, GitError when the command fails."""
    exe = git_path()
    if not exe:
        raise GitMissing("git not installed")
    cmd = [exe, *_FIXED_CONFIG]
    if repo:
        cmd += [f"--git-dir={root / '.git'}", f"--work-tree={root}"]
    cmd += list(args)
    try:
        proc = subprocess.run(cmd, cwd=str(root), env=_env(root), input=input, capture_output=True,
                              text=True, encoding="utf-8", errors="replace", timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out after {TIMEOUT_SECONDS}s") from None
    except OSError as exc:
        raise GitError(f"git could not be started: {exc}") from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout or "").strip().splitlines()
        detail = "; ".join(line.strip() for line in msg[:3] if line.strip()) or f"exit {proc.returncode}"
        raise GitError(f"git {args[0]} failed: {detail}")
    return proc.stdout


# ---- repository ------------------------------------------------------------------------

def is_repo(root: Path) -> bool:
    return (root / ".git").exists()


def ensure_repo(root: Path) -> None:
    """Create the repository if it does not exist yet; check it works if it does.

    Raises GitMissing, GitError (with a message naming the repository)."""
    root.mkdir(parents=True, exist_ok=True)
    if not is_repo(root):
        run(root, "init", "-q", str(root), repo=False)
        (root / ".git" / "info").mkdir(parents=True, exist_ok=True)
        return
    try:
        run(root, "rev-parse", "--git-dir")
    except GitMissing:
        raise
    except GitError as exc:
        raise GitError(f"config repository {root} is broken ({exc}); "
                       f"repair it or move it aside and a new one is created") from None


def has_commits(root: Path) -> bool:
    try:
        run(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        return True
    except GitMissing:
        raise
    except GitError:
        return False


@contextmanager
def locked(root: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Exclusive cross-process lock for writers (a file beside the repository)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "a+") as fh:
        if fcntl is not None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise GitError(f"config repository busy: lock {lock_path} held for {timeout:.0f}s") from None
                    time.sleep(0.05)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _clear_stale_index_lock(root: Path) -> None:
    """Under our lock no stcloud writer is active; an old index.lock is a crash leftover."""
    lock = root / ".git" / "index.lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_INDEX_LOCK_SECONDS:
        log.warning("removing stale %s (%.0fs old)", lock, age)
        lock.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def commit_files(root: Path, name: str, files: dict[str, str], message: str) -> str:
    """Write ``files`` under ``root/name/`` and commit them (always a new commit).

    ``name`` must already be a safe directory name. Returns the commit sha.
    Raises GitMissing, GitError."""
    with locked(root):
        ensure_repo(root)
        _clear_stale_index_lock(root)
        for fname, text in files.items():
            _write_atomic(root / name / fname, text)
        run(root, "add", "-A", "--", f"{name}/")
        run(root, "commit", "-q", "--allow-empty", "--no-verify", "--cleanup=whitespace", "-F", "-",
            input=message)
        return run(root, "rev-parse", "--verify", "HEAD^{commit}").strip()


# ---- reading ---------------------------------------------------------------------------

def check_rev(rev: str) -> str:
    """Only hex object names reach git (no option injection, no ``HEAD~``-style walks)."""
    if not isinstance(rev, str) or not _REV_RE.match(rev):
        raise ValueError(f"not a commit id: {rev!r}")
    return rev.lower()


def resolve(root: Path, rev: str) -> str | None:
    """Full sha of commit ``rev`` or None when the repository does not have it."""
    rev = check_rev(rev)
    try:
        return run(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip() or None
    except GitMissing:
        raise
    except GitError:
        return None


def show(root: Path, sha: str, path: str) -> str | None:
    """Text of ``path`` at commit ``sha`` (``git show <sha>:<path>``); None if absent there."""
    sha = check_rev(sha)
    try:
        run(root, "cat-file", "-e", f"{sha}:{path}")
    except GitMissing:
        raise
    except GitError:
        return None
    return run(root, "show", "--no-textconv", f"{sha}:{path}")


def blob_id(root: Path, sha: str, path: str) -> str | None:
    """Object id of ``path`` at ``sha`` (equal ids = byte-identical files)."""
    sha = check_rev(sha)
    try:
        return run(root, "rev-parse", "--verify", "--quiet", f"{sha}:{path}").strip() or None
    except GitMissing:
        raise
    except GitError:
        return None


def diff(root: Path, old: str, new: str, paths: list[str]) -> str:
    """Unified diff of ``paths`` from commit ``old`` to ``new``."""
    return run(root, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--unified=3",
               check_rev(old), check_rev(new), "--", *paths)


_LOG_FORMAT = _SEP_FIELD.join([
    "%H", "%aI", "%(trailers:key=Job-Id,valueonly,separator=%x2C)",
    "%(trailers:key=Config-Name,valueonly,separator=%x2C)",
    "%(trailers:key=Owner-Id,valueonly,separator=%x2C)", "%s", "%b",
]) + _SEP_RECORD


def log_commits(root: Path, rev: str = "HEAD", max_count: int | None = None) -> list[Commit]:
    """Commits reachable from ``rev``, newest first. Empty for a repository without
    commits."""
    if not has_commits(root):
        return []
    limit = [f"--max-count={int(max_count)}"] if max_count else []
    out = run(root, "log", f"--format={_LOG_FORMAT}", *limit, rev if rev == "HEAD" else check_rev(rev), "--")
    commits = []
    for record in out.split(_SEP_RECORD):
        record = record.strip("\n")
        if not record:
            continue
        parts = record.split(_SEP_FIELD)
        if len(parts) < 7:
            continue
        sha, at, job_id, name, owner_id, subject, body = parts[:7]
        commits.append(Commit(sha=sha, at=at, job_id=job_id.strip() or None, name=name.strip() or None,
                              subject=subject, message=_user_message(body), owner_id=owner_id.strip() or None))
    return commits


def _user_message(body: str) -> str | None:
    paragraphs = [p for p in re.split(r"\n\s*\n", body.strip()) if p.strip()]
    if paragraphs and all(_TRAILER_LINE.match(line) for line in paragraphs[-1].splitlines() if line.strip()):
        paragraphs = paragraphs[:-1]
    text = "\n\n".join(paragraphs).strip()
    return text or None


def contents_by_name(root: Path) -> dict[str, tuple[str | None, ...]]:
    """``{name: (config.json blob id, dataloader.json blob id)}`` at HEAD (one ``ls-tree``):
    equal tuples = byte-identical latest snapshots."""
    if not has_commits(root):
        return {}
    blobs: dict[str, dict[str, str]] = {}
    for line in run(root, "ls-tree", "-r", "HEAD").splitlines():
        meta, _tab, path = line.partition("\t")
        parts = path.split("/")
        if len(parts) == 2 and parts[1] in FILES:
            blobs.setdefault(parts[0], {})[parts[1]] = meta.split()[2]
    return {name: tuple(files.get(f) for f in FILES) for name, files in blobs.items() if CONFIG_FILE in files}


def blobs_at(root: Path, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str | None, ...]]:
    """``{(sha, name): (config.json blob id, dataloader.json blob id)}`` for each snapshot
    ``(commit sha, directory)`` (one ``cat-file --batch-check``): equal tuples = byte-identical
    snapshots."""
    if not pairs:
        return {}
    wanted = [(sha, name, f) for sha, name in pairs for f in FILES]
    lines = "".join(f"{check_rev(sha)}:{name}/{f}\n" for sha, name, f in wanted)
    out = run(root, "cat-file", "--batch-check=%(objectname) %(objecttype)", input=lines).splitlines()
    ids = [line.split()[0] if line.endswith(" blob") else None for line in out]
    if len(ids) != len(wanted):
        raise GitError(f"git cat-file answered {len(ids)} lines for {len(wanted)} objects")
    found: dict[tuple[str, str], list] = {}
    for (sha, name, _f), oid in zip(wanted, ids, strict=True):
        found.setdefault((sha, name), []).append(oid)
    return {key: tuple(v) for key, v in found.items()}


def dumps(obj) -> str:
    """The one serialisation used for committed files: stable keys, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
