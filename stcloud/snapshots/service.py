"""Config snapshots: each submit commits ``<name>/config.json`` and ``<name>/dataloader.json``
(stable key order, secrets removed) to the git repository at ``STCLOUD_HOME/configs/``;
history, files at a commit, a job's snapshot with its diff against the previous run of the
same config name, and the committed files an exact re-run (``jobs.rerun``) submits again.

``snapshot_for_submit`` never raises: a missing git or a broken repository must never block
a submit; the job records the reason in ``snapshot_error`` instead.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import has_app_context

from stcloud import settings
from stcloud.errors import BadRequest, NotFound, Unavailable
from stcloud.redact import REDACTED, is_secret_key, restore_secrets, strip_secrets  # noqa: F401 - re-exported
from stcloud.snapshots import git

log = logging.getLogger(__name__)

NO_GIT_NOTICE = "git not installed: snapshot skipped"
SETTING_KEY = "snapshots_enabled"
MAX_MESSAGE = 4000
MAX_NAME = 100
_OWNER_BAD = re.compile(r"[^\w.@-]")

# Which commits the caller may see (``snapshots.owners.commit_filter``): a function from a list
# of commits to the visible ones, or None for everything (admins, viewers, background code).
Visible = Callable[[list[git.Commit]], list[git.Commit]] | None

# ---- names -----------------------------------------------------------------------------

_NAME_BAD = re.compile(r"[^\w.-]+", re.UNICODE)
_HASHED = re.compile(r"^(?P<slug>.+)--[0-9a-f]{12}$")


def legacy_name(name: str | None) -> str:
    """The readable slug of a config name: letters, digits, ``_ . -`` only, no ``--``, no
    leading dot or dash (so no ``..``, no ``.git``, no option-looking names), at most 100
    characters. Until names were made collision-free this *was* the directory name, so
    snapshots committed earlier are found under it."""
    text = unicodedata.normalize("NFC", str(name or "")).strip()
    text = _NAME_BAD.sub("-", text)
    text = re.sub(r"-{2,}", "-", text).lstrip(".-_")[:MAX_NAME].rstrip(".-")
    return text or "unnamed"


def safe_name(name: str | None) -> str:
    """The directory of a config name, distinct for distinct names. A name that already is
    its own lower-case slug (``my-lora``, ``flux_v2.1``) is used as it is; any other name
    (``.git``, ``..``, ``My LoRA``, another Unicode normalisation, > 100 characters, empty)
    gets ``<slug>--<12 hex of sha256(exact name)>``. Slugs never contain ``--``, so the two
    forms cannot meet, and names differing only in case never share a directory, even on a
    case-insensitive file system."""
    exact = "" if name is None else str(name)
    slug = legacy_name(exact)
    if slug == exact and slug == slug.lower():
        return slug
    return f"{slug}--{hashlib.sha256(exact.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def is_dir_name(text: str) -> bool:
    """A directory name ``safe_name`` (or the earlier ``legacy_name``) can produce: safe in a path."""
    m = _HASHED.match(text)
    return legacy_name(m.group("slug") if m else text) == (m.group("slug") if m else text)


def repo_root(home: str | Path) -> Path:
    return Path(home) / "configs"


# ---- the submit hook -------------------------------------------------------------------

def enabled() -> bool:
    """The user's switch (Configs page); on by default. Outside an app context: on."""
    try:
        if not has_app_context():
            return True
        value = settings.get(SETTING_KEY)
        return value is None or bool(value)
    except Exception:  # the switch must never be the reason a submit fails
        log.exception("could not read the snapshot setting; snapshots stay on")
        return True


