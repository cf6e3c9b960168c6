"""Where local datasets may come from: the dataset roots (``STCLOUD_DATASET_ROOTS``).

Pure (no Flask, no database)::

    allowed = parse_roots("/data/sets:/srv/more", home)   # the configured roots, resolved
    config = check_inside(dataloader_config, allowed)     # raises DatasetOutsideRootsError
    require_images(summary)                                # raises NoImagesError

Rules:

- ``STCLOUD_DATASET_ROOTS`` lists directories separated by ``:``; unset or empty means
  ``STCLOUD_HOME/datasets`` plus the bundled sample (``STCLOUD_HOME/sample``).
- A relative ``instance_data_dir`` is relative to the **first** root, wherever the request
  comes from (dashboard, API, CLI: the CLI sends the path as written).
- The path must resolve (``~`` expanded, symlinks and ``..`` followed) to a root or a
  directory below one; anything else is refused before anything is scanned or written.
- A local dataset with no image and no video is refused (the trainer would fail on it).

Self-hosted workers read their own local paths; these rules are the server's.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import PackagingError
from .scan import CACHE_DATASET_TYPES, LOCAL_TYPES

SEPARATOR = ":"


class DatasetOutsideRootsError(PackagingError):
    """A local ``instance_data_dir`` resolves outside every dataset root."""


class NoImagesError(PackagingError):
    """A local dataset holds no image (nor video) to train on."""


def default_roots(home: str | os.PathLike) -> list[str]:
    return [str(Path(home) / "datasets"), str(Path(home) / "sample")]


def parse_roots(value: str | None, home: str | os.PathLike) -> list[str]:
    """The roots as resolved absolute paths, in order (duplicates and blanks dropped)."""
    raw = [p.strip() for p in (value or "").split(SEPARATOR) if p.strip()] or default_roots(home)
    out: list[str] = []
    for p in raw:
        path = Path(p).expanduser()
        if not path.is_absolute():
            path = Path(home) / path
        real = os.path.realpath(path)
        if real not in out:
            out.append(real)
    return out


def base_dir(roots: list[str]) -> str:
    """What relative ``instance_data_dir`` values are relative to: the first root."""
    return roots[0]


def _inside(root: str, target: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def _local_entries(dataloader_config: Any):
    """(index, id, instance_data_dir) of the entries the packager would read from disk."""
    if not isinstance(dataloader_config, (list, tuple)):
        return
    for i, entry in enumerate(dataloader_config):
        if not isinstance(entry, Mapping) or entry.get("disabled") is True:
            continue
        if entry.get("type") not in LOCAL_TYPES or entry.get("dataset_type") in CACHE_DATASET_TYPES:
            continue
        raw = entry.get("instance_data_dir")
        if isinstance(raw, str) and raw:
            ds_id = entry.get("id")
            yield i, (str(ds_id) if ds_id not in (None, "") else f"dataset-{i + 1}"), raw


def resolve(raw: str, roots: list[str]) -> str:
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = Path(base_dir(roots)) / path
    return os.path.realpath(path)


def check_inside(dataloader_config: Any, roots: list[str]) -> None:
    """Raise ``DatasetOutsideRootsError`` for the first local dataset outside every root."""
    for _i, ds_id, raw in _local_entries(dataloader_config):
        real = resolve(raw, roots)
        if not any(_inside(root, real) for root in roots):
            raise DatasetOutsideRootsError(
                f"Dataset '{ds_id}': instance_data_dir '{raw}' resolves to {real}, which is outside the "
                f"dataset roots ({SEPARATOR.join(roots)}). Move or link the data under a root, or add its "
                f"directory to STCLOUD_DATASET_ROOTS.", dataset_id=ds_id, path=real)


def require_images(summary):
    """``summary``, or ``NoImagesError`` for the first packaged dataset without an image or a video."""
    for ds in summary.datasets:
        if ds.image_count == 0 and ds.video_count == 0:
            raise NoImagesError(
                f"Dataset '{ds.id}' has no images: {ds.file_count} file(s) in {ds.source_dir}, none of them an "
                f"image or a video. Nothing was submitted.", dataset_id=ds.id, path=ds.source_dir)
    return summary
