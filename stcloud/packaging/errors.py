"""Exceptions raised by :mod:`stcloud.packaging`.

Every error is a :class:`PackagingError`; the message is meant to be shown to
the user as-is (it names the dataset id and the path involved).
"""
from __future__ import annotations

MiB = 1024 * 1024


class PackagingError(Exception):
    """Base class. ``dataset_id`` / ``path`` are set when one dataset is to blame."""

    def __init__(self, message: str, *, dataset_id: str | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.dataset_id = dataset_id
        self.path = path

    def __str__(self) -> str:  # keep str() == message even if args get mangled
        return self.message


class InvalidDataloaderConfigError(PackagingError):
    """The dataloader config is not a list of dataset dicts, or a local dataset lacks a field."""


class DatasetNotFoundError(PackagingError):
    """``instance_data_dir`` does not exist."""


class DatasetNotADirectoryError(PackagingError):
    """``instance_data_dir`` exists but is not a directory."""


class DatasetUnreadableError(PackagingError):
    """``instance_data_dir`` (or a file in it, while packaging) cannot be read."""


class EmptyDatasetError(PackagingError):
    """A local dataset has no file left to package after the exclusion rules."""


class DatasetChangedError(PackagingError):
    """A file changed (size, identity, type) between the scan and packaging it."""


class ArchiveTooLargeError(PackagingError):
    """The archive is (or would be) larger than ``max_bytes``.

    ``size`` is the size in bytes (a lower-bound estimate when ``estimated`` is true,
    in which case nothing was written), ``max_bytes`` the limit.
    """

    def __init__(self, size: int, max_bytes: int, *, estimated: bool, exact: bool = True,
                 limit_name: str = "the upload target"):
        self.size = size
        self.max_bytes = max_bytes
        self.estimated = estimated
        qualifier = "" if exact else "at least "
        message = (
            f"Dataset archive is {qualifier}{size / MiB:.1f} MiB; "
            f"{limit_name} accepts at most {_fmt_mib(max_bytes)} MiB"
        )
        super().__init__(message)


def _fmt_mib(n: int) -> str:
    value = n / MiB
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