def _clean_message(message: str | None) -> str | None:
    if not message:
        return None
    text = "".join(ch for ch in str(message) if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = text.strip()[:MAX_MESSAGE].strip()
    return text or None


def commit_message(name: str, job_id: str, message: str | None, owner_id: str | None = None) -> str:
    """The subject, the user's message, then our trailers (``Job-Id``, ``Config-Name`` and,
    for a job that has an owner, ``Owner-Id``): the last paragraph, which git reads trailers from."""
    parts = [f"Snapshot {name} for {job_id}"]
    user = _clean_message(message)
    if user:
        parts.append(user)
    trailers = f"Job-Id: {job_id}\nConfig-Name: {name}"
    if owner_id and not _OWNER_BAD.search(owner_id):
        trailers += f"\nOwner-Id: {owner_id}"
    parts.append(trailers)
    return "\n\n".join(parts) + "\n"


def snapshot_for_submit(home: str, name: str, config: dict, dataloader_config: list,
                        job_id: str, message: str | None = None,
                        owner_id: str | None = None) -> tuple[str | None, str | None]:
    """Commit the job's config and dataloader under ``configs/<safe name>/``; the commit
    records the job's owner (``Owner-Id``) when it has one.

    Returns ``(commit sha, None)``, ``(None, None)`` when the user switched snapshots off,
    or ``(None, error)``. Never raises."""
    try:
        if not enabled():
            return None, None
        if not git.git_path():
            return None, NO_GIT_NOTICE
        dir_name = safe_name(name)
        files = {
            git.CONFIG_FILE: git.dumps(strip_secrets(config if config is not None else {})),
            git.DATALOADER_FILE: git.dumps(strip_secrets(dataloader_config if dataloader_config is not None else [])),
        }
        sha = git.commit_files(repo_root(home), dir_name, files, commit_message(dir_name, job_id, message, owner_id))
        return sha, None
    except git.GitMissing:
        return None, NO_GIT_NOTICE
    except git.GitError as exc:
        log.warning("snapshot for %s failed: %s", job_id, exc)
        return None, f"snapshot failed: {exc}"
    except (TypeError, ValueError) as exc:
        return None, f"snapshot failed: config is not JSON-serialisable ({exc})"
    except Exception as exc:  # contract: never raises
        log.exception("snapshot for %s failed", job_id)
        return None, f"snapshot failed: {exc.__class__.__name__}: {exc}"


# ---- reading ---------------------------------------------------------------------------

def status(home: str | Path) -> dict:
    """``{enabled, git, error}``: what the Configs page and API say about the repository."""
    root = repo_root(home)
    info = {"enabled": enabled(), "git": git.version(), "path": str(root), "error": None}
    if info["git"] is None:
        info["error"] = "git not installed: snapshots are skipped (install git to version configs)"
    elif git.is_repo(root):
        try:
            git.ensure_repo(root)
        except git.GitError as exc:
            info["error"] = str(exc)
    return info


def _guard(fn, *args, **kw):
    """Run a read against the repository: missing git / broken repo -> 503 with the reason."""
    try:
        return fn(*args, **kw)
    except git.GitMissing:
        raise Unavailable("git not installed: config snapshots are not available") from None
    except git.GitError as exc:
        raise Unavailable(str(exc)) from None


def _commits(home) -> list[git.Commit]:
    root = repo_root(home)
    if not git.git_path():
        raise git.GitMissing("git not installed")
    if not git.is_repo(root):
        return []
    git.ensure_repo(root)
    return git.log_commits(root)


def _seen(commits: list[git.Commit], visible: Visible, keep: str | None = None) -> list[git.Commit]:
    """The commits the caller may see (all when ``visible`` is None); ``keep`` (a sha the
    caller already may see, e.g. their job's snapshot) stays in the list."""
    if visible is None:
        return commits
    shown = {c.sha for c in visible(commits)}
    return [c for c in commits if c.sha in shown or c.sha == keep]


def _commit_dict(c: git.Commit) -> dict:
    return {"commit": c.sha, "short": c.sha[:10], "at": c.at, "job_id": c.job_id,
            "name": c.name, "message": c.message}


def list_configs(home: str | Path, visible: Visible = None) -> list[dict]:
    """Saved configs, most recently used first: ``[{name, snapshots, last_commit, last_at,
    last_job_id, last_message, same_as}]``; ``same_as`` names the other configs whose latest
    snapshot is byte-identical to this one's (newest first). With ``visible`` only the
    snapshots it keeps count (a member's own): their latest one is compared. Raises
    Unavailable (no git, broken repository)."""
    def _list():
        commits = _seen(_commits(home), visible)
        contents = git.contents_by_name(repo_root(home)) if commits else {}
        names = set(contents)
        out: dict[str, dict] = {}
        for c in commits:  # newest first: the first one seen per name is its latest
            if not c.name:
                continue
            entry = out.get(c.name)
            if entry is None:
                out[c.name] = {"name": c.name, "snapshots": 1, "last_commit": c.sha, "last_at": c.at,
                               "last_job_id": c.job_id, "last_message": c.message}
            else:
                entry["snapshots"] += 1
        listed = [e for e in out.values() if e["name"] in names]
        if visible is not None:  # the directory at HEAD may hold someone else's newer snapshot
            latest = git.blobs_at(repo_root(home), [(e["last_commit"], e["name"]) for e in listed])
            contents = {e["name"]: latest[(e["last_commit"], e["name"])] for e in listed}
        for e in listed:
            e["same_as"] = [o["name"] for o in listed if o is not e and contents[o["name"]] == contents[e["name"]]]
        return listed

    return _guard(_list)


def history(home: str | Path, name: str, limit: int = 100, visible: Visible = None) -> list[dict]:
    """Snapshots of config ``name``, newest first (those ``visible`` keeps). Raises NotFound,
    Unavailable."""
    dir_name = _checked_name(name)
    commits = _guard(lambda: _seen(_commits(home), visible))
    items = [_commit_dict(c) for c in commits if c.name == dir_name]
    if not items:
        raise NotFound(f"no snapshots of config {dir_name!r}")
    return items[:limit]


def _checked_name(name: str) -> str:
    """``name`` is a directory of the repository (as listed), never a path of its own."""
    if not isinstance(name, str) or not is_dir_name(name):
        raise NotFound(f"no config named {name!r}")
    return name


def _dir_at(root: Path, sha: str, config_name: str | None) -> str:
    """The directory ``config_name`` was committed under at ``sha``: its collision-free name,
    or, for a snapshot made before those, its legacy slug."""
    current = safe_name(config_name)
    legacy = legacy_name(config_name)
    if legacy != current and git.show(root, sha, f"{current}/{git.CONFIG_FILE}") is None \
            and git.show(root, sha, f"{legacy}/{git.CONFIG_FILE}") is not None:
        return legacy
    return current


def _check_commit(commit: str) -> str:
    try:
        return git.check_rev(commit)
    except ValueError:
        raise BadRequest(f"commit must be a hex commit id, got {commit!r}") from None


def _parse(text: str | None):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def files_at(home: str | Path, name: str, commit: str, visible: Visible = None) -> dict:
    """The files of config ``name`` at ``commit``: ``{name, commit, files, config,
    dataloader_config, config_blob, job_id, at, message, previous, diff, diff_lines}``.
    With ``visible``, ``commit`` must be a snapshot of ``name`` it keeps, and ``previous`` is
    the one before it that it keeps. Raises BadRequest, NotFound, Unavailable."""
    dir_name = _checked_name(name)
    rev = _check_commit(commit)
    root = repo_root(home)

    def _read():
        if not git.is_repo(root):
            raise NotFound("no config snapshots yet")
        git.ensure_repo(root)
        sha = git.resolve(root, rev)
        if sha is None:
            raise NotFound(f"commit {commit} not found in the config repository")
        files = {f: git.show(root, sha, f"{dir_name}/{f}") for f in git.FILES}
        if files[git.CONFIG_FILE] is None:
            raise NotFound(f"config {dir_name!r} does not exist at commit {sha[:10]}")
        commits = [c for c in git.log_commits(root, sha) if c.name == dir_name or c.sha == sha]
        if visible is not None:
            commits = _seen(commits, visible)
            if not commits or commits[0].sha != sha or commits[0].name != dir_name:
                raise NotFound(f"no snapshot of config {dir_name!r} at commit {sha[:10]}")
        meta = commits[0] if commits and commits[0].sha == sha else None
        prev = _previous(commits, sha, dir_name)
        text = git.diff(root, prev.sha, sha, [f"{dir_name}/{f}" for f in git.FILES]) if prev else None
        return {"name": dir_name, "commit": sha, "files": files,
                "previous": {"job_id": prev.job_id, "commit": prev.sha, "at": prev.at} if prev else None,
                "diff": text, "diff_lines": diff_lines(text),
                "config": _parse(files[git.CONFIG_FILE]),
                "dataloader_config": _parse(files[git.DATALOADER_FILE]),
                "config_blob": git.blob_id(root, sha, f"{dir_name}/{git.CONFIG_FILE}"),
                "job_id": meta.job_id if meta else None, "at": meta.at if meta else None,
                "message": meta.message if meta else None}

    return _guard(_read)


@dataclass(frozen=True)
class JobRef:
    """What the snapshot view needs of a job (plain values, no ORM row)."""

    id: str
    name: str
    config_name: str | None
    snapshot: str | None
    snapshot_error: str | None

    @property
    def dir_name(self) -> str:
        return safe_name(self.config_name or self.name)

    @classmethod
    def of(cls, job) -> JobRef:
        return cls(id=job.id, name=job.name, config_name=job.config_name, snapshot=job.snapshot,
                   snapshot_error=job.snapshot_error)


def job_snapshot(home: str | Path, ref: JobRef, visible: Visible = None) -> dict:
    """A job's snapshot: ``{job_id, config_name, commit, snapshot_error, files, config_blob,
    diff, previous: {job_id, commit} | None, error}``. ``commit``/``files``/``diff`` are null
    when the job has no snapshot (``snapshot_error`` says why) or the repository cannot be
    read (``error`` says why); never raises for those. ``previous`` is the run before it
    among the snapshots ``visible`` keeps."""
    out = {"job_id": ref.id, "config_name": ref.dir_name, "commit": ref.snapshot,
           "snapshot_error": ref.snapshot_error, "files": None, "config_blob": None, "diff": None,
           "diff_lines": [], "previous": None, "error": None}
    if not ref.snapshot:
        return out
    root = repo_root(home)
    try:
        if not git.git_path():
            raise git.GitMissing("git not installed")
        sha = _resolve_snapshot(root, ref.snapshot)
        out["commit"] = sha
        dir_name = out["config_name"] = _dir_at(root, sha, ref.config_name or ref.name)
        out["files"] = {f: git.show(root, sha, f"{dir_name}/{f}") for f in git.FILES}
        out["config_blob"] = git.blob_id(root, sha, f"{dir_name}/{git.CONFIG_FILE}")
        prev = _previous(_seen(git.log_commits(root), visible, keep=sha), sha, dir_name)
        if prev is not None:
            out["previous"] = {"job_id": prev.job_id, "commit": prev.sha, "at": prev.at}
            paths = [f"{dir_name}/{f}" for f in git.FILES]
            out["diff"] = git.diff(root, prev.sha, sha, paths)
            out["diff_lines"] = diff_lines(out["diff"])
    except git.GitMissing:
        out["error"] = "git not installed: the snapshot cannot be shown"
    except (git.GitError, ValueError) as exc:
        out["error"] = str(exc)
    return out


def _resolve_snapshot(root: Path, rev: str) -> str:
    """The full sha of snapshot ``rev`` in the config repository. Raises git.GitError."""
    if not git.is_repo(root):
        raise git.GitError(f"config repository {root} is missing")
    git.ensure_repo(root)
    sha = git.resolve(root, rev)
    if sha is None:
        raise git.GitError(f"snapshot commit {rev[:10]} is not in the config repository")
    return sha


def _previous(commits: list[git.Commit], sha: str, name: str) -> git.Commit | None:
    """The snapshot of the run of ``name`` submitted just before commit ``sha``."""
    seen = False
    for c in commits:  # newest first
        if c.sha == sha:
            seen = True
            continue
        if seen and c.name == name:
            return c
    return None


def diff_lines(text: str | None) -> list[dict]:
    """A unified diff as ``[{kind, text}]``, kind in add | del | hunk | file | meta | ctx."""
    out = []
    for line in (text or "").splitlines():
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith(("diff --git", "index ", "new file", "deleted file", "similarity", "rename ")):
            kind = "meta"
        elif line.startswith("\\"):
            kind = "meta"
        else:
            kind = "ctx"
        out.append({"kind": kind, "text": line})
    return out


# ---- what a re-run reads ------------------------------------------------------------------

def committed_config(home: str | Path, config_name: str, snapshot: str) -> tuple[dict, list]:
    """``(config, dataloader_config)`` as committed in ``snapshot`` under ``config_name``
    (secrets stripped). Raises Unavailable when the snapshot cannot be read."""
    root = repo_root(home)
    dir_name = safe_name(config_name)

    def _read():
        nonlocal dir_name
        sha = _resolve_snapshot(root, snapshot)
        dir_name = _dir_at(root, sha, config_name)
        return (git.show(root, sha, f"{dir_name}/{git.CONFIG_FILE}"),
                git.show(root, sha, f"{dir_name}/{git.DATALOADER_FILE}"))

    cfg_text, dl_text = _guard(_read)
    cfg, dl = _parse(cfg_text), _parse(dl_text)
    if not isinstance(cfg, dict) or not isinstance(dl, list):
        raise Unavailable(f"snapshot {snapshot[:10]} of {dir_name!r} has no readable config.json/dataloader.json")
    return cfg, dl
