"""Package local SimpleTuner datasets into a deterministic ZIP for upload.

Pure Python (no Flask, no database)::

    summary = scan(dataloader_config, base_dir)          # what would be uploaded
    archive = build_archive(dataloader_config, dest_dir, base_dir,
                            max_bytes=100 * MiB, limit_name="Replicate")
    archive.path, archive.sha256, archive.dataloader_config  # rewritten config
    dataset_fingerprint(dataloader_config, base_dir)     # "has the data changed?"
"""
from .archive import Archive, build_archive, sha256_file
from .errors import (
    ArchiveTooLargeError,
    DatasetChangedError,
    DatasetNotADirectoryError,
    DatasetNotFoundError,
    DatasetUnreadableError,
    EmptyDatasetError,
    InvalidDataloaderConfigError,
    MiB,
    PackagingError,
)
from .scan import (
    ARCHIVE_ROOT,
    DatasetSummary,
    DataSummary,
    ExcludedEntry,
    IncludedFile,
    SkippedDataset,
    dataset_fingerprint,
    exclusion_reason,
    rewrite_config,
    sanitize_folder_name,
    scan,
)

__all__ = [
    "ARCHIVE_ROOT",
    "Archive",
    "ArchiveTooLargeError",
    "DataSummary",
    "DatasetChangedError",
    "DatasetNotADirectoryError",
    "DatasetNotFoundError",
    "DatasetSummary",
    "DatasetUnreadableError",
    "EmptyDatasetError",
    "ExcludedEntry",
    "IncludedFile",
    "InvalidDataloaderConfigError",
    "MiB",
    "PackagingError",
    "SkippedDataset",
    "build_archive",
    "dataset_fingerprint",
    "exclusion_reason",
    "rewrite_config",
    "sanitize_folder_name",
    "scan",
    "sha256_file",
]
