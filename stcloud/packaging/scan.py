"""Scan a SimpleTuner ``dataloader_config`` and decide which local files get packaged.

One walker (:func:`_walk_dataset`) and one rule table (:func:`exclusion_reason`)
decide inclusion; :func:`scan`, :func:`dataset_fingerprint` and
:func:`stcloud.packaging.archive.build_archive` all consume its output, so the
archive can never contain a file the scan did not list.

Exclusion rules (applied to every entry *name* below the dataset root, files and
directories alike; a matching directory is reported once and not descended into):

* ``.env*``                   -> "secret file (.env*)"
* ``.git``                    -> "git metadata"
* ``.ssh``                    -> "SSH directory (.ssh)"
* ``.aws``                    -> "AWS credentials (.aws)"
* ``.netrc``                  -> "netrc credentials (.netrc)"
* ``credentials*``            -> "credentials file (credentials*)"
* ``*.pem`` / ``*.key``       -> "private key or certificate (*.pem / *.key)"
* ``id_rsa*``                 -> "SSH key (id_rsa*)"
* any other name starting ``.`` -> "hidden file" / "hidden directory"

(``credentials*``, ``*.pem``, ``*.key`` and ``id_rsa*`` match case-insensitively.)

Then, by file type:

* symlink whose target resolves outside the dataset root -> "symlink leaves dataset root"
* symlink whose target is inside the root but under an excluded name
  (e.g. ``notes.txt -> .env``) -> "symlink to excluded path (<reason>)"
* dangling symlink -> "broken symlink"; self-referencing chain -> "symlink loop"
* symlink to a directory inside the root -> "symlink loop" if it points at the
  directory itself or one of its ancestors, otherwise
  "symlinked directory (contents included via real path)": the real directory is
  inside the root, so its files are already packaged once under their real path
  (this also makes loops impossible to follow).  Symlinks to *files* inside the
  root are followed and packaged as regular files under the link's name.
* sockets, fifos, devices -> "not a regular file (socket|fifo|device)"
* names that are not valid UTF-8 -> "file name is not valid UTF-8"
* unreadable sub-directories / files -> "unreadable directory|file (...)"
* a real directory seen twice (bind-mount loop) -> "directory loop"
"""
from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    DatasetChangedError,
    DatasetNotADirectoryError,
    DatasetNotFoundError,
    DatasetUnreadableError,
    EmptyDatasetError,
    InvalidDataloaderConfigError,
    PackagingError,
)

ProgressCallback = Callable[[str, int, int], None]

#: Top-level folder inside the archive that holds one sub-folder per dataset.
ARCHIVE_ROOT = "datasets"

LOCAL_TYPES = (None, "", "local")
#: ``dataset_type`` values that are caches, never packaged.
CACHE_DATASET_TYPES = frozenset({"text_embeds", "image_embeds", "conditioning_image_embeds"})

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jxl", ".avif",
     ".heic", ".heif", ".jp2"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"})
CAPTION_EXTENSIONS = frozenset({".txt"})
#: Already-compressed formats: stored in the ZIP as-is (ZIP_STORED), everything else is deflated.
STORED_EXTENSIONS = (
    (IMAGE_EXTENSIONS - {".bmp", ".tif", ".tiff"})
    | VIDEO_EXTENSIONS
    | frozenset({".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".npz", ".parquet"})
)

# ZIP format overheads used by the size estimate (see zipfile / APPNOTE.TXT).
_LOCAL_HEADER = 30
_CENTRAL_HEADER = 46
_END_RECORD = 22
_ZIP64_LOCAL_EXTRA = 20
_ZIP64_CENTRAL_EXTRA = 28
_ZIP64_END_RECORDS = 56 + 20
_ZIP64_LIMIT = (1 << 31) - 1
_DEFLATE_MAX_RATIO = 1032  # zlib's best case; lower bound for deflated data

MAX_EXCLUDED_IN_DICT = 200


# --------------------------------------------------------------------------- rules
_EXACT_RULES: dict[str, str] = {
    ".git": "git metadata",
    ".ssh": "SSH directory (.ssh)",
    ".aws": "AWS credentials (.aws)",
    ".netrc": "netrc credentials (.netrc)",
}


def exclusion_reason(name: str, *, is_dir: bool = False) -> str | None:
    """The reason ``name`` (one path component) is excluded, or ``None`` if the name is fine.

    Only looks at the name; file-type rules (symlinks, sockets, ...) are applied by the walker.
    """
    lower = name.lower()
    if name.startswith(".env"):
        return "secret file (.env*)"
    if name in _EXACT_RULES:
        return _EXACT_RULES[name]
    if lower.startswith("credentials"):
        return "credentials file (credentials*)"
    if lower.endswith(".pem"):
        return "private key or certificate (*.pem)"
    if lower.endswith(".key"):
        return "private key (*.key)"
    if lower.startswith("id_rsa"):
        return "SSH key (id_rsa*)"
    if name.startswith("."):
        return "hidden directory" if is_dir else "hidden file"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    return None


def _path_exclusion_reason(rel_parts: Iterable[str], last_is_dir: bool) -> str | None:
    parts = list(rel_parts)
    for i, part in enumerate(parts):
        reason = exclusion_reason(part, is_dir=(i < len(parts) - 1) or last_is_dir)
        if reason:
            return reason
    return None


def file_kind(path: str) -> str:
    """"image", "video", "caption" or "other", from the extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in CAPTION_EXTENSIONS:
        return "caption"
    return "other"


def is_stored(path: str) -> bool:
    """True if the file is already compressed and goes into the ZIP uncompressed."""
    return os.path.splitext(path)[1].lower() in STORED_EXTENSIONS


# --------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class IncludedFile:
    """One file that goes into the archive.

    ``path`` is relative to the dataset root (POSIX separators); ``source`` the absolute
    path read from (may be a symlink inside the root).  ``device``/``inode`` identify the
    file actually read and are re-checked while packaging.
    """

    path: str
    size: int
    source: str
    mtime_ns: int
    device: int = field(default=0, repr=False, compare=False)
    inode: int = field(default=0, repr=False, compare=False)


@dataclass(frozen=True)
class ExcludedEntry:
    """A file or directory that was left out. Directories have ``is_dir`` and a trailing ``/``."""

    dataset_id: str
    path: str
    reason: str
    is_dir: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset_id, "path": self.path, "reason": self.reason,
                "is_dir": self.is_dir}


@dataclass(frozen=True)
class DatasetSummary:
    """One packaged (local) dataset.

    ``folder`` is the sanitised, unique folder name; ``archive_dir`` is
    ``datasets/<folder>``, the value written to ``instance_data_dir`` in the rewritten
    config.  ``shares_folder_with`` is set when another dataset earlier in the config
    points at the same directory: both then use one folder and the files are stored once.
    """

    id: str
    source_dir: str
    folder: str
    archive_dir: str
    file_count: int
    total_bytes: int
    image_count: int
    video_count: int
    caption_count: int
    files: tuple[IncludedFile, ...] = field(repr=False)
    excluded: tuple[ExcludedEntry, ...] = field(repr=False)
    shares_folder_with: str | None = None
    config_index: int = field(default=-1, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source_dir": self.source_dir,
            "folder": self.folder,
            "archive_dir": self.archive_dir,
            "files": self.file_count,
            "bytes": self.total_bytes,
            "images": self.image_count,
            "videos": self.video_count,
            "captions": self.caption_count,
            "excluded": len(self.excluded),
            "shares_folder_with": self.shares_folder_with,
        }


@dataclass(frozen=True)
class SkippedDataset:
    """A dataset that is not packaged (remote, embed cache, disabled) and is left as-is."""

    id: str
    type: str | None
    dataset_type: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "dataset_type": self.dataset_type,
                "reason": self.reason}


@dataclass(frozen=True)
class DataSummary:
    """Result of :func:`scan`.

    Totals count each file once even if two datasets share a directory.
    ``estimated_archive_bytes`` assumes nothing compresses (close for image data);
    ``min_archive_bytes`` is a strict lower bound (stored files + headers + deflated
    files at zlib's best ratio) and is what ``max_bytes`` is checked against before
    writing, so a dataset that would fit is never refused on the estimate alone.
    """

    datasets: tuple[DatasetSummary, ...]
    skipped: tuple[SkippedDataset, ...]
    total_files: int
    total_bytes: int
    dataset_count: int
    estimated_archive_bytes: int
    min_archive_bytes: int

    @property
    def excluded(self) -> tuple[ExcludedEntry, ...]:
        out: list[ExcludedEntry] = []
        for ds in self.datasets:
            if ds.shares_folder_with is None:
                out.extend(ds.excluded)
        return tuple(out)

    @property
    def estimate_is_exact(self) -> bool:
        return self.min_archive_bytes == self.estimated_archive_bytes

    def members(self) -> list[tuple[str, IncludedFile]]:
        """``(archive name, file)`` for every file in the archive, in archive order."""
        out = []
        for ds in self.datasets:
            if ds.shares_folder_with is not None:
                continue
            out.extend((f"{ds.archive_dir}/{f.path}", f) for f in ds.files)
        out.sort(key=lambda m: m[0])
        return out

    def archive_names(self) -> list[str]:
        """Sorted member names of the archive :func:`build_archive` would write."""
        return [name for name, _ in self.members()]

    def to_dict(self, max_excluded: int = MAX_EXCLUDED_IN_DICT) -> dict[str, Any]:
        """JSON-ready form; the excluded list is capped at ``max_excluded`` entries."""
        excluded = self.excluded
        return {
            "datasets": [ds.to_dict() for ds in self.datasets],
            "not_packaged": [s.to_dict() for s in self.skipped],
            "totals": {
                "datasets": self.dataset_count,
                "files": self.total_files,
                "bytes": self.total_bytes,
                "excluded": len(excluded),
                "estimated_archive_bytes": self.estimated_archive_bytes,
            },
            "excluded": [e.to_dict() for e in excluded[:max_excluded]],
            "excluded_more": max(0, len(excluded) - max_excluded),
        }


# ------------------------------------------------------------------------- config
@dataclass(frozen=True)
class _LocalDataset:
    index: int
    id: str
    configured_dir: str
    root: str  # realpath


def normalise_config(dataloader_config: Any) -> list[dict[str, Any]]:
    """Accept a list of dicts (or its JSON text) and return a deep copy as a list."""
    if isinstance(dataloader_config, (str, bytes)):
        try:
            dataloader_config = json.loads(dataloader_config)
        except ValueError as exc:
            raise InvalidDataloaderConfigError(f"dataloader_config is not valid JSON: {exc}") from exc
    if not isinstance(dataloader_config, (list, tuple)):
        raise InvalidDataloaderConfigError(
            "dataloader_config must be a list of dataset objects, "
            f"got {type(dataloader_config).__name__}"
        )
    out = []
    for i, entry in enumerate(dataloader_config):
        if not isinstance(entry, Mapping):
            raise InvalidDataloaderConfigError(
                f"dataloader_config entry #{i + 1} is not an object ({type(entry).__name__})"
            )
        out.append(copy.deepcopy(dict(entry)))
    return out


def _dataset_id(entry: Mapping[str, Any], index: int) -> str:
    ds_id = entry.get("id")
    return str(ds_id) if ds_id not in (None, "") else f"dataset-{index + 1}"


def _classify(config: list[dict[str, Any]], base_dir: str | os.PathLike | None
              ) -> tuple[list[_LocalDataset], list[SkippedDataset]]:
    base = Path(base_dir).expanduser() if base_dir is not None else Path.cwd()
    local: list[_LocalDataset] = []
    skipped: list[SkippedDataset] = []
    for i, entry in enumerate(config):
        ds_id = _dataset_id(entry, i)
        ds_type = entry.get("type")
        dataset_type = entry.get("dataset_type")
        if entry.get("disabled") is True:
            skipped.append(SkippedDataset(ds_id, ds_type, dataset_type, "disabled"))
            continue
        if ds_type not in LOCAL_TYPES:
            skipped.append(SkippedDataset(ds_id, ds_type, dataset_type,
                                          f"not a local dataset (type '{ds_type}')"))
            continue
        if dataset_type in CACHE_DATASET_TYPES:
            skipped.append(SkippedDataset(ds_id, ds_type, dataset_type,
                                          f"{dataset_type} cache"))
            continue
        raw = entry.get("instance_data_dir")
        if raw in (None, ""):
            raise InvalidDataloaderConfigError(
                f"Dataset '{ds_id}' is local but has no instance_data_dir", dataset_id=ds_id
            )
        if not isinstance(raw, str):
            raise InvalidDataloaderConfigError(
                f"Dataset '{ds_id}': instance_data_dir must be a string", dataset_id=ds_id
            )
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = base / path
        root = _check_root(ds_id, raw, str(path))
        local.append(_LocalDataset(i, ds_id, raw, root))
    return local, skipped


def _describe(raw: str, path: str) -> str:
    return f"'{raw}'" if os.path.normpath(raw) == os.path.normpath(path) else f"'{raw}' ({path})"


def _check_root(ds_id: str, raw: str, path: str) -> str:
    where = _describe(raw, path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"Dataset '{ds_id}': instance_data_dir {where} does not exist",
            dataset_id=ds_id, path=path) from None
    except NotADirectoryError:
        raise DatasetNotFoundError(
            f"Dataset '{ds_id}': instance_data_dir {where} does not exist "
            "(a parent is not a directory)", dataset_id=ds_id, path=path) from None
    except PermissionError:
        raise DatasetUnreadableError(
            f"Dataset '{ds_id}': instance_data_dir {where} is not readable (permission denied)",
            dataset_id=ds_id, path=path) from None
    except OSError as exc:
        raise DatasetUnreadableError(
            f"Dataset '{ds_id}': instance_data_dir {where} cannot be read ({exc.strerror})",
            dataset_id=ds_id, path=path) from None
    if not stat.S_ISDIR(st.st_mode):
        raise DatasetNotADirectoryError(
            f"Dataset '{ds_id}': instance_data_dir {where} is not a directory",
            dataset_id=ds_id, path=path)
    if not os.access(path, os.R_OK | os.X_OK):
        raise DatasetUnreadableError(
            f"Dataset '{ds_id}': instance_data_dir {where} is not readable (permission denied)",
            dataset_id=ds_id, path=path)
    return os.path.realpath(path)


# ------------------------------------------------------------------------- walker
def _inside(root: str, target: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def _special_kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _walk_dataset(ds_id: str, root: str) -> tuple[list[IncludedFile], list[ExcludedEntry]]:
    """Walk ``root`` (a realpath) and return (included files, excluded entries), both sorted.

    This is the single place that decides what gets packaged.
    """
    files: list[IncludedFile] = []
    excluded: list[ExcludedEntry] = []

    def exclude(rel: str, reason: str, is_dir: bool) -> None:
        excluded.append(ExcludedEntry(ds_id, rel + "/" if is_dir else rel, reason, is_dir))

    root_st = os.stat(root)
    seen_dirs = {(root_st.st_dev, root_st.st_ino)}
    stack: list[tuple[str, str]] = [("", root)]  # (relative dir, real path on disk)
    while stack:
        rel_dir, dir_path = stack.pop()
        try:
            with os.scandir(dir_path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if not rel_dir:
                raise DatasetUnreadableError(
                    f"Dataset '{ds_id}': instance_data_dir '{root}' cannot be listed "
                    f"({exc.strerror})", dataset_id=ds_id, path=root) from None
            exclude(rel_dir, f"unreadable directory ({exc.strerror})", True)
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                lst = entry.stat(follow_symlinks=False)
            except OSError as exc:
                exclude(rel, f"cannot stat ({exc.strerror})", False)
                continue
            is_link = stat.S_ISLNK(lst.st_mode)
            looks_dir = stat.S_ISDIR(lst.st_mode)
            reason = exclusion_reason(entry.name, is_dir=looks_dir)
            if reason:
                exclude(rel, reason, looks_dir)
                continue
            st = lst
            if is_link:
                target = os.path.realpath(entry.path)
                if not _inside(root, target):
                    exclude(rel, "symlink leaves dataset root", False)
                    continue
                try:
                    st = os.stat(entry.path)
                except FileNotFoundError:
                    exclude(rel, "broken symlink", False)
                    continue
                except OSError as exc:
                    exclude(rel, "symlink loop" if exc.errno == errno.ELOOP else
                            f"unreadable symlink ({exc.strerror})", False)
                    continue
                target_rel = os.path.relpath(target, root)
                target_parts = [] if target_rel == "." else target_rel.split(os.sep)
                inner = _path_exclusion_reason(target_parts, stat.S_ISDIR(st.st_mode))
                if inner:
                    exclude(rel, f"symlink to excluded path ({inner})", False)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    here = os.path.realpath(dir_path)
                    if _inside(target, here):
                        exclude(rel, "symlink loop", False)
                    else:
                        exclude(rel, "symlinked directory (contents included via real path)",
                                False)
                    continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    exclude(rel, "directory loop", True)
                    continue
                seen_dirs.add(key)
                stack.append((rel, entry.path))
                continue
            if not stat.S_ISREG(st.st_mode):
                exclude(rel, f"not a regular file ({_special_kind(st.st_mode)})", False)
                continue
            if not os.access(entry.path, os.R_OK):
                exclude(rel, "unreadable file (permission denied)", False)
                continue
            files.append(IncludedFile(rel, st.st_size, entry.path, st.st_mtime_ns,
                                      st.st_dev, st.st_ino))
    files.sort(key=lambda f: f.path)
    excluded.sort(key=lambda e: e.path)
    return files, excluded


# ----------------------------------------------------------------------- folders
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_folder_name(dataset_id: str) -> str:
    """Dataset id -> a safe, non-hidden folder name (``[A-Za-z0-9._-]``, at most 80 chars)."""
    name = _UNSAFE.sub("_", dataset_id).strip("._-")[:80].strip("._-")
    return name or "dataset"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate.lower() in taken:  # case-insensitive: archives get unpacked on macOS too
        candidate = f"{name}-{n}"
        n += 1
    taken.add(candidate.lower())
    return candidate


# -------------------------------------------------------------------------- scan
def _estimate(names_and_files: list[tuple[str, IncludedFile]]) -> tuple[int, int]:
    """(upper, lower) estimate of the ZIP size for these members.

    ``lower`` is a strict lower bound: exact header sizes without optional zip64 fields
    that may be omitted, stored files at their size, deflated files at zlib's best ratio.
    ``upper`` assumes deflate gains nothing (small per-block overhead) plus all zip64 fields.
    """
    upper = lower = _END_RECORD
    for name, f in names_and_files:
        n = len(name.encode("utf-8"))
        headers = _LOCAL_HEADER + _CENTRAL_HEADER + 2 * n
        zip64_local = _ZIP64_LOCAL_EXTRA if f.size * 1.05 > _ZIP64_LIMIT else 0
        lower += headers + zip64_local
        upper += headers + zip64_local
        if zip64_local or upper > _ZIP64_LIMIT:
            upper += _ZIP64_CENTRAL_EXTRA
        if is_stored(name):
            upper += f.size
            lower += f.size
        else:
            upper += f.size + f.size // 1000 + 16
            lower += f.size // _DEFLATE_MAX_RATIO
    if len(names_and_files) >= 0xFFFF or upper > _ZIP64_LIMIT:
        upper += _ZIP64_END_RECORDS
    return upper, lower


def scan(dataloader_config: Any, base_dir: str | os.PathLike | None = None, *,
         progress: ProgressCallback | None = None) -> DataSummary:
    """Scan every local dataset in ``dataloader_config`` and return a :class:`DataSummary`.

    Relative ``instance_data_dir`` values resolve against ``base_dir`` (default: the
    current directory); ``~`` is expanded. ``progress("scan", datasets_done, datasets_total)``
    is called after each dataset.  Raises a :class:`PackagingError` subclass for a
    missing / non-directory / unreadable ``instance_data_dir`` or an empty dataset.
    """
    config = normalise_config(dataloader_config)
    local, skipped = _classify(config, base_dir)
    datasets: list[DatasetSummary] = []
    taken: set[str] = set()
    by_root: dict[str, DatasetSummary] = {}
    for n, ds in enumerate(local, 1):
        shared = by_root.get(ds.root)
        if shared is not None:
            datasets.append(DatasetSummary(
                ds.id, ds.root, shared.folder, shared.archive_dir, shared.file_count,
                shared.total_bytes, shared.image_count, shared.video_count,
                shared.caption_count, shared.files, shared.excluded,
                shares_folder_with=shared.id, config_index=ds.index))
        else:
            files, excluded = _walk_dataset(ds.id, ds.root)
            if not files:
                detail = ""
                if excluded:
                    shown = ", ".join(f"{e.path} ({e.reason})" for e in excluded[:3])
                    more = f" and {len(excluded) - 3} more" if len(excluded) > 3 else ""
                    detail = f"; all {len(excluded)} entries were excluded: {shown}{more}"
                raise EmptyDatasetError(
                    f"Dataset '{ds.id}': instance_data_dir {_describe(ds.configured_dir, ds.root)}"
                    f" contains no files to upload{detail}", dataset_id=ds.id, path=ds.root)
            folder = _unique(sanitize_folder_name(ds.id), taken)
            kinds = [file_kind(f.path) for f in files]
            summary = DatasetSummary(
                id=ds.id, source_dir=ds.root, folder=folder,
                archive_dir=f"{ARCHIVE_ROOT}/{folder}",
                file_count=len(files), total_bytes=sum(f.size for f in files),
                image_count=kinds.count("image"), video_count=kinds.count("video"),
                caption_count=kinds.count("caption"),
                files=tuple(files), excluded=tuple(excluded), config_index=ds.index)
            by_root[ds.root] = summary
            datasets.append(summary)
        if progress is not None:
            progress("scan", n, len(local))
    unique = [d for d in datasets if d.shares_folder_with is None]
    members = [(f"{d.archive_dir}/{f.path}", f) for d in unique for f in d.files]
    upper, lower = _estimate(members)
    return DataSummary(
        datasets=tuple(datasets), skipped=tuple(skipped),
        total_files=sum(d.file_count for d in unique),
        total_bytes=sum(d.total_bytes for d in unique),
        dataset_count=len(datasets),
        estimated_archive_bytes=upper, min_archive_bytes=lower,
    )


def rewrite_config(dataloader_config: Any, summary: DataSummary) -> list[dict[str, Any]]:
    """Copy of the config with each packaged dataset's ``instance_data_dir`` set to its
    folder inside the archive (``datasets/<folder>``, relative to the extraction root).
    Every other key, and every non-packaged dataset, is left untouched."""
    config = normalise_config(dataloader_config)
    for ds in summary.datasets:
        if not (0 <= ds.config_index < len(config)
                and _dataset_id(config[ds.config_index], ds.config_index) == ds.id):
            raise PackagingError("dataloader_config does not match the scan summary")
        config[ds.config_index]["instance_data_dir"] = ds.archive_dir
    return config


def open_included(f: IncludedFile):
    """Open an included file for reading (binary), checking it is still the file that was
    scanned: a regular file with the same device/inode.  Never blocks on a fifo that
    replaced the file since the scan.  Raises :class:`DatasetChangedError` /
    :class:`DatasetUnreadableError`."""
    try:
        fd = os.open(f.source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise DatasetChangedError(f"{f.source} disappeared after the scan; scan again",
                                  path=f.source) from None
    except OSError as exc:
        raise DatasetUnreadableError(f"Cannot read {f.source}: {exc.strerror}",
                                     path=f.source) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (f.inode and (st.st_dev, st.st_ino) != (f.device, f.inode)):
            raise DatasetChangedError(f"{f.source} was replaced after the scan; scan again",
                                      path=f.source)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


# ------------------------------------------------------------------- fingerprint
_CHUNK = 1024 * 1024


def dataset_fingerprint(dataloader_config: Any, base_dir: str | os.PathLike | None = None, *,
                        content: bool = True) -> str:
    """sha256 hex digest identifying the files that would be packaged.

    With ``content=True`` (default) it hashes, for every archive member in order, the
    member name, the size and the sha256 of the file's bytes (streamed in 1 MiB chunks):
    correct even if a file is rewritten with the same size and mtime, at the cost of
    reading every byte once.  ``content=False`` hashes (member name, size, mtime_ns)
    only — instant, but a touch changes it and a same-size edit that preserves mtime
    does not.  Independent of ZIP details (compression level, zlib version), unlike
    :attr:`Archive.sha256`.
    """
    summary = scan(dataloader_config, base_dir)
    outer = hashlib.sha256(b"stcloud-dataset-fingerprint-v1\0" +
                           (b"content" if content else b"stat") + b"\0")
    for name, f in summary.members():
        outer.update(name.encode("utf-8") + b"\0" + str(f.size).encode() + b"\0")
        if content:
            inner = hashlib.sha256()
            with open_included(f) as fh:
                while chunk := fh.read(_CHUNK):
                    inner.update(chunk)
            outer.update(inner.digest())
        else:
            outer.update(str(f.mtime_ns).encode() + b"\0")
    return outer.hexdigest()


__all__ = [
    "ARCHIVE_ROOT", "DataSummary", "DatasetSummary", "ExcludedEntry", "IncludedFile",
    "PackagingError", "SkippedDataset", "dataset_fingerprint", "exclusion_reason",
    "file_kind", "is_stored", "normalise_config", "open_included", "rewrite_config", "sanitize_folder_name",
    "scan",
]
